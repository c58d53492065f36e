import fc from "fast-check";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { createNamespaceMatcher } from "../../functions/appservice/protocol/namespaces.ts";
import { createActions } from "../../functions/matrix/actions.ts";
import { actionProblem, requestProblem } from "../../functions/matrix/allowed-request.ts";
import { BotProfileKeeper, botProfile } from "../../functions/matrix/bot-profile.ts";
import { HttpHomeserverClient } from "../../functions/matrix/http-client.ts";
import {
  AS_TOKEN_REFUSED,
  MAX_CALLS_PER_ACTION,
  performAction,
} from "../../functions/matrix/outbox.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  type OutboundAction,
  RequestRefused,
} from "../../functions/matrix/request.ts";
import { roomStateRequest } from "../../functions/matrix/requests.ts";
import { EncryptionCallFailed, type RoomEncryptor } from "../../functions/matrix/room-encryptor.ts";
import {
  decideOutboundAction,
  decideOutboundMessage,
  OUTCOME_LOG_MESSAGES,
  type OutboundDeps,
} from "../../functions/outbox/decide.ts";
import type { ServerErrorCounter } from "../../functions/queue/outbound.ts";
import type { FifoMessage } from "../../functions/queue/queue.ts";
import { addressPolicy } from "../../functions/remote/address-policy.ts";
import { HttpRemoteClient } from "../../functions/remote/remote-http.ts";
import {
  backoffSeconds,
  OUTBOUND_MAX_RECEIVE_COUNT,
  rateLimitSeconds,
} from "../../functions/shared/backoff.ts";
import type { IntentMemory, ProfileFields } from "../../functions/store/intent-memory.ts";
import type { MessageLinker } from "../../functions/store/messages.ts";
import type { SentEventRecorder } from "../../functions/store/sent-events.ts";
import { actionBudgetMs } from "../../functions/wiring/timeouts.ts";

// The outbox's decisions, against test doubles of the project's own interfaces (the homeserver
// client, the membership store, the server error counter): each answer is chosen per call. The
// same paths run against the scripted homeserver, DynamoDB Local and fauxqs in
// test/integration/outbox-guard.test.ts and outbound.test.ts.

const BOT = "@bot:test.local";
const GHOST = "@_as_ghost:test.local";
const ROOM = "!room:test.local";
const namespaces = createNamespaceMatcher({
  users: [{ regex: "@_as_.*:test\\.local", exclusive: true }],
  aliases: [],
  rooms: [],
});

type Answer = ClientServerResponse | Error;
const answer = (status: number, body: unknown = {}, retryAfterSeconds?: number): Answer => ({
  status,
  body,
  ...(retryAfterSeconds !== undefined && { retryAfterSeconds }),
});
const timeout = () => new DOMException("The operation was aborted due to timeout", "TimeoutError");
const refused = () => new TypeError("fetch failed");
const forbidden = answer(403, { errcode: "M_FORBIDDEN", error: "not allowed" });

/** Answers each call with the next answer of its kind (`register`, `join`, `invite`, `action`). */
class FakeHomeserver implements HomeserverClient {
  readonly calls: { userId: string; request: ClientServerRequest }[] = [];
  constructor(private readonly script: Record<string, Answer[]>) {}
  async call(userId: string, request: ClientServerRequest): Promise<ClientServerResponse> {
    this.calls.push({ userId, request });
    const step = request.path.endsWith("/register")
      ? "register"
      : request.path.includes("/join/")
        ? "join"
        : request.path.endsWith("/invite")
          ? "invite"
          : "action";
    const next = this.script[step]?.shift();
    if (!next) throw new Error(`the script has no answer left for ${step}`);
    if (next instanceof Error) throw next;
    return next;
  }
  /** Each call as `<user> <method> <path>`. */
  get steps() {
    return this.calls.map(
      ({ userId, request }) =>
        `${userId === BOT ? "bot" : userId} ${request.method} ${request.path.replace("/_matrix/client/v3", "")}`,
    );
  }
}

class MemoryOutboxStore
  implements IntentMemory, ServerErrorCounter, SentEventRecorder, MessageLinker
{
  readonly registered = new Set<string>();
  readonly serverErrors = new Map<string, number>();
  readonly sentEvents = new Map<string, string>();
  /** `roomId remoteId` → event ID; and the event IDs linked, as the map's other side. */
  readonly messageLinks = new Map<string, string>();
  readonly linkedEvents = new Set<string>();
  // The bot's profile as configured below, already set: these tests are about other calls.
  readonly profiles = new Map<string, ProfileFields>([[BOT, { displayname: "Bot" }]]);
  /** `roomId userId` → the look in the room, for the members remembered joined. */
  readonly members = new Map<string, ProfileFields>();
  async user(userId: string) {
    return { registered: this.registered.has(userId), profile: this.profiles.get(userId) ?? {} };
  }
  async markRegistered(userId: string) {
    this.registered.add(userId);
  }
  async markProfileSet(userId: string, profile: ProfileFields) {
    this.profiles.set(userId, profile);
  }
  async member(roomId: string, userId: string) {
    return this.members.get(`${roomId} ${userId}`);
  }
  async markJoined(roomId: string, userId: string, look: ProfileFields) {
    this.members.set(`${roomId} ${userId}`, look);
  }
  async markLeft(roomId: string, userId: string) {
    this.members.delete(`${roomId} ${userId}`);
  }
  async countServerError(actionId: string) {
    const count = (this.serverErrors.get(actionId) ?? 0) + 1;
    this.serverErrors.set(actionId, count);
    return count;
  }
  async recordEventId(actionId: string, eventId: string) {
    this.sentEvents.set(actionId, eventId);
  }
  async linkMessage(roomId: string, remoteId: string, eventId: string) {
    const key = `${roomId} ${remoteId}`;
    if (this.messageLinks.has(key)) return true;
    if (this.linkedEvents.has(eventId)) return false;
    this.messageLinks.set(key, eventId);
    this.linkedEvents.add(eventId);
    return true;
  }
}

const silent = { debug() {}, info() {}, warn() {}, error() {} };

const send = (overrides: Partial<OutboundAction> = {}): OutboundAction => ({
  id: "a1",
  kind: "send",
  userId: BOT,
  roomId: ROOM,
  request: {
    method: "PUT",
    path: `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/send/m.room.message/a1`,
    body: { msgtype: "m.text", body: "hi" },
  },
  ...overrides,
});

