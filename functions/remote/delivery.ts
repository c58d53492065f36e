import {
  afterServerError,
  type FailureReason,
  type OutboxOutcome,
  type ServerErrorCounter,
} from "../queue/outbound.ts";
import { type BackoffPolicy, backoffSeconds, rateLimitSeconds } from "../shared/backoff.ts";
import type { Log } from "../shared/log.ts";
import type { DeliveryOutcomeStore } from "../store/delivery-outcomes.ts";
import { TargetRefused } from "./address-policy.ts";
import { deliveryProblem, type OutboundDelivery } from "./outbound-delivery.ts";
import type { RemoteClient, RemoteResponse } from "./remote-http.ts";
import { signatureHeaders } from "./signature.ts";

/** What the outbox needs to send deliveries (`performDelivery`) and record their outcomes. */
export interface DeliveryDeps {
  /** Sends deliveries to services other than the homeserver, where the address policy allows. */
  remote: RemoteClient;
  /** Server errors of the deliveries that have a `maxServerErrors`. */
  serverErrors: ServerErrorCounter;
  backoff: BackoffPolicy;
  log: Log;
  /** Where deliveries with an `outcomeKey` record how each attempt went. */
  deliveryOutcomes: DeliveryOutcomeStore;
  /** The secret shared with the remote service, which signs `signed` deliveries. */
  remoteSecret?: string;
  /**
   * The remote service's origin (the relay's `RELAY_URL`): the only one `signed` deliveries go to,
   * since its inbound route accepts the same signature.
   */
  remoteOrigin?: string;
}

/** A delivery's target for logs: its origin, never its path or query (which may hold secrets). */
export const targetOf = (delivery: OutboundDelivery) => {
  try {
    return new URL(delivery.delivery.url).origin;
  } catch {
    return "(not a URL)";
  }
};

/** What a remote service's answer says, for a dead letter: its status and the start of its body. */
const remoteReason = (response: RemoteResponse): FailureReason => ({
  status: response.status,
  error:
    response.status >= 300 && response.status < 400
      ? `redirected more than the client follows, or without a Location (to ${response.headers.location ?? "nowhere"})`
      : response.body.slice(0, 500) || "no body",
});

/**
 * Sends one delivery (an HTTP request to a service other than the homeserver) with its
 * `Idempotency-Key`, under the homeserver's rules: 2xx is done; 429 waits what the service says
 * (`Retry-After`); 5xx and timeouts back off until the delivery's `maxServerErrors` if it has
 * one; refused connections and other network failures back off; any other answer is final. A
 * retry that would end past `retryForMs` from `queuedAt` is given up instead. A delivery of the
 * wrong shape, or to an address the policy refuses, is dead-lettered unsent.
 */
export async function performDelivery(
  delivery: OutboundDelivery,
  attempt: number,
  deps: DeliveryDeps,
  queuedAt?: number,
): Promise<OutboxOutcome> {
  const outcome = await sendDelivery(delivery, attempt, deps);
  if (outcome.kind !== "retry") return outcome;
  const { retryForMs } = delivery;
  const giveUp = (why: string): Extract<OutboxOutcome, { kind: "dead" }> => ({
    kind: "dead",
    reason: {
      ...(outcome.status !== undefined && { status: outcome.status }),
      error: `${why}: ${outcome.reason}`,
    },
  });
  if (retryForMs === undefined || queuedAt === undefined) return outcome;
  if (Date.now() + outcome.delaySeconds * 1000 <= queuedAt + retryForMs) return outcome;
  return giveUp(`gave up after retrying for ${Math.round(retryForMs / 60_000)} minutes`);
}

/** One attempt of a delivery, as `performDelivery` says. */
async function sendDelivery(
  delivery: OutboundDelivery,
  attempt: number,
  { remote, serverErrors, backoff, remoteSecret, remoteOrigin }: DeliveryDeps,
): Promise<OutboxOutcome> {
  const problem = deliveryProblem(delivery);
  if (problem) return { kind: "dead", reason: { error: `refused, not sent: ${problem}` } };
  if (delivery.signed && !remoteSecret) {
    return { kind: "dead", reason: { error: "refused, not sent: no secret to sign it with" } };
  }
  // Signed elsewhere, it would be a request the application's own inbound route (the relay's)
  // accepts as the remote service's: an application could forge it, or a third party replay it.
  if (delivery.signed && targetOf(delivery) !== remoteOrigin) {
    return {
      kind: "dead",
      reason: {
        error: `refused, not sent: signed deliveries go only to the remote service (${remoteOrigin ?? "none configured"}), not ${targetOf(delivery)}`,
      },
    };
  }
  const { body, bodyEncoding } = delivery.delivery;
  // Signed now, not when queued: the timestamp is this attempt's.
  const signature =
    delivery.signed && remoteSecret
      ? signatureHeaders(
          remoteSecret,
          delivery.id,
          bodyEncoding === "base64" ? Buffer.from(body ?? "", "base64") : (body ?? ""),
        )
      : {};
  let response: RemoteResponse;
  try {
    // Signed, it goes to the remote service's origin only: a redirect elsewhere is refused.
    response = await remote.send(
      {
        ...delivery.delivery,
        headers: { ...delivery.delivery.headers, ...signature, "idempotency-key": delivery.id },
      },
      { sameOriginOnly: delivery.signed === true },
    );
  } catch (error) {
    if (error instanceof TargetRefused) {
      return { kind: "dead", reason: { error: `refused, not sent: ${error.message}` } };
    }
    const message = `remote service unreachable: ${(error as Error).message}`;
    if ((error as Error).name === "TimeoutError") {
      return afterServerError(
        delivery,
        attempt,
        { serverErrors, backoff },
        { error: message },
        message,
      );
    }
    return { kind: "retry", delaySeconds: backoffSeconds(attempt, backoff), reason: message };
  }
  const { status } = response;
  if (status >= 200 && status < 300) return { kind: "done", status };
  if (status === 429) {
    const wait = rateLimitSeconds(response.retryAfterSeconds, undefined);
    return {
      kind: "retry",
      delaySeconds: wait ?? backoffSeconds(attempt, backoff),
      reason: "rate limited (429)",
      status,
    };
  }
  if (status >= 500) {
    const outcome = await afterServerError(
      delivery,
      attempt,
      { serverErrors, backoff },
      remoteReason(response),
      `remote service error ${status}`,
    );
    return outcome.kind === "retry" ? { ...outcome, status } : outcome;
  }
  return { kind: "dead", reason: remoteReason(response) };
}

/**
 * What the application reads of a delivery's last attempt. Only informative: a failure to record
 * it is logged, and the delivery's outcome stands (a throw would send it again).
 */
export async function recordDeliveryOutcome(
  delivery: OutboundDelivery,
  key: string,
  outcome: OutboxOutcome,
  attempt: number,
  { deliveryOutcomes, log }: Pick<DeliveryDeps, "deliveryOutcomes" | "log">,
) {
  const status = outcome.kind === "dead" ? outcome.reason.status : outcome.status;
  const error =
    outcome.kind === "dead" ? outcome.reason.error : outcome.kind === "retry" ? outcome.reason : "";
  try {
    await deliveryOutcomes.record(key, {
      outcome: outcome.kind,
      ...(status !== undefined && { status }),
      ...(error && { error: error.slice(0, 500) }),
      attempt,
      at: new Date().toISOString(),
      deliveryId: delivery.id,
    });
  } catch (failure) {
    log.warn("delivery outcome not recorded", {
      actionId: delivery.id,
      error: (failure as Error).message,
    });
  }
}
