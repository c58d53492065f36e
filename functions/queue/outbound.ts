import { type BackoffPolicy, backoffSeconds } from "../shared/backoff.ts";

/**
 * What every message of the outbound queue shares, whether a call on the homeserver
 * (`matrix/outbox.ts`) or a delivery to another service (`remote/delivery.ts`): the checks of its
 * ID and server-error limit, its outcomes, and what a server error does to it.
 */

/** SQS's limit on a deduplication ID, which the action's ID is. */
export const MAX_ID_LENGTH = 128;

/** A value for a refusal's message: its start, as a JSON string. */
export const quoted = (value: unknown) => JSON.stringify(String(value).slice(0, 64));

/** `id` and `maxServerErrors` as every queued action has them. */
export function queuedProblem(id: unknown, maxServerErrors: unknown): string | undefined {
  if (typeof id !== "string" || id.length === 0 || id.length > MAX_ID_LENGTH) {
    return `the action's id is not a string of 1 to ${MAX_ID_LENGTH} characters`;
  }
  if (
    maxServerErrors !== undefined &&
    !(Number.isSafeInteger(maxServerErrors) && (maxServerErrors as number) > 0)
  ) {
    return "maxServerErrors is not a positive integer";
  }
  return undefined;
}

export interface FailureReason {
  status?: number;
  errcode?: string;
  error: string;
}

/** `retry`: make the message visible again after `delaySeconds`; `dead`: give up, with why. */
export type OutboxOutcome =
  | { kind: "done"; status?: number }
  | { kind: "retry"; delaySeconds: number; reason: string; status?: number }
  | { kind: "dead"; reason: FailureReason };

/**
 * What counts a queued action's server errors across its attempts (the store implements it:
 * `OUTBOX#<action ID>` in DynamoDB).
 */
export interface ServerErrorCounter {
  /** Counts one more server error for the action; returns its count, this one included. */
  countServerError(actionId: string): Promise<number>;
}

/**
 * A 5xx or a timeout: retried with backoff, or given up at the action's `maxServerErrors`
 * (counted per action ID across attempts).
 */
export async function afterServerError(
  { id, maxServerErrors }: { id: string; maxServerErrors?: number },
  attempt: number,
  { serverErrors, backoff }: { serverErrors: ServerErrorCounter; backoff: BackoffPolicy },
  reason: FailureReason,
  retry: string,
): Promise<OutboxOutcome> {
  if (maxServerErrors !== undefined) {
    const count = await serverErrors.countServerError(id);
    if (count >= maxServerErrors) {
      return {
        kind: "dead",
        reason: {
          ...reason,
          error: `gave up at server error ${count} of ${maxServerErrors}: ${reason.error}`,
        },
      };
    }
  }
  return { kind: "retry", delaySeconds: backoffSeconds(attempt, backoff), reason: retry };
}
