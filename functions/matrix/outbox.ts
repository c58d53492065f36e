import {
  afterServerError,
  type FailureReason,
  type OutboxOutcome,
  type ServerErrorCounter,
} from "../queue/outbound.ts";
import { type BackoffPolicy, backoffSeconds, rateLimitSeconds } from "../shared/backoff.ts";
import type { Log } from "../shared/log.ts";
import type { IntentMemory } from "../store/intent-memory.ts";
import type { MessageLinker } from "../store/messages.ts";
import type { SentEventRecorder } from "../store/sent-events.ts";
import { type ActionBudget, ActionTimeSpent, actionHomeserver } from "./action-time.ts";
import { actionProblem } from "./allowed-request.ts";
import type { BotProfileKeeper } from "./bot-profile.ts";
import { Intent, isForbidden } from "./intent.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  HomeserverRefused,
  matrixError,
  type OutboundAction,
  RequestRefused,
} from "./request.ts";
import { EncryptionCallFailed, encryptedRequest, type RoomEncryptor } from "./room-encryptor.ts";

export interface OutboxDeps {
  homeserver: HomeserverClient;
  /** The users registered and the rooms joined, shared with the immediate calls. */
  intentMemory: IntentMemory;
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
  /** Encrypts the sends into encrypted rooms; without it every send goes as it is. */
  roomEncryptor?: RoomEncryptor;
  /**
   * The time each action has for its calls, the encryption's included; without it they are not
   * bounded (an in-process test's).
   */
  actionBudget?: ActionBudget;
  /** The clock the action's budget is read on (epoch ms). @default Date.now */
  now?: () => number;
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
 * The most calls `performAction` makes for one action into a room that is not encrypted: the
 * call, register (`M_USER_IN_USE`: a user made before, forgotten), the call again, invite, join,
 * the call again. An action's budget holds that many calls' waits; a send into an encrypted room
 * makes more (the room's state, key queries and claims, to-device sends), which are answered in
 * milliseconds but are bounded by the same budget (`actionHomeserver`).
 */
export const MAX_CALLS_PER_ACTION = 6;

/**
 * Performs one outbound action. An action outside what the appservice may ask (see
 * `actionProblem`) is dead-lettered unsent. A 403 may mean the virtual user was never
 * registered or is not in the room: then the Intent (`intent.ts`, one memory with the immediate
 * calls) registers the user unless it remembers doing so (`M_USER_IN_USE` counts as done) and/or
 * lets it into the room (the bot invites a virtual user, which then joins), and the action is
 * tried again. A join, leave, kick or ban done is remembered. 429 waits what
 * the server says; 5xx, timeouts and refused connections back off exponentially, until an
 * action's `maxServerErrors` (5xx and timeouts) if it has one; any other answer is final.
 */
export async function performAction(
  action: OutboundAction,
  attempt: number,
  {
    homeserver,
    intentMemory,
    serverErrors,
    sentEvents,
    messages,
    botUserId,
    isOurUser,
    backoff,
    log,
    botProfile,
    roomEncryptor,
    actionBudget,
    now = Date.now,
  }: OutboxDeps,
): Promise<OutboxOutcome> {
  const problem = actionProblem(action, (userId) => userId === botUserId || isOurUser(userId));
  if (problem) return { kind: "dead", reason: { error: `refused, not sent: ${problem}` } };
  // Every call of this action, its encryption's too, within its budget.
  const budgetedHomeserver = actionBudget
    ? actionHomeserver(homeserver, actionBudget, now)
    : homeserver;

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

  /**
   * The action's time spent before its work is done: retried with the backoff, uncounted, as a
   * slow homeserver's would be; the encryption resumes from what it saved.
   */
  const timeSpent = (error: ActionTimeSpent) =>
    new Retry(backoffSeconds(attempt, backoff), `not sent: ${error.message}`);

  /** One call; transient failures become a `Retry`. */
  const call = async (userId: string, request: ClientServerRequest) => {
    let response: ClientServerResponse;
    try {
      response = await budgetedHomeserver.call(userId, request);
    } catch (error) {
      if (error instanceof ActionTimeSpent) throw timeSpent(error);
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
  /**
   * The action's own call, its send encrypted if the room is. A user that cannot read the room's
   * state is not in it: answered as the homeserver would, with nothing sent, so that it joins.
   */
  const callAction = async (): Promise<ClientServerResponse> => {
    let outgoing: Awaited<ReturnType<typeof encryptedRequest>>;
    try {
      outgoing = await encryptedRequest(action, roomEncryptor, budgetedHomeserver);
    } catch (error) {
      if (error instanceof ActionTimeSpent) throw timeSpent(error);
      const reason = `not encrypted, so not sent: ${(error as Error).message}`;
      // The encryption's 5xx count toward the action's limit as its own call's do.
      if (error instanceof EncryptionCallFailed && error.status >= 500) {
        return serverError({ status: error.status, error: reason }, reason);
      }
      throw new Retry(backoffSeconds(attempt, backoff), reason);
    }
    if (outgoing.kind === "call") return call(action.userId, outgoing.request);
    if (outgoing.kind === "refused") {
      throw new GiveUp({ error: `refused, not sent: ${outgoing.reason}` });
    }
    return {
      status: 403,
      body: { errcode: "M_FORBIDDEN", error: "not in the room (its encryption unknown): not sent" },
    };
  };
  const ok = (response: ClientServerResponse) => response.status >= 200 && response.status < 300;
  const intent = new Intent({ memory: intentMemory, botUserId, log }, call);

  try {
    if (action.userId === botUserId) await botProfile.ensure((request) => call(botUserId, request));
    let response = await callAction();
    if (action.kind === "register" && matrixError(response.body).errcode === "M_USER_IN_USE") {
      return { kind: "done", status: response.status };
    }
    const { roomId } = action;
    const inRoom = roomId !== undefined && action.kind !== "join";
    if (isForbidden(response)) {
      const { registration } = await intent.ensureUser(action.userId);
      // A user just created is in no room: it is let in before the call, which Synapse would
      // otherwise deny ("Denying new event").
      const created = registration === "created" && inRoom;
      if (registration !== "remembered" && !created) {
        response = await callAction();
      }
      if ((created || isForbidden(response)) && inRoom) {
        // The 403 says the user is not in the room, whatever the memory says.
        await intent.ensureJoined(action.userId, roomId, true);
        response = await callAction();
      }
    }
    if (!ok(response)) return { kind: "dead", reason: reasonOf(response) };
    await rememberMembership(action, response, intentMemory);
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
    // The Intent's refusals: a registration or a join refused for good.
    if (error instanceof HomeserverRefused) {
      return { kind: "dead", reason: reasonOf({ status: error.status, body: error.body }) };
    }
    throw error;
  }
}

/**
 * A membership changed by an action done, in the Intent's memory: a join (its room's ID as the
 * homeserver answers, for an alias), a leave, and the target of a kick or ban. A failure to
 * write fails the action, whose retry does the same again.
 */
async function rememberMembership(
  { kind, userId, roomId, request }: OutboundAction,
  response: ClientServerResponse,
  memory: IntentMemory,
) {
  if (kind === "join") {
    const joined = (response.body as { room_id?: unknown } | undefined)?.room_id ?? roomId;
    if (typeof joined === "string") await memory.markJoined(joined, userId, {});
    return;
  }
  const left =
    kind === "leave" ? userId : (request.body as { user_id?: unknown } | undefined)?.user_id;
  if (
    (kind === "leave" || kind === "kick" || kind === "ban") &&
    roomId &&
    typeof left === "string"
  ) {
    await memory.markLeft(roomId, left);
  }
}