/** Runs the action's attempts in order, each with its own answers, as SQS would redeliver it. */
async function attempts(
  action: OutboundAction,
  scripts: Record<string, Answer[]>[],
  store = new MemoryOutboxStore(),
) {
  const outcomes = [];
  const homeservers: FakeHomeserver[] = [];
  for (const [attempt, script] of scripts.entries()) {
    const homeserver = new FakeHomeserver(script);
    homeservers.push(homeserver);
    outcomes.push(await performAction(action, attempt, deps(homeserver, store)));
  }
  return { outcomes, store, homeservers };
}

const unexpectedCall = () => Promise.reject(new Error("no delivery outcome expected"));
const deps = (homeserver: HomeserverClient, store = new MemoryOutboxStore()): OutboundDeps => ({
  homeserver,
  intentMemory: store,
  // No deliveries here (test/unit/outbox-delivery.test.ts has them): every address refused.
  remote: new HttpRemoteClient({ policy: addressPolicy() }),
  serverErrors: store,
  sentEvents: store,
  messages: store,
  botUserId: BOT,
  isOurUser: (userId) => namespaces.matches("users", userId),
  backoff: { baseSeconds: 1, capSeconds: 300 },
  log: silent,
  botProfile: new BotProfileKeeper(BOT, botProfile("Bot"), store, silent),
  // No deliveries here: no outcome to record.
  deliveryOutcomes: { record: unexpectedCall, last: unexpectedCall },
});

async function once(
  action: OutboundAction,
  script: Record<string, Answer[]>,
  known = new MemoryOutboxStore(),
) {
  const { outcomes, store, homeservers } = await attempts(action, [script], known);
  return { outcome: outcomes[0], store, homeserver: homeservers[0] as FakeHomeserver };
}

