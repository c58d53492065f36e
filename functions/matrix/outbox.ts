import { TargetRefused } from "../remote/address-policy.ts";
import type { RemoteClient, RemoteResponse } from "../remote/remote-http.ts";
import { signatureHeaders } from "../remote/signature.ts";
import type { Log } from "../shared/log.ts";
import type { DeliveryOutcomeStore } from "../store/delivery-outcomes.ts";
import type { MessageLinker } from "../store/messages.ts";
import type { OutboxMemory, ServerErrorCounter } from "../store/outbox-memory.ts";
import type { SentEventRecorder } from "../store/sent-events.ts";
import { actionProblem, deliveryProblem } from "./allowed-request.ts";
import {
  type BackoffPolicy,
  backoffSeconds,
  OUTBOUND_MAX_RECEIVE_COUNT,
  rateLimitSeconds,
} from "./backoff.ts";
import type { BotProfileKeeper } from "./bot-profile.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  isDelivery,
  isObject,
  isQueuedAction,
  matrixError,
  type OutboundAction,
  type OutboundDelivery,
  type QueuedAction,
  RequestRefused,
} from "./request.ts";
import { inviteRequest, joinRequest, registerRequest } from "./requests.ts";

export interface OutboxDeps {
  homeserver: HomeserverClient;
  /** Sends deliveries to services other than the homeserver, where the address policy allows. */
  remote: RemoteClient;
  outboxMemory: OutboxMemory;
  /** Server errors of the actions that have a `maxServerErrors`. */
  serverErrors: ServerErrorCounter;
  /** Where the sends that ask for it (`recordEventId`) have their event ID recorded. */
  sentEvents: SentEventRecorder;
  /** Where the sends that name their remote message (`remoteId`) are linked to their event ID. */
  messages: MessageLinker;
  botUserId: string;
  /** Whether the registration's user namespaces cover `userId` (the bot is ours anyway). */
  isOurUser: (userId: string) => boolean;
  backoff: BackoffPolicy;
  log: Log;
  /** Gives the bot its profile before it first acts. */
  botProfile: BotProfileKeeper;
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
  deps: OutboxDeps,
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
  deps: OutboxDeps,
  queuedAt?: number,
): Promise<OutboxDecision> {
  const delivery = isDelivery(action);
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
    await recordOutcome(action, action.outcomeKey, outcome, attempt, deps);
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

/**
 * What the application reads of a delivery's last attempt. Only informative: a failure to record
 * it is logged, and the delivery's outcome stands (a throw would send it again).
 */
async function recordOutcome(
  delivery: OutboundDelivery,
  key: string,
  outcome: OutboxOutcome,
  attempt: number,
  { deliveryOutcomes, log }: Pick<OutboxDeps, "deliveryOutcomes" | "log">,
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

const reasonOf = (response: ClientServerResponse): FailureReason => {
  const { errcode, error } = matrixError(response.body);
  return {
    status: response.status,
    ...(errcode && { errcode }),
    error:
      error ??
      (typeof response.body === "string" ? response.body.slice(0, 500) : "no error message"),
  };
};

/** A delivery's target for logs: its origin, never its path or query (which may hold secrets). */
const targetOf = (delivery: OutboundDelivery) => {
  try {
    return new URL(delivery.delivery.url).origin;
  } catch {
    return "(not a URL)";
  }
};

/**
 * A 5xx or a timeout: retried with backoff, or given up at the action's `maxServerErrors`
 * (counted per action ID across attempts).
 */
async function afterServerError(
  { id, maxServerErrors }: { id: string; maxServerErrors?: number },
  attempt: number,
  { serverErrors, backoff }: Pick<OutboxDeps, "serverErrors" | "backoff">,
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

/** A retry's reason when the homeserver refused the as_token (401). */
export const AS_TOKEN_REFUSED = "as_token refused (401): retried until the configuration is fixed";

class Retry extends Error {
  constructor(
    readonly delaySeconds: number,
    reason: string,
    readonly status?: number,
  ) {
    super(reason);
  }
}

class GiveUp extends Error {
  constructor(readonly reason: FailureReason) {
    super(reason.error);
  }
}

/**
 * The most calls `performAction` makes for one action: the call, register (`M_USER_IN_USE`: a
 * user made before, forgotten), the call again, join, invite, join, the call again.
 */
export const MAX_CALLS_PER_ACTION = 7;

/**
 * Performs one outbound action. An action outside what the appservice may ask (see
 * `actionProblem`) is dead-lettered unsent. A 403 may mean the virtual user was never
 * registered or is not in the room: then it registers the user (`M_USER_IN_USE` counts as done)
 * and/or joins the room (the bot inviting it first if it must; always, for a user just created)
 * and tries again. 429 waits what
 * the server says; 5xx, timeouts and refused connections back off exponentially, until an
 * action's `maxServerErrors` (5xx and timeouts) if it has one; any other answer is final.
 */
export async function performAction(
  action: OutboundAction,
  attempt: number,
  {
    homeserver,
    outboxMemory,
    serverErrors,
    sentEvents,
    messages,
    botUserId,
    isOurUser,
    backoff,
    log,
    botProfile,
  }: OutboxDeps,
): Promise<OutboxOutcome> {
  const problem = actionProblem(action, (userId) => userId === botUserId || isOurUser(userId));
  if (problem) return { kind: "dead", reason: { error: `refused, not sent: ${problem}` } };

  /** A 5xx or a timeout: retried, or given up at the action's limit. */
  const serverError = async (reason: FailureReason, retry: string): Promise<never> => {
    const outcome = await afterServerError(
      action,
      attempt,
      { serverErrors, backoff },
      reason,
      retry,
    );
    throw outcome.kind === "dead"
      ? new GiveUp(outcome.reason)
      : new Retry(backoffSeconds(attempt, backoff), retry, reason.status);
  };

  /** One call; transient failures become a `Retry`. */
  const call = async (userId: string, request: ClientServerRequest) => {
    let response: ClientServerResponse;
    try {
      response = await homeserver.call(userId, request);
    } catch (error) {
      if (error instanceof RequestRefused) {
        throw new GiveUp({ error: `refused, not sent: ${error.message}` });
      }
      const message = `homeserver unreachable: ${(error as Error).message}`;
      // No answer in time: the homeserver took the request and failed on it, as with a 5xx.
      // A refused connection says nothing about this action.
      if ((error as Error).name === "TimeoutError") return serverError({ error: message }, message);
      throw new Retry(backoffSeconds(attempt, backoff), message);
    }
    if (response.status === 429) {
      const wait = rateLimitSeconds(response.retryAfterSeconds, response.body);
      throw new Retry(wait ?? backoffSeconds(attempt, backoff), "rate limited (429)", 429);
    }
    if (response.status >= 500) {
      return serverError(reasonOf(response), `homeserver error ${response.status}`);
    }
    // The as_token refused (M_UNKNOWN_TOKEN, M_MISSING_TOKEN): every call fails alike until
    // the registration and the stack's token agree again (a rotation's step missed). A fault of
    // configuration, not of this action: retried with the backoff, uncounted, and logged at
    // ERROR, which the alarm counts.
    if (response.status === 401) {
      const reason = reasonOf(response);
      log.error("the homeserver refused the as_token: the registration and the stack disagree", {
        actionId: action.id,
        status: 401,
        ...(reason.errcode && { errcode: reason.errcode }),
      });
      throw new Retry(backoffSeconds(attempt, backoff), AS_TOKEN_REFUSED, 401);
    }
    return response;
  };
  const ok = (response: ClientServerResponse) => response.status >= 200 && response.status < 300;
  const isForbidden = (response: ClientServerResponse) =>
    response.status === 403 && matrixError(response.body).errcode === "M_FORBIDDEN";

  try {
    if (action.userId === botUserId) await botProfile.ensure((request) => call(botUserId, request));
    let response = await call(action.userId, action.request);
    if (action.kind === "register" && matrixError(response.body).errcode === "M_USER_IN_USE") {
      return { kind: "done", status: response.status };
    }
    const virtual = action.userId !== botUserId;
    const { roomId } = action;
    const inRoom = roomId !== undefined && action.kind !== "join";
    let created = false;
    if (isForbidden(response) && virtual && !(await outboxMemory.isRegistered(action.userId))) {
      const registered = await call(botUserId, registerRequest(action.userId));
      if (!ok(registered) && matrixError(registered.body).errcode !== "M_USER_IN_USE") {
        return { kind: "dead", reason: reasonOf(registered) };
      }
      await outboxMemory.markRegistered(action.userId);
      log.info("registered a virtual user", { userId: action.userId, actionId: action.id });
      // A user just created is in no room: it is invited and joined before the call, which
      // Synapse would otherwise deny, and then the uninvited join, each a "Denying new event".
      created = ok(registered) && inRoom;
      if (!created) response = await call(action.userId, action.request);
    }
    if ((created || isForbidden(response)) && inRoom) {
      const join = () => call(action.userId, joinRequest(roomId));
      // The bot lets the user into an invite-only room (a public one needs no invite).
      const invite = () => call(botUserId, inviteRequest(roomId, action.userId));
      let joined: ClientServerResponse;
      if (created) {
        await invite();
        joined = await join();
      } else {
        joined = await join();
        if (isForbidden(joined) && virtual && ok(await invite())) joined = await join();
      }
      if (!ok(joined)) return { kind: "dead", reason: reasonOf(joined) };
      log.info("joined a room to act in it", { userId: action.userId, roomId: action.roomId });
      response = await call(action.userId, action.request);
    }
    if (!ok(response)) return { kind: "dead", reason: reasonOf(response) };
    const eventId = (response.body as { event_id?: unknown } | undefined)?.event_id;
    if (action.recordEventId && typeof eventId === "string") {
      // A failure here fails the action: its retry sends under the same txnId, which the
      // homeserver answers with the same event ID.
      await sentEvents.recordEventId(action.id, eventId);
    }
    if (action.remoteId !== undefined && roomId !== undefined && typeof eventId === "string") {
      // As above: a failure fails the action, whose retry is given the same event ID.
      const linked = await messages.linkMessage(roomId, action.remoteId, eventId);
      if (!linked) {
        log.warn("event already linked to another remote message", { actionId: action.id, roomId });
      }
    }
    return { kind: "done", status: response.status };
  } catch (error) {
    if (error instanceof Retry) {
      return {
        kind: "retry",
        delaySeconds: error.delaySeconds,
        reason: error.message,
        ...(error.status !== undefined && { status: error.status }),
      };
    }
    if (error instanceof GiveUp) return { kind: "dead", reason: error.reason };
    throw error;
  }
}

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
  deps: OutboxDeps,
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
  { remote, serverErrors, backoff, remoteSecret, remoteOrigin }: OutboxDeps,
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
