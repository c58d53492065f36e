import { type OutboxDeps, performAction } from "../matrix/outbox.ts";
import { isObject, type OutboundAction } from "../matrix/request.ts";
import type { FailureReason, OutboxOutcome } from "../queue/outbound.ts";
import {
  type DeliveryDeps,
  performDelivery,
  recordDeliveryOutcome,
  targetOf,
} from "../remote/delivery.ts";
import type { OutboundDelivery } from "../remote/outbound-delivery.ts";
import { OUTBOUND_MAX_RECEIVE_COUNT } from "../shared/backoff.ts";

/**
 * The outbox's decision on each message of the outbound queue: a call on the homeserver
 * (`matrix/outbox.ts`'s `performAction`) or a delivery to another service
 * (`remote/delivery.ts`'s `performDelivery`), performed, logged, and given up on at the last
 * receive; and what the consumer (`handlers/outbox.ts`) then does with the message.
 */

/** What the outbound queue holds. */
export type QueuedAction = OutboundAction | OutboundDelivery;

/**
 * Whether a parsed value has a queued action's shape: a call on the homeserver, or a delivery to
 * another service (`actions.deliver`). What a dead letter needs to be replayable.
 */
export const isQueuedAction = (value: unknown): value is QueuedAction =>
  isObject(value) &&
  typeof value.id === "string" &&
  typeof value.kind === "string" &&
  (value.kind === "delivery"
    ? isObject(value.delivery)
    : typeof value.userId === "string" && isObject(value.request));

export const isDelivery = (action: QueuedAction): action is OutboundDelivery =>
  action.kind === "delivery";

/** What the outbox needs: the homeserver's actions' and the deliveries'. */
export type OutboundDeps = OutboxDeps & DeliveryDeps;

/** The metric each outcome counts. */
export const OUTCOME_METRICS = {
  done: "OutboundCallsDone",
  retry: "OutboundCallsRetried",
  dead: "OutboundCallsDeadLettered",
} as const satisfies Record<OutboxOutcome["kind"], string>;

/** What the dead-letter queue keeps of an action given up on: enough to replay or explain it. */
export interface DeadLetter {
  action: QueuedAction;
  reason: FailureReason;
  /** The tries made, this last one included. */
  attempts: number;
  /** ISO 8601. */
  failedAt: string;
}

/** What the dead-letter queue keeps of a message that is no action at all: its body, as received. */
export interface UnreadableDeadLetter {
  body: string;
  reason: FailureReason;
  attempts: number;
  failedAt: string;
}

/**
 * The outbox's log line for each outcome: with the action's ID, kind, user, room and attempt, they
 * are its recent traffic (the operator console reads them back).
 */
export const OUTCOME_LOG_MESSAGES = {
  done: "outbound call done",
  retry: "outbound call to retry",
  dead: "outbound call failed for good: dead-lettered",
} as const satisfies Record<OutboxOutcome["kind"], string>;

/**
 * What the outbox's consumer does with a received action: nothing more (`done`), make it visible
 * again after `delaySeconds` (`retry`), or move `deadLetter` to the dead-letter queue (`dead`);
 * and in each case count `metric`.
 */
export type OutboxDecision =
  | { kind: "done"; metric: (typeof OUTCOME_METRICS)["done"] }
  | {
      kind: "retry";
      delaySeconds: number;
      reason: string;
      metric: (typeof OUTCOME_METRICS)["retry"];
    }
  | {
      kind: "dead";
      deadLetter: DeadLetter | UnreadableDeadLetter;
      metric: (typeof OUTCOME_METRICS)["dead"];
    };

/**
 * Decides on a received message's body (`decideOutboundAction`), whatever it holds. A body that is
 * not a JSON object used to throw before any decision, and so did any unexpected failure: such a
 * message came back until SQS's redrive set it aside at the receive limit, with no reason and no
 * ERROR line. Now the first is dead-lettered at once, and the second at its last receive before
 * the redrive, each with its reason and one ERROR line.
 */