describe("performAction: what each answer means", () => {
  it("2xx → done, in one call", async () => {
    for (const status of [200, 201, 204]) {
      const { outcome, homeserver } = await once(send(), { action: [answer(status)] });
      expect(outcome).toEqual({ kind: "done", status });
      expect(homeserver.calls).toHaveLength(1);
    }
  });

  it("a send marked recordEventId has its event ID recorded once sent; an unmarked one, none", async () => {
    const sent = () => ({ action: [answer(200, { event_id: "$sent" })] });
    const marked = await attempts(send({ id: "marked", recordEventId: true }), [sent()]);
    expect(marked.outcomes).toEqual([{ kind: "done", status: 200 }]);
    expect([...marked.store.sentEvents]).toEqual([["marked", "$sent"]]);
    const plain = await attempts(send({ id: "plain" }), [sent()]);
    expect(plain.outcomes).toEqual([{ kind: "done", status: 200 }]);
    expect(plain.store.sentEvents.size).toBe(0);
  });

  it("a send naming its remote message → linked to its event ID in the room's message map once sent; a retry links the same", async () => {
    const linked = send({ id: "linked", remoteId: "remote-1" });
    const { outcomes, store } = await attempts(linked, [
      { action: [answer(502)] },
      { action: [answer(200, { event_id: "$sent" })] },
      // The same txnId again (a redelivery): the homeserver answers with the same event.
      { action: [answer(200, { event_id: "$sent" })] },
    ]);
    expect(outcomes.map((o) => o.kind)).toEqual(["retry", "done", "done"]);
    expect([...store.messageLinks]).toEqual([[`${ROOM} remote-1`, "$sent"]]);
    // No remote message named: nothing linked.
    const plain = await attempts(send({ id: "plain" }), [
      { action: [answer(200, { event_id: "$p" })] },
    ]);
    expect(plain.store.messageLinks.size).toBe(0);
  });

  it("a remoteId that is not a string, or without a room → dead-lettered unsent", async () => {
    for (const action of [
      send({ remoteId: 7 as unknown as string }),
      { ...send({ remoteId: "r" }), roomId: undefined },
    ]) {
      const { outcome, homeserver } = await once(action, { action: [answer(200)] });
      expect(outcome).toMatchObject({
        kind: "dead",
        reason: { error: expect.stringMatching(/remoteId/) },
      });
      expect(homeserver.calls).toHaveLength(0);
    }
  });

  it("401 (the as_token refused) → retry with the backoff, logged at ERROR, no server error counted: a configuration fault, not the action's", async () => {
    const errors: { message: string; fields: unknown }[] = [];
    const log = {
      ...silent,
      error: (message: string, fields: unknown) => errors.push({ message, fields }),
    };
    const store = new MemoryOutboxStore();
    const action = { ...send(), maxServerErrors: 1 };
    const unknownToken = answer(401, {
      errcode: "M_UNKNOWN_TOKEN",
      error: "Unrecognised access token.",
    });
    // The backoff's draw pinned to its top: the wait is base·2^attempt, capped, as the policy
    // says (a constant wait would not pass).
    const random = vi.spyOn(Math, "random").mockReturnValue(0.999_999);
    onTestFinished(() => random.mockRestore());
    for (const attempt of [0, 1, 2, 9]) {
      const homeserver = new FakeHomeserver({ action: [unknownToken] });
      const outcome = await performAction(action, attempt, { ...deps(homeserver, store), log });
      expect(outcome).toEqual({
        kind: "retry",
        delaySeconds: Math.min(300, 2 ** attempt),
        reason: AS_TOKEN_REFUSED,
        status: 401,
      });
      expect(homeserver.calls).toHaveLength(1);
    }
    // At an action bounded to 1 server error: not given up.
    expect(store.serverErrors.size).toBe(0);
    expect(errors).toHaveLength(4);
    expect(errors[0]).toEqual({
      message: "the homeserver refused the as_token: the registration and the stack disagree",
      fields: { actionId: action.id, status: 401, errcode: "M_UNKNOWN_TOKEN" },
    });
  });

  it("400, 404, 409 and a 3xx → dead at once, with status, errcode and error; never retried", async () => {
    const cases: [number, unknown][] = [
      [400, { errcode: "M_BAD_JSON", error: "Content not JSON." }],
      [404, { errcode: "M_NOT_FOUND", error: "Unknown room" }],
      [409, { errcode: "M_UNKNOWN", error: "Conflict" }],
      [307, ""],
    ];
    for (const [status, body] of cases) {
      const { outcome, homeserver } = await once(send(), { action: [answer(status, body)] });
      const { errcode, error } = body as { errcode?: string; error?: string };
      expect(outcome).toEqual({
        kind: "dead",
        reason: { status, ...(errcode && { errcode }), error: error ?? "" },
      });
      expect(homeserver.calls).toHaveLength(1);
    }
  });

  it("a body that is not JSON (a proxy's page) is the reason's text, cut to 500 characters", async () => {
    const { outcome } = await once(send(), { action: [answer(400, "x".repeat(600))] });
    expect(outcome).toEqual({ kind: "dead", reason: { status: 400, error: "x".repeat(500) } });
  });

  it("403 for a virtual user never registered → register as the bot, the bot invites it, it joins, then the action again", async () => {
    // Just created, the user is in no room: the action and a join before the invite would both
    // be refused (Synapse logs each as a denied event).
    const { outcome, homeserver, store } = await once(send({ userId: GHOST }), {
      action: [forbidden, answer(200)],
      register: [answer(200, { user_id: GHOST })],
      invite: [answer(200)],
      join: [answer(200)],
    });
    expect(outcome).toMatchObject({ kind: "done" });
    expect(homeserver.steps).toEqual([
      `${GHOST} PUT /rooms/!room%3Atest.local/send/m.room.message/a1`,
      "bot POST /register",
      "bot POST /rooms/!room%3Atest.local/invite",
      `${GHOST} POST /join/!room%3Atest.local`,
      `${GHOST} PUT /rooms/!room%3Atest.local/send/m.room.message/a1`,
    ]);
    expect(store.registered.has(GHOST)).toBe(true);
    // A public room where the bot may not invite: the join alone lets the user in.
    const publicRoom = await once(send({ userId: GHOST }), {
      action: [forbidden, answer(200)],
      register: [answer(200, { user_id: GHOST })],
      invite: [forbidden],
      join: [answer(200)],
    });
    expect(publicRoom.outcome).toMatchObject({ kind: "done" });
    // A join refused even so: dead with its reason, the action not tried again.
    const refusedJoin = answer(403, { errcode: "M_FORBIDDEN", error: "banned" });
    const banned = await once(send({ userId: GHOST }), {
      action: [forbidden],
      register: [answer(200, { user_id: GHOST })],
      invite: [forbidden],
      join: [refusedJoin],
    });
    expect(banned.outcome).toEqual({
      kind: "dead",
      reason: { status: 403, errcode: "M_FORBIDDEN", error: "banned" },
    });
    expect(banned.homeserver.calls).toHaveLength(4);
  });

  it("403 for a registered user not in the room → not registered again; the bot invites it, then it joins, and it is remembered in the room", async () => {
    const known = new MemoryOutboxStore();
    known.registered.add(GHOST);
    const { outcome, homeserver } = await once(
      send({ userId: GHOST }),
      { action: [forbidden, answer(200)], invite: [answer(200)], join: [answer(200)] },
      known,
    );
    expect(outcome).toMatchObject({ kind: "done" });
    // The invite first: an invite-only room would deny the join before it.
    expect(homeserver.steps).toEqual([
      `${GHOST} PUT /rooms/!room%3Atest.local/send/m.room.message/a1`,
      "bot POST /rooms/!room%3Atest.local/invite",
      `${GHOST} POST /join/!room%3Atest.local`,
      `${GHOST} PUT /rooms/!room%3Atest.local/send/m.room.message/a1`,
    ]);
    expect(await known.member(ROOM, GHOST)).toEqual({});
    // Remembered in the room, yet refused: the 403 is believed over the memory, and the user is
    // let in again (its look there gone with the join, and forgotten).
    await known.markJoined(ROOM, GHOST, { displayname: "Ghost (here)" });
    const stale = await once(
      send({ userId: GHOST }),
      { action: [forbidden, answer(200)], invite: [forbidden], join: [answer(200)] },
      known,
    );
    expect(stale.outcome).toMatchObject({ kind: "done" });
    expect(stale.homeserver.calls).toHaveLength(4);
    expect(await known.member(ROOM, GHOST)).toEqual({});
  });

  it("a join, leave, kick or ban done is remembered in the Intent's memory: a join under the room's ID as answered", async () => {
    const store = new MemoryOutboxStore();
    store.registered.add(GHOST);
    const membership = (kind: string, path: string, body?: unknown) =>
      send({ kind, userId: GHOST, request: { method: "POST", path, ...(body ? { body } : {}) } });
    const room = encodeURIComponent(ROOM);
    const joined = await once(
      membership("join", `/_matrix/client/v3/join/${encodeURIComponent("#alias:test.local")}`),
      { join: [answer(200, { room_id: ROOM })] },
      store,
    );
    expect(joined.outcome).toMatchObject({ kind: "done" });
    expect(await store.member(ROOM, GHOST)).toEqual({});
    await once(
      membership("leave", `/_matrix/client/v3/rooms/${room}/leave`),
      { action: [answer(200)] },
      store,
    );
    expect(await store.member(ROOM, GHOST)).toBeUndefined();
    const other = "@_as_other:test.local";
    for (const kind of ["kick", "ban"]) {
      await store.markJoined(ROOM, other, {});
      await once(
        membership(kind, `/_matrix/client/v3/rooms/${room}/${kind}`, { user_id: other }),
        { action: [answer(200)] },
        store,
      );
      expect(await store.member(ROOM, other)).toBeUndefined();
    }
  });

  it("403 when the recovery fails too → dead with the failed step's reason; no join for a profile change (no room)", async () => {
    const refusedJoin = answer(403, { errcode: "M_FORBIDDEN", error: "banned" });
    // The bot is not invited by itself.
    const bot = await once(send(), { action: [forbidden], join: [refusedJoin] });
    expect(bot.outcome).toEqual({
      kind: "dead",
      reason: { status: 403, errcode: "M_FORBIDDEN", error: "banned" },
    });
    expect(bot.homeserver.steps).toEqual([
      "bot PUT /rooms/!room%3Atest.local/send/m.room.message/a1",
      "bot POST /join/!room%3Atest.local",
    ]);
    // As the Actions API queues it: a profile change concerns no room, so there is none to join.
    const { roomId: _, ...roomless } = send({
      kind: "displayname",
      request: { method: "PUT", path: "/_matrix/client/v3/profile/%40bot%3Atest.local/x" },
    });
    const profile = await once(roomless, { action: [forbidden] });
    expect(profile.outcome).toMatchObject({ kind: "dead", reason: { status: 403 } });
    expect(profile.homeserver.calls).toHaveLength(1);
  });

  it("403 on a join → dead, not joined again; a virtual user's first join registers it first", async () => {
    const join = send({
      kind: "join",
      userId: GHOST,
      request: { method: "POST", path: `/_matrix/client/v3/join/${encodeURIComponent(ROOM)}` },
    });
    const refusedJoin = answer(403, { errcode: "M_FORBIDDEN", error: "You are not invited" });
    const known = new MemoryOutboxStore();
    known.registered.add(GHOST);
    const registered = await once(join, { join: [refusedJoin] }, known);
    expect(registered.outcome).toEqual({
      kind: "dead",
      reason: { status: 403, errcode: "M_FORBIDDEN", error: "You are not invited" },
    });
    expect(registered.homeserver.steps).toEqual([`${GHOST} POST /join/!room%3Atest.local`]);
    const fresh = await once(join, {
      join: [forbidden, answer(200, { room_id: ROOM })],
      register: [answer(200, { user_id: GHOST })],
    });
    expect(fresh.outcome).toMatchObject({ kind: "done" });
    expect(fresh.homeserver.steps).toEqual([
      `${GHOST} POST /join/!room%3Atest.local`,
      "bot POST /register",
      `${GHOST} POST /join/!room%3Atest.local`,
    ]);
  });

  it("403 for a virtual user: a registration answered M_USER_IN_USE counts as registered; another refusal is final", async () => {
    const inUse = await once(send({ userId: GHOST }), {
      action: [forbidden, answer(200)],
      register: [answer(400, { errcode: "M_USER_IN_USE", error: "taken" })],
    });
    expect(inUse.outcome).toMatchObject({ kind: "done" });
    expect(inUse.store.registered.has(GHOST)).toBe(true);
    const refusedRegistration = await once(send({ userId: GHOST }), {
      action: [forbidden],
      register: [answer(400, { errcode: "M_EXCLUSIVE", error: "reserved" })],
    });
    expect(refusedRegistration.outcome).toEqual({
      kind: "dead",
      reason: { status: 400, errcode: "M_EXCLUSIVE", error: "reserved" },
    });
    expect(refusedRegistration.store.registered.has(GHOST)).toBe(false);
  });

  it("a 403 other than M_FORBIDDEN → dead at once, no register or join", async () => {
    const { outcome, homeserver } = await once(send({ userId: GHOST }), {
      action: [answer(403, { errcode: "M_CONSENT_NOT_GIVEN", error: "consent" })],
    });
    expect(outcome).toEqual({
      kind: "dead",
      reason: { status: 403, errcode: "M_CONSENT_NOT_GIVEN", error: "consent" },
    });
    expect(homeserver.calls).toHaveLength(1);
  });

  it("M_USER_IN_USE on a registration → done", async () => {
    const { outcome } = await once(
      send({ kind: "register", request: { method: "POST", path: "/_matrix/client/v3/register" } }),
      { register: [answer(400, { errcode: "M_USER_IN_USE", error: "taken" })] },
    );
    expect(outcome).toMatchObject({ kind: "done" });
  });

  it("429 → retry after the server's wait: Retry-After first, then retry_after_ms (rounded up), else the backoff", async () => {
    const limited = (retryAfter?: number, body: unknown = { errcode: "M_LIMIT_EXCEEDED" }) =>
      once(send(), { action: [answer(429, body, retryAfter)] });
    expect((await limited(7)).outcome).toEqual({
      kind: "retry",
      delaySeconds: 7,
      reason: "rate limited (429)",
      status: 429,
    });
    expect((await limited(undefined, { retry_after_ms: 1500 })).outcome).toMatchObject({
      delaySeconds: 2,
    });
    expect((await limited(3, { retry_after_ms: 100_000 })).outcome).toMatchObject({
      delaySeconds: 3,
    });
    // Attempt 0 of a 1 s base: a wait of one second.
    expect((await limited(undefined)).outcome).toMatchObject({ kind: "retry", delaySeconds: 1 });
  });

  it("5xx, a timeout and a refused connection → retry with the backoff; unbounded actions count nothing", async () => {
    for (const failure of [answer(500), answer(502, "Bad Gateway"), timeout(), refused()]) {
      const { outcomes, store } = await attempts(send(), [
        { action: [failure] },
        { action: [failure] },
        { action: [failure] },
      ]);
      for (const [attempt, outcome] of outcomes.entries()) {
        expect(outcome.kind).toBe("retry");
        const { delaySeconds } = outcome as { delaySeconds: number };
        expect(delaySeconds).toBeGreaterThanOrEqual(1);
        expect(delaySeconds).toBeLessThanOrEqual(2 ** attempt);
      }
      expect(store.serverErrors.size).toBe(0);
    }
  });

  it("a request the client refuses (RequestRefused) → dead, not retried", async () => {
    const { outcome } = await once(send(), { action: [new RequestRefused("the path is bad")] });
    expect(outcome).toEqual({
      kind: "dead",
      reason: { error: "refused, not sent: the path is bad" },
    });
  });
});

