import type { Log } from "../../shared/log.ts";
import { claimKeys } from "../../store/claim-keys.ts";
import type { ClaimStore } from "../../store/store.ts";
import type { Application, ApplicationContext, ServiceContext } from "../application.ts";
import type { InboundItem, InboundMessage } from "./inbound.ts";

export interface ProcessInboundDeps {
  claims: ClaimStore;
  application: Application;
  log: Log;
  /** How long a claim keeps others off; shorter than the queue's visibility timeout. */
  leaseMs: number;
  /** The handler's context for the item with this claim key. */
  contextFor(origin: string): ServiceContext;
}

export interface ProcessOutcome {
  handled: number;
  duplicates: number;
}

export const claimKey = (item: InboundItem) =>
  item.kind === "event" ? claimKeys.event(item.id) : claimKeys.item(item.id);

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
 * Hands each item of a queue message to the application exactly once, in order. The items are
 * claimed together, each with a lease; those already done are skipped. Each success is marked
 * done at once (without waiting for it before the next item). If the application throws, the
 * claims not yet done are released and the error propagates, so the queue redelivers the
 * message and the items before the failed one are skipped as done.
 */
export async function processInboundMessage(
  message: InboundMessage,
  owner: string,
  { claims, application, log, leaseMs, contextFor }: ProcessInboundDeps,
): Promise<ProcessOutcome> {
  const keys = [...new Set(message.items.map(claimKey))];
  const claimed = await claims.claim(keys, owner, leaseMs);
  const outcome: ProcessOutcome = { handled: 0, duplicates: 0 };
  const completions: Promise<void>[] = [];
  // Keys this run delivered: a repeat within the message is a duplicate too.
  const delivered = new Set<string>();
  try {
    for (const item of message.items) {
      const key = claimKey(item);
      if (claimed.get(key) === "done" || delivered.has(key)) {
        outcome.duplicates++;
        log.debug("duplicate skipped", { txnId: message.txnId, kind: item.kind, id: item.id });
        continue;
      }
      if (claimed.get(key) === "busy") {
        throw new ItemBusyError(`${item.kind} ${item.id} is being processed elsewhere`);
      }
      await deliver(item, application, { ...contextFor(key), txnId: message.txnId });
      delivered.add(key);
      const completion = claims.complete(key);
      // Awaited below; observed now so that an early failure is not an unhandled rejection.
      completion.catch(() => undefined);
      completions.push(completion);
      outcome.handled++;
    }
  } catch (error) {
    const unfinished = keys.filter((key) => claimed.get(key) === "claimed" && !delivered.has(key));
    await Promise.all(
      unfinished.map((key) =>
        claims.release(key, owner).catch((releaseError: unknown) =>
          log.warn("releasing a claim failed; it expires with its lease", {
            key,
            error: releaseError,
          }),
        ),
      ),
    );
    await Promise.allSettled(completions);
    throw error;
  }
  await Promise.all(completions);
  return outcome;
}
