import { afterServerError, type FailureReason, type OutboxOutcome } from "../queue/outbound.ts";
import { type BackoffPolicy, backoffSeconds, rateLimitSeconds } from "../shared/backoff.ts";
import type { Log } from "../shared/log.ts";
import type { MessageLinker } from "../store/messages.ts";
import type { OutboxMemory, ServerErrorCounter } from "../store/outbox-memory.ts";
import type { SentEventRecorder } from "../store/sent-events.ts";
import { actionProblem } from "./allowed-request.ts";
import type { BotProfileKeeper } from "./bot-profile.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  matrixError,
  type OutboundAction,
  RequestRefused,
} from "./request.ts";
import { inviteRequest, joinRequest, registerRequest } from "./requests.ts";

export interface OutboxDeps {
  homeserver: HomeserverClient;
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