describe("performAction: the action's time budget, the encryption's calls counted", () => {
  const CALL_MS = 20_000;
  /** Every call takes its whole timeout, on a clock the budget reads. */
  const slow = (script: Record<string, Answer[]>) => {
    const clock = { now: 0 };
    const homeserver = new FakeHomeserver(script);
    const timed: HomeserverClient = {
      call: (userId, request) => {
        clock.now += CALL_MS;
        return homeserver.call(userId, request);
      },
    };
    return { clock, homeserver, timed };
  };
  const budgeted = (
    timed: HomeserverClient,
    clock: { now: number },
    roomEncryptor?: RoomEncryptor,
  ) => ({
    ...deps(timed),
    actionBudget: { callTimeoutMs: CALL_MS, budgetMs: actionBudgetMs(CALL_MS) },
    now: () => clock.now,
    ...(roomEncryptor && { roomEncryptor }),
  });
  /** Makes `calls` reads on the action's homeserver, then answers the send encrypted. */
  const encryptorCalling = (calls: number): RoomEncryptor => ({
    encrypt: async (roomSend, homeserver) => {
      for (let i = 0; i < calls; i++) {
        await homeserver.call(roomSend.userId, roomStateRequest(ROOM, "m.room.encryption", ""));
      }
      return { kind: "encrypted", content: { algorithm: "m.megolm.v1.aes-sha2" } };
    },
  });

  it("the worst path's MAX_CALLS_PER_ACTION calls fit, each waiting its whole timeout", async () => {
    const known = new MemoryOutboxStore();
    // Registered by an earlier life, forgotten: M_USER_IN_USE.
    const { clock, homeserver, timed } = slow({
      action: [forbidden, forbidden, answer(200)],
      register: [answer(400, { errcode: "M_USER_IN_USE" })],
      invite: [answer(200)],
      join: [answer(200)],
    });
    const outcome = await performAction(send({ userId: GHOST }), 0, {
      ...budgeted(timed, clock),
      intentMemory: known,
    });
    expect(outcome).toEqual({ kind: "done", status: 200 });
    expect(homeserver.calls).toHaveLength(MAX_CALLS_PER_ACTION);
  });

  it("an encryption's calls count: the call that would overrun is not made, and the action is retried with the backoff, nothing sent", async () => {
    // The encryption's reads and the send: as many calls as the budget has room for.
    const fits = slow({ action: new Array(MAX_CALLS_PER_ACTION).fill(answer(200)) });
    const encrypted = await performAction(
      send(),
      0,
      budgeted(fits.timed, fits.clock, encryptorCalling(MAX_CALLS_PER_ACTION - 1)),
    );
    expect(encrypted).toEqual({ kind: "done", status: 200 });
    expect(fits.homeserver.calls.at(-1)?.request.path).toContain("/send/m.room.encrypted/");

    const overruns = slow({ action: new Array(MAX_CALLS_PER_ACTION).fill(answer(200)) });
    const outcome = await performAction(
      send(),
      2,
      budgeted(overruns.timed, overruns.clock, encryptorCalling(MAX_CALLS_PER_ACTION)),
    );
    expect(outcome).toMatchObject({
      kind: "retry",
      reason: expect.stringContaining("the action's time is spent"),
    });
    expect((outcome as { delaySeconds: number }).delaySeconds).toBeLessThanOrEqual(2 ** 2);
    // The encryption's reads made; neither a seventh call nor the send.
    expect(overruns.homeserver.calls).toHaveLength(MAX_CALLS_PER_ACTION);
    expect(overruns.homeserver.steps.filter((step) => step.includes("/send/"))).toEqual([]);
  });
});

