import { MAX_CALLS_PER_ACTION } from "../matrix/outbox.ts";

/**
 * The functions' time limits and the waits inside them, defined once for the stack, the Lambda
 * entries and local mode.
 */

/** How long the outbox waits for one answer of the homeserver. */
export const HOMESERVER_TIMEOUT_MS = 20_000;
/** How long a user/alias query waits for one answer of the homeserver. */
export const QUERY_HOMESERVER_TIMEOUT_MS = 5_000;

/**
 * The longest one action may take: each of its calls waiting the full timeout, and the requests
 * to DynamoDB and SQS around them. No message is started with less time left than this.
 */
export const actionBudgetMs = (homeserverTimeoutMs: number) =>
  homeserverTimeoutMs * MAX_CALLS_PER_ACTION + 5_000;

/**
 * How long the outbox function may run: two actions at their worst, so that every batch makes
 * progress, and an ordinary one (calls answered in milliseconds) finishes whole.
 */
export const OUTBOX_TIMEOUT_MS = 2 * actionBudgetMs(HOMESERVER_TIMEOUT_MS);

/** How long the events function may run (the stack's timeout, and the claims' lease). */
export const EVENTS_TIMEOUT_MS = 30_000;
/**
 * No message, and no item of one, is started with less time left than this: room for a handler that makes an
 * immediate call or two (`CALL_BUDGET_MS` each, at most); one that runs longer meets the
 * function's timeout, and is retried.
 */
export const EVENTS_RECORD_BUDGET_MS = 10_000;

/** Well under API Gateway's 30 s, and the homeserver's own timeout. */
export const QUERY_BUDGET_MS = 10_000;

/** A queue's visibility timeout in AWS: six times its consumer's timeout, as AWS advises. */
export const visibilityTimeoutSeconds = (consumerTimeoutMs: number) =>
  (consumerTimeoutMs / 1000) * 6;

/**
 * The lease on an item being processed: the events function's timeout, and in any case run out
 * (by a second) before the message becomes visible again for another consumer.
 */
export const eventsLeaseMs = (visibilityTimeoutSeconds: number, timeoutMs = EVENTS_TIMEOUT_MS) =>
  Math.min(timeoutMs, Math.max(1000, visibilityTimeoutSeconds * 1000 - 1000));