export async function decideOutboundMessage(
  body: string,
  attempt: number,
  deps: OutboundDeps,
  queuedAt?: number,
): Promise<OutboxDecision> {
  const dead = (reason: FailureReason, about: Record<string, unknown>): OutboxDecision => {
    deps.log.error(OUTCOME_LOG_MESSAGES.dead, { ...about, attempt, reason });
    const failure = { reason, attempts: attempt + 1, failedAt: new Date().toISOString() };
    return {
      kind: "dead",
      // An action keeps the shape the operator console replays; only what is none keeps its body.
      deadLetter: isQueuedAction(action) ? { action, ...failure } : { body, ...failure },
      metric: OUTCOME_METRICS.dead,
    };
  };
  let action: unknown;
  try {
    action = JSON.parse(body);
  } catch {
    action = undefined;
  }
  if (!isObject(action)) {
    return dead({ error: "refused, not sent: the message is not a JSON object" }, {});
  }
  try {
    return await decideOutboundAction(action as unknown as QueuedAction, attempt, deps, queuedAt);
  } catch (error) {
    if (attempt + 1 < OUTBOUND_MAX_RECEIVE_COUNT) throw error;
    const { id, kind } = action;
    return dead(
      { error: `gave up after ${attempt + 1} attempts: ${(error as Error).message}` },
      { actionId: id, kind },
    );
  }
}

/**
 * Performs the `attempt`-th try (0 the first) of an action as `performAction` does (a delivery
 * as `performDelivery`; `queuedAt`, epoch ms, bounds its `retryForMs`), logs the outcome, and
 * says what to do with the message.
 */
export async function decideOutboundAction(
  action: QueuedAction,
  attempt: number,
  deps: OutboundDeps,
  queuedAt?: number,
): Promise<OutboxDecision> {
  const delivery = isDelivery(action);
  // Dispatched: a delivery goes to its remote service, any other action to the homeserver.
  let outcome = delivery
    ? await performDelivery(action, attempt, deps, queuedAt)
    : await performAction(action, attempt, deps);
  // Any retry at the last receive is given up here, with its reason and an ERROR line: SQS's
  // redrive would set it aside with neither.
  if (outcome.kind === "retry" && attempt + 1 >= OUTBOUND_MAX_RECEIVE_COUNT) {
    outcome = {
      kind: "dead",
      reason: {
        ...(outcome.status !== undefined && { status: outcome.status }),
        error: `gave up after ${attempt + 1} attempts: ${outcome.reason}`,
      },
    };
  }
  if (delivery && action.outcomeKey !== undefined) {
    await recordDeliveryOutcome(action, action.outcomeKey, outcome, attempt, deps);
  }
  const about = {
    actionId: action.id,
    kind: action.kind,
    ...(delivery ? { target: targetOf(action) } : { userId: action.userId }),
    roomId: action.roomId,
  };
  switch (outcome.kind) {
    case "done":
      deps.log.info(OUTCOME_LOG_MESSAGES.done, { ...about, attempt, status: outcome.status });
      return { kind: "done", metric: OUTCOME_METRICS.done };
    case "retry": {
      const { delaySeconds, reason, status } = outcome;
      // Named, not spread: the outcome's `kind` ("retry") would replace the action's, which
      // the operator console's traffic view reads back from this line.
      deps.log.warn(OUTCOME_LOG_MESSAGES.retry, {
        ...about,
        attempt,
        delaySeconds,
        reason,
        ...(status !== undefined && { status }),
      });
      return { kind: "retry", delaySeconds, reason, metric: OUTCOME_METRICS.retry };
    }
    case "dead":
      deps.log.error(OUTCOME_LOG_MESSAGES.dead, { ...about, attempt, reason: outcome.reason });
      return {
        kind: "dead",
        deadLetter: {
          action,
          reason: outcome.reason,
          attempts: attempt + 1,
          failedAt: new Date().toISOString(),
        },
        metric: OUTCOME_METRICS.dead,
      };
  }
}