/** A log that keeps each line as `[level, message, attributes]`. */
const recordingLog = () => {
  const lines: [string, string, unknown][] = [];
  const log = Object.fromEntries(
    (["debug", "info", "warn", "error"] as const).map((level) => [
      level,
      (message: string, attributes: unknown) => lines.push([level, message, attributes]),
    ]),
  ) as unknown as OutboundDeps["log"];
  return { lines, log };
};

describe("decideOutboundAction: what the consumer does with the message", () => {
  it("done, retry and dead each name their metric; dead carries the dead letter; each failure is logged", async () => {
    const { lines, log } = recordingLog();
    const decide = (action: OutboundAction, script: Record<string, Answer[]>) =>
      decideOutboundAction(action, 0, { ...deps(new FakeHomeserver(script)), log });
    expect(await decide(send(), { action: [answer(200)] })).toEqual({
      kind: "done",
      metric: "OutboundCallsDone",
    });
    expect(await decide(send(), { action: [answer(429, {}, 4)] })).toEqual({
      kind: "retry",
      delaySeconds: 4,
      reason: "rate limited (429)",
      metric: "OutboundCallsRetried",
    });
    const before = Date.now();
    const dead = await decide(send(), {
      action: [answer(404, { errcode: "M_NOT_FOUND", error: "x" })],
    });
    expect(dead).toEqual({
      kind: "dead",
      deadLetter: {
        action: send(),
        reason: { status: 404, errcode: "M_NOT_FOUND", error: "x" },
        attempts: 1,
        failedAt: expect.any(String),
      },
      metric: "OutboundCallsDeadLettered",
    });
    const failedAt = Date.parse((dead as { deadLetter: { failedAt: string } }).deadLetter.failedAt);
    expect(failedAt).toBeGreaterThanOrEqual(before);
    expect(failedAt).toBeLessThanOrEqual(Date.now());
    // One line per call, which the operator console reads back as the recent traffic.
    expect(lines.map(([level, message]) => `${level} ${message}`)).toEqual([
      "info outbound call done",
      "warn outbound call to retry",
      "error outbound call failed for good: dead-lettered",
    ]);
    expect(lines[0]?.[2]).toMatchObject({ actionId: "a1", kind: "send", status: 200 });
    expect(lines[1]?.[2]).toMatchObject({ actionId: "a1", kind: "send", status: 429, attempt: 0 });
    expect(lines[2]?.[2]).toMatchObject({ actionId: "a1", kind: "send", roomId: ROOM });
  });
});

