import type { Application, ApplicationContext } from "../app/application.ts";
import type { ClaimStore } from "../store/store.ts";
import type { InboundItem, InboundMessage } from "./inbound.ts";
import type { Log } from "./log.ts";

export interface ProcessInboundDeps {
  claims: ClaimStore;
  application: Application;
  log: Log;
  /** How long a claim keeps others off; shorter than the queue's visibility timeout. */
  leaseMs: number;
}

export interface ProcessOutcome {
  handled: number;
  duplicates: number;
}

const claimKey = (item: InboundItem) =>
  item.kind === "event" ? `EVENT#${item.id}` : `ITEM#${item.id}`;

function deliver(item: InboundItem, application: Application, context: ApplicationContext) {
  switch (item.kind) {
    case "event":
      return application.onEvent?.(item.event, context);
    case "ephemeral":
      return application.onEphemeral?.(item.event, context);
    case "to_device":
      return application.onToDevice?.(item.message, context);
    case "devices":
      return application.onDeviceData?.(item.devices, context);
  }
}

export class ItemBusyError extends Error {
  override name = "ItemBusyError";
}

/**
 * Hands each item of a queue message to the application exactly once, in order. An item is
 * claimed with a lease first; one already done is skipped. If the application throws, the
 * claim is released and the error propagates, so the queue redelivers the message and the
 * items before the failed one are skipped as done.
 */
export async function processInboundMessage(
  message: InboundMessage,
  owner: string,
  { claims, application, log, leaseMs }: ProcessInboundDeps,
): Promise<ProcessOutcome> {
  const outcome: ProcessOutcome = { handled: 0, duplicates: 0 };
  for (const item of message.items) {
    const key = claimKey(item);
    const claim = await claims.claim(key, owner, leaseMs);
    if (claim === "done") {
      outcome.duplicates++;
      log.debug("duplicate skipped", { txnId: message.txnId, kind: item.kind, id: item.id });
      continue;
    }
    if (claim === "busy") {
      throw new ItemBusyError(`${item.kind} ${item.id} is being processed elsewhere`);
    }
    try {
      await deliver(item, application, { txnId: message.txnId, log });
    } catch (error) {
      await claims.release(key, owner).catch((releaseError: unknown) =>
        log.warn("releasing a claim failed; it expires with its lease", {
          key,
          error: releaseError,
        }),
      );
      throw error;
    }
    await claims.complete(key);
    outcome.handled++;
  }
  return outcome;
}
