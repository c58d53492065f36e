export interface BackoffPolicy {
  baseSeconds: number;
  capSeconds: number;
}

/** 1 s doubling up to 5 minutes: a homeserver down for hours is retried every few minutes. */
export const DEFAULT_BACKOFF: BackoffPolicy = { baseSeconds: 1, capSeconds: 300 };

/**
 * Receives of an outbound message before SQS's redrive sets it aside: at the backoff's cap,
 * days of retries. The outbox dead-letters what can never succeed long before.
 */
export const OUTBOUND_MAX_RECEIVE_COUNT = 1000;

/**
 * Exponential backoff with full jitter (a random wait up to base·2^attempt, capped), in whole
 * seconds since that is what SQS visibility takes, and at least one.
 */
export function backoffSeconds(
  attempt: number,
  policy: BackoffPolicy,
  random = Math.random,
): number {
  const ceiling = Math.min(policy.capSeconds, policy.baseSeconds * 2 ** Math.min(attempt, 30));
  return Math.max(1, Math.ceil(random() * ceiling));
}

/**
 * How many retries (waits of `backoffSeconds` for attempts 0, 1, …) are expected to fill
 * `seconds`. `backoffSeconds` draws a whole number from 1 to its ceiling: on average, half of
 * one more than the ceiling.
 */
export function retriesCovering(seconds: number, policy: BackoffPolicy): number {
  let retries = 0;
  for (let waited = 0; waited < seconds; retries++) {
    const ceiling = Math.min(policy.capSeconds, policy.baseSeconds * 2 ** Math.min(retries, 30));
    waited += (Math.max(1, Math.ceil(ceiling)) + 1) / 2;
  }
  return retries;
}

/**
 * How long a 429 asks us to wait, in whole seconds rounded up (never sooner than asked): the
 * `Retry-After` header first, then the body's deprecated `retry_after_ms`.
 */
export function rateLimitSeconds(
  retryAfterSeconds: number | undefined,
  body: unknown,
): number | undefined {
  if (retryAfterSeconds !== undefined) return Math.max(1, Math.ceil(retryAfterSeconds));
  const ms = (body as { retry_after_ms?: unknown } | undefined)?.retry_after_ms;
  return typeof ms === "number" && ms >= 0 ? Math.max(1, Math.ceil(ms / 1000)) : undefined;
}