describe("decideOutboundAction: a retry at the last receive is given up with its reason", () => {
  const last = OUTBOUND_MAX_RECEIVE_COUNT - 1;
  for (const [what, failure, status, retried] of [
    [
      "401 (the as_token refused)",
      answer(401, { errcode: "M_UNKNOWN_TOKEN", error: "Unrecognised access token." }),
      401,
      AS_TOKEN_REFUSED,
    ],
    ["a 5xx (no maxServerErrors)", answer(503, "down"), 503, "homeserver error 503"],
    ["a 429", answer(429, {}, 4), 429, "rate limited (429)"],
    ["a refused connection", refused(), undefined, "homeserver unreachable: fetch failed"],
  ] as const) {
    it(`${what} at attempt ${last} → dead-lettered with the reason and an ERROR line, never left to SQS's redrive`, async () => {
      const { lines, log } = recordingLog();
      const decide = (attempt: number) =>
        decideOutboundAction(send(), attempt, {
          ...deps(new FakeHomeserver({ action: [failure] })),
          log,
        });
      expect((await decide(last - 1)).kind).toBe("retry");
      const reason = {
        ...(status !== undefined && { status }),
        error: `gave up after ${OUTBOUND_MAX_RECEIVE_COUNT} attempts: ${retried}`,
      };
      expect(await decide(last)).toEqual({
        kind: "dead",
        deadLetter: {
          action: send(),
          reason,
          attempts: OUTBOUND_MAX_RECEIVE_COUNT,
          failedAt: expect.any(String),
        },
        metric: "OutboundCallsDeadLettered",
      });
      const deadLines = lines.filter(([, message]) => message === OUTCOME_LOG_MESSAGES.dead);
      expect(deadLines).toEqual([
        ["error", OUTCOME_LOG_MESSAGES.dead, expect.objectContaining({ attempt: last, reason })],
      ]);
    });
  }
});

describe("performAction: a bound on server errors (maxServerErrors)", () => {
  it("dead at the limit-th 5xx or timeout, with the last error; 429s and refused connections do not count", async () => {
    const bounded = send({ maxServerErrors: 3 });
    const { outcomes, store } = await attempts(bounded, [
      { action: [answer(503, { errcode: "M_UNKNOWN", error: "busy" })] },
      { action: [answer(429, {}, 5)] },
      { action: [refused()] },
      { action: [timeout()] },
      { action: [answer(429, { retry_after_ms: 1 })] },
      { action: [answer(500, { errcode: "M_UNKNOWN", error: "Internal server error" })] },
    ]);
    expect(outcomes.map((o) => o.kind)).toEqual([
      "retry",
      "retry",
      "retry",
      "retry",
      "retry",
      "dead",
    ]);
    expect(outcomes[5]).toEqual({
      kind: "dead",
      reason: {
        status: 500,
        errcode: "M_UNKNOWN",
        error: "gave up at server error 3 of 3: Internal server error",
      },
    });
    expect(store.serverErrors.get("a1")).toBe(3);
  });

  it("a 5xx during the register/join recovery counts toward the action's bound", async () => {
    const { outcomes } = await attempts(send({ userId: GHOST, maxServerErrors: 2 }), [
      { action: [forbidden], register: [answer(502, "Bad Gateway")] },
      { action: [forbidden], register: [answer(504, "Gateway Timeout")] },
    ]);
    expect(outcomes[0]?.kind).toBe("retry");
    expect(outcomes[1]).toEqual({
      kind: "dead",
      reason: { status: 504, error: "gave up at server error 2 of 2: Gateway Timeout" },
    });
  });

  it("the encryption's 5xx (a to-device send's, say) count toward the limit; its other failures do not", async () => {
    const failing = (status: number): RoomEncryptor => ({
      encrypt: () => Promise.reject(new EncryptionCallFailed("PUT sendToDevice", status)),
    });
    const store = new MemoryOutboxStore();
    const outcome = (status: number) =>
      performAction(send({ maxServerErrors: 2 }), 0, {
        ...deps(new FakeHomeserver({}), store),
        roomEncryptor: failing(status),
      });
    expect(await outcome(403)).toMatchObject({ kind: "retry" });
    expect(await outcome(500)).toMatchObject({ kind: "retry" });
    expect(await outcome(502)).toEqual({
      kind: "dead",
      reason: {
        status: 502,
        error: "gave up at server error 2 of 2: not encrypted, so not sent: PUT sendToDevice: 502",
      },
    });
  });

  it("a limit of 1 gives up at the first 5xx; success before the limit is done", async () => {
    expect(
      (await once(send({ maxServerErrors: 1 }), { action: [answer(500)] })).outcome,
    ).toMatchObject({ kind: "dead", reason: { status: 500 } });
    const { outcomes } = await attempts(send({ maxServerErrors: 8 }), [
      ...Array.from({ length: 7 }, () => ({ action: [answer(500)] })),
      { action: [answer(200)] },
    ]);
    expect(outcomes.map((o) => o.kind)).toEqual([...Array(7).fill("retry"), "done"]);
  });
});

describe("performAction: only what the appservice may ask (allowlist)", () => {
  const refusedRequests: [string, Partial<ClientServerRequest>, string][] = [
    ["Synapse's admin API", { path: "/_synapse/admin/v1/users/@_as_x:test.local" }, "outside"],
    ["the federation API", { path: "/_matrix/federation/v1/send/1" }, "outside"],
    ["the key API", { path: "/_matrix/key/v2/server" }, "outside"],
    ["the appservice API", { path: "/_matrix/app/v1/transactions/1" }, "outside"],
    ["a prefix without its slash", { path: "/_matrix/clientx/v3/x" }, "outside"],
    ["an absolute URL", { path: "https://evil.example/_matrix/client/v3/x" }, "outside"],
    ["a protocol-relative URL", { path: "//evil.example/_matrix/client/v3/x" }, "outside"],
    ["userinfo before a host", { path: "@evil.example/_matrix/client/v3/x" }, "outside"],
    ["// inside", { path: "/_matrix/client//evil.example/x" }, "empty segment"],
    ["..", { path: "/_matrix/client/v3/../../_synapse/admin/v1/users" }, "dot segment"],
    [".", { path: "/_matrix/client/./v3/x" }, "dot segment"],
    ["%2e%2e", { path: "/_matrix/client/v3/%2e%2e/%2E%2E/_synapse/admin" }, "dot segment"],
    [".%2E", { path: "/_matrix/client/v3/.%2E/x" }, "dot segment"],
    ["..%2F", { path: "/_matrix/client/v3/..%2F_synapse" }, "dot segment"],
    ["%252e%252e", { path: "/_matrix/client/v3/%252e%252e/x" }, "dot segment"],
    ["a backslash", { path: "/_matrix/client/v3/a\\..\\..\\x" }, "character"],
    [
      "a query in the path",
      { path: "/_matrix/client/v3/x?user_id=@admin:test.local" },
      "character",
    ],
    ["a fragment", { path: "/_matrix/client/v3/x#y" }, "character"],
    ["a space", { path: "/_matrix/client/v3/a b" }, "character"],
    ["raw non-ASCII", { path: "/_matrix/client/v3/é" }, "character"],
    ["a bad escape", { path: "/_matrix/client/v3/%zz" }, "character"],
    ["an escape that is not UTF-8", { path: "/_matrix/client/v3/%ff" }, "UTF-8"],
    ["PATCH", { method: "PATCH" as "PUT" }, "method"],
    ["HEAD", { method: "HEAD" as "PUT" }, "method"],
    ["a lower-case method", { method: "put" as "PUT" }, "method"],
    ["user_id in the query", { query: { user_id: "@admin:test.local" } }, "user_id"],
    ["access_token in the query", { query: { access_token: "x" } }, "access_token"],
    ["a query value that is not a string", { query: { ts: 1 as unknown as string } }, "string"],
  ];
  for (const [what, request, reason] of refusedRequests) {
    it(`refuses ${what}: dead-lettered unsent`, async () => {
      const action = send({ request: { ...send().request, ...request } });
      const homeserver = new FakeHomeserver({ action: [answer(200)] });
      const outcome = await performAction(action, 0, deps(homeserver));
      expect(outcome).toEqual({
        kind: "dead",
        reason: { error: expect.stringMatching(/^refused, not sent: /) },
      });
      expect((outcome as { reason: { error: string } }).reason.error).toContain(reason);
      expect(homeserver.calls).toEqual([]);
    });
  }

  it("refuses acting users outside the namespaces, and actions of the wrong shape", async () => {
    const refusedActions: [unknown, string][] = [
      [send({ userId: "@admin:test.local" }), "outside the registration's user namespaces"],
      [send({ userId: "@_as_x:evil.example" }), "outside the registration's user namespaces"],
      [send({ userId: " @bot:test.local" }), "outside the registration's user namespaces"],
      [null, "not an object"],
      ["a string", "not an object"],
      [{ ...send(), request: undefined }, "not an object"],
      [{ ...send(), id: undefined }, "id"],
      [{ ...send(), id: "x".repeat(129) }, "id"],
      [{ ...send(), kind: 1 }, "kind"],
      [{ ...send(), userId: 1 }, "userId"],
      [{ ...send(), roomId: {} }, "roomId"],
      [send({ maxServerErrors: 0 }), "maxServerErrors"],
      [send({ maxServerErrors: 1.5 }), "maxServerErrors"],
      [{ ...send(), maxServerErrors: "8" }, "maxServerErrors"],
    ];
    for (const [action, reason] of refusedActions) {
      const homeserver = new FakeHomeserver({ action: [answer(200)] });
      const outcome = await performAction(action as OutboundAction, 0, deps(homeserver));
      expect(outcome, JSON.stringify(action)).toMatchObject({ kind: "dead" });
      expect((outcome as { reason: { error: string } }).reason.error).toContain(reason);
      expect(homeserver.calls).toEqual([]);
    }
  });

  it("performs the bot's and the namespace's users' calls: client-server, media, an empty state key, escapes", async () => {
    const allowed: OutboundAction[] = [
      send(),
      send({ userId: GHOST }),
      send({ request: { method: "POST", path: "/_matrix/media/v3/upload", query: { ts: "1" } } }),
      send({ request: { method: "GET", path: "/_matrix/client/v1/media/config" } }),
      send({
        request: { method: "PUT", path: "/_matrix/client/v3/rooms/!r%3Ax/state/m.room.name/" },
      }),
      send({ request: { method: "DELETE", path: "/_matrix/client/v3/directory/room/%23a%3Ax" } }),
      send({ request: { method: "GET", path: "/_matrix/client/v3/rooms/!r/state/t/a..b%2F.x" } }),
    ];
    for (const action of allowed) {
      const homeserver = new FakeHomeserver({ action: [answer(200)] });
      expect(await performAction(action, 0, deps(homeserver))).toMatchObject({ kind: "done" });
      expect(homeserver.calls).toHaveLength(1);
    }
  });

  it("every action the Actions API builds passes, whatever its IDs and texts, but for empty IDs and dot segments", async () => {
    const sent: FifoMessage[] = [];
    const actions = createActions({
      botUserId: BOT,
      outboundQueue: { send: async (messages) => void sent.push(...messages) },
      origin: "$event",
    }).withServerErrorLimit(8);
    const text = fc.oneof(
      fc.string({ unit: "binary", maxLength: 40 }),
      fc.constantFrom("", ".", "..", "../x", "a/./b", "%2e%2E", "a..b", "%"),
    );
    // A namespace regex's `.` matches no line break (as in Synapse): such a user is not ours.
    const localparts = text.filter((value) => !/[\n\r\u2028\u2029]/.test(value));
    const dotPiece = (value: string) =>
      value.split(/[/\\]/).some((piece) => /^(?:\.|%2e){1,2}$/i.test(piece));
    await fc.assert(
      fc.asyncProperty(text, text, text, localparts, async (roomId, type, stateKey, localpart) => {
        sent.length = 0;
        const as = `@_as_${localpart}:test.local`;
        await actions.sendEvent(roomId, type, { body: stateKey }, { as, ts: 1 });
        await actions.sendState(roomId, type, stateKey, {}, { as });
        await actions.redact(roomId, stateKey, { as, reason: type });
        await actions.join(roomId, { as });
        await actions.invite(roomId, as);
        await actions.setDisplayName(stateKey, { as, orderedWith: roomId });
        await actions.setTyping(roomId, true, { as });
        await actions.sendReceipt(roomId, stateKey, { as });
        await actions.sendToDevice(type, { [as]: { [stateKey]: { body: roomId } } }, { as });
        await actions.setDirectoryVisibility(type, roomId, "public");
        await actions.register(as);
        await actions.createRoom({ alias: localpart, as });
        for (const message of sent) {
          const action = JSON.parse(message.body) as OutboundAction;
          expect(action.maxServerErrors).toBe(8);
          const problem = actionProblem(action, (u) => u === BOT || namespaces.matches("users", u));
          if (problem?.includes("empty segment")) {
            // An empty ID or type (not a state key, which may be empty: it ends the path).
            expect([roomId, type, stateKey]).toContain("");
          } else if (problem) {
            // A parameter that is `.` or `..`, which a URL parser would resolve away.
            expect(problem).toContain("dot segment");
            expect([roomId, type, stateKey, as].some(dotPiece)).toBe(true);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it("a path that passes keeps the URL at the homeserver's origin, its path as written (property)", () => {
    const pieces = [
      ...["a", "é", " ", "%", "2e", "%2e", "%2E", "%25", "%2F", "%ff", "%41"],
      ...[".", "..", "/", "//", "\\", "?", "#", "@", ":", "evil.example", "!", "$", "'"],
    ];
    let passed = 0;
    fc.assert(
      fc.property(
        fc.constantFrom("/_matrix/client/", "/_matrix/media/", "//", "/", "", "@"),
        fc.array(fc.constantFrom(...pieces), { maxLength: 12 }),
        fc.constantFrom("http://127.0.0.1:8008", "https://matrix.example.org/base"),
        (prefix, rest, base) => {
          const path = prefix + rest.join("");
          if (requestProblem({ method: "GET", path }) !== undefined) return;
          passed++;
          const url = new URL(base + path);
          expect(url.origin).toBe(new URL(base).origin);
          expect(url.pathname).toBe(new URL(base).pathname.replace(/\/$/, "") + path);
          expect(url.search + url.hash).toBe("");
        },
      ),
      { numRuns: 2000 },
    );
    expect(passed).toBeGreaterThan(50);
  });

  it("the HTTP client refuses such a request itself, before any connection", async () => {
    // Port 9 (discard) is closed here: a request that went out would fail with a network error.
    const client = new HttpHomeserverClient("http://127.0.0.1:9", "token", BOT, 1000);
    for (const path of ["/_synapse/admin/v1/x", "/_matrix/client/v3/%2e%2e/x", "@evil.example/x"]) {
      await expect(client.call(BOT, { method: "GET", path })).rejects.toBeInstanceOf(
        RequestRefused,
      );
    }
    await expect(
      client.call(BOT, { method: "GET", path: "/_matrix/client/v3/x", query: { user_id: GHOST } }),
    ).rejects.toThrow(/user_id/);
    await expect(client.call(BOT, { method: "GET", path: "/_matrix/client/v3/x" })).rejects.toThrow(
      "fetch failed",
    );
  });
});

describe("backoff", () => {
  const policy = { baseSeconds: 1, capSeconds: 300 };

  it("full jitter: a wait between 1 s and base·2^attempt, capped; never 0, never past the cap", () => {
    for (const attempt of [0, 1, 2, 5, 8, 9, 30, 1000]) {
      const ceiling = Math.min(300, 2 ** Math.min(attempt, 30));
      expect(backoffSeconds(attempt, policy, () => 0)).toBe(1);
      expect(backoffSeconds(attempt, policy, () => 0.999_999)).toBe(ceiling);
      expect(backoffSeconds(attempt, policy, () => 0.5)).toBe(Math.max(1, Math.ceil(ceiling / 2)));
    }
    expect(backoffSeconds(3, { baseSeconds: 5, capSeconds: 30 }, () => 0.999)).toBe(30);
    expect(backoffSeconds(2, { baseSeconds: 5, capSeconds: 30 }, () => 0.999)).toBe(20);
  });

  it("spreads its waits over the whole range (Math.random)", () => {
    const waits = Array.from({ length: 2000 }, () => backoffSeconds(12, policy));
    expect(Math.min(...waits)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...waits)).toBeLessThanOrEqual(300);
    expect(new Set(waits).size).toBeGreaterThan(200);
    const mean = waits.reduce((sum, wait) => sum + wait, 0) / waits.length;
    // Uniform over 1..300: 150.5, with a standard error of about 2.
    expect(mean).toBeGreaterThan(130);
    expect(mean).toBeLessThan(170);
  });

  it("a 429's wait: Retry-After (seconds) first, then retry_after_ms, rounded up, at least 1 s", () => {
    expect(rateLimitSeconds(2.1, { retry_after_ms: 10_000 })).toBe(3);
    expect(rateLimitSeconds(undefined, { retry_after_ms: 1500 })).toBe(2);
    expect(rateLimitSeconds(undefined, { retry_after_ms: 0 })).toBe(1);
    expect(rateLimitSeconds(undefined, { retry_after_ms: -5 })).toBeUndefined();
    expect(rateLimitSeconds(undefined, { retry_after_ms: "5" })).toBeUndefined();
    expect(rateLimitSeconds(undefined, "Too Many Requests")).toBeUndefined();
    expect(rateLimitSeconds(undefined, undefined)).toBeUndefined();
  });
});

describe("decideOutboundMessage: nothing is left to SQS's redrive, which gives no reason", () => {
  it("an unexpected failure throws (the message comes back), and is dead-lettered with its reason at the last receive before the redrive", async () => {
    const { lines, log } = recordingLog();
    const store = new MemoryOutboxStore();
    const failing = {
      ...deps(new FakeHomeserver({ action: [answer(403, { errcode: "M_FORBIDDEN" })] }), store),
      log,
      intentMemory: {
        ...store,
        user: () => Promise.reject(new Error("table unreachable")),
      } as unknown as OutboundDeps["intentMemory"],
    };
    const ghost = JSON.stringify(send({ userId: GHOST }));
    const reason = {
      error: `gave up after ${OUTBOUND_MAX_RECEIVE_COUNT} attempts: table unreachable`,
    };
    await expect(decideOutboundMessage(ghost, 0, failing)).rejects.toThrow("table unreachable");
    const last = OUTBOUND_MAX_RECEIVE_COUNT - 1;
    const decision = await decideOutboundMessage(ghost, last, {
      ...failing,
      homeserver: new FakeHomeserver({ action: [answer(403, { errcode: "M_FORBIDDEN" })] }),
    });
    // An action still: dead-lettered as one, which the operator console can replay.
    expect(decision).toEqual({
      kind: "dead",
      deadLetter: {
        action: send({ userId: GHOST }),
        reason,
        attempts: OUTBOUND_MAX_RECEIVE_COUNT,
        failedAt: expect.any(String),
      },
      metric: "OutboundCallsDeadLettered",
    });
    expect(lines.filter(([level]) => level === "error")).toEqual([
      [
        "error",
        "outbound call failed for good: dead-lettered",
        {
          actionId: "a1",
          kind: "send",
          attempt: last,
          reason,
        },
      ],
    ]);
  });
});
