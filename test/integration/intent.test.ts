import { randomUUID } from "node:crypto";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import {
  INBOUND_RETRY,
  processInboundMessage,
} from "../../functions/appservice/pipeline/process-inbound.ts";
import { serviceContext } from "../../functions/appservice/service-context.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { createActions } from "../../functions/matrix/actions.ts";
import { BotProfileKeeper, botProfile } from "../../functions/matrix/bot-profile.ts";
import { HttpHomeserverCalls } from "../../functions/matrix/homeserver-calls.ts";
import { HttpHomeserverClient } from "../../functions/matrix/http-client.ts";
import { type OutboxDeps, performAction } from "../../functions/matrix/outbox.ts";
import type { OutboundAction } from "../../functions/matrix/request.ts";
import {
  CALL_RECORDS_KEY_PREFIX,
  DynamoDbAppData,
} from "../../functions/store/dynamodb/app-data.ts";
import { DynamoDbIntentMemory } from "../../functions/store/dynamodb/intent-memory.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { messageLinker } from "../../functions/store/messages.ts";
import { makeEvent, noServices } from "../support/appservice.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

// The Intent (functions/matrix/intent.ts) is the one place that registers users and lets them
// into rooms, for the outbox and for the immediate calls alike, over one memory in the table:
// what one did, the other does not do again.

const SERVER = "intent.test";
const BOT = `@bot:${SERVER}`;
const quiet = noServices.log;

describe("one Intent for the outbox and the immediate calls (scripted homeserver, DynamoDB Local)", () => {
  const dynamodb = localDynamoDb(inject("dynamodbEndpoint"));
  let homeserver: ScriptedHomeserver;
  afterEach(() => homeserver?.stop());
  afterAll(() => dynamodb.destroy());

  /** A homeserver and a table of their own; the calls and the outbox over the one memory. */
  const setUp = async () => {
    homeserver = new ScriptedHomeserver("as-token", SERVER, BOT, (user) =>
      user.startsWith("@_as_"),
    );
    await homeserver.start();
    const tableName = `intent-${randomUUID().slice(0, 8)}`;
    await ensureTable(dynamodb, tableName);
    const memory = new DynamoDbIntentMemory(dynamodb, tableName);
    const store = new DynamoDbStore(dynamodb, tableName);
    const client = new HttpHomeserverClient(homeserver.url, "as-token", BOT, 2_000);
    const calls = new HttpHomeserverCalls({
      homeserver: client,
      botUserId: BOT,
      records: new DynamoDbAppData(dynamodb, tableName, CALL_RECORDS_KEY_PREFIX),
      intentMemory: memory,
      ownsAlias: (alias) => alias.startsWith("#_as_"),
      derivedAliasPrefix: "_as_",
      log: quiet,
    });
    const outboxDeps: OutboxDeps = {
      homeserver: client,
      intentMemory: memory,
      messages: messageLinker(new DynamoDbAppData(dynamodb, tableName)),
      serverErrors: store,
      sentEvents: store,
      botUserId: BOT,
      isOurUser: (userId) => userId.startsWith("@_as_"),
      backoff: { baseSeconds: 1, capSeconds: 1 },
      log: quiet,
      botProfile: new BotProfileKeeper(BOT, botProfile("Bot"), memory, quiet),
    };
    const queued: OutboundAction[] = [];
    const actions = createActions({
      botUserId: BOT,
      outboundQueue: {
        send: async (messages) => void queued.push(...messages.map((m) => JSON.parse(m.body))),
      },
      origin: `intent-${randomUUID()}`,
    });
    /** Runs the queued actions through the outbox, each once, in order. */
    const drain = async () => {
      const outcomes = [];
      for (const action of queued.splice(0)) {
        outcomes.push(await performAction(action, 0, outboxDeps));
      }
      return outcomes;
    };
    /** The events function's pipeline, given the homeserver's push of `event`. */
    const receive = (event: ReturnType<typeof makeEvent>) =>
      processInboundMessage(
        { txnId: `pushed-${randomUUID()}`, items: [{ kind: "event", id: event.event_id, event }] },
        { owner: `run-${randomUUID()}`, groupId: event.room_id },
        {
          claims: store,
          application: {},
          log: quiet,
          leaseMs: 60_000,
          contextFor: (origin) => serviceContext(noServices, origin),
          retry: INBOUND_RETRY,
          setAsideItems: { get: () => Promise.reject(new Error("no reference expected")) },
          deadLetters: { deadLetter: () => Promise.reject(new Error("no dead letter expected")) },
          intentMemory: memory,
          ownsUser: (userId) => userId.startsWith("@_as_"),
          botUserId: BOT,
        },
      );
    return { calls, actions, drain, memory, receive };
  };

  /** The homeserver's requests from `from` on, as `<actor> <method> <path>`. */
  const stepsFrom = (from: number) =>
    homeserver.requests
      .slice(from)
      .map(
        (r) =>
          `${r.query.user_id ?? "bot"} ${r.method} ${decodeURIComponent(r.path.replace("/_matrix/client/v3", ""))}`,
      );
  const withoutTxnId = (step: string) => step.replace(/(\/send\/[^/]+)\/.*$/, "$1");
  const room = (name: string, inviteOnly = true) => {
    const roomId = `!${name}-${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.createRoom(roomId, [BOT], { inviteOnly });
    return roomId;
  };

  it("a puppet into a room it cannot join uninvited: registered, its profile, invited by the bot, joined, then its look there; once", async () => {
    const { calls } = await setUp();
    const roomId = room("portal");
    const puppet = `@_as_alice:${SERVER}`;
    const options = {
      displayName: "Alice",
      roomId,
      roomProfile: { displayName: "Alice (portal)" },
    };
    await calls.ensurePuppet(puppet, options);
    expect(stepsFrom(0)).toEqual([
      "bot POST /register",
      `${puppet} PUT /profile/${puppet}/displayname`,
      `bot POST /rooms/${roomId}/invite`,
      `${puppet} POST /join/${roomId}`,
      `${puppet} PUT /rooms/${roomId}/state/m.room.member/${puppet}`,
    ]);
    // No join was refused: the invite came first.
    expect(homeserver.requests.every((r) => r.status === 200)).toBe(true);
    expect(await calls.joinedMembers(roomId)).toMatchObject({
      [puppet]: { displayName: "Alice (portal)" },
    });
    const before = homeserver.requests.length;
    await calls.ensurePuppet(puppet, options);
    expect(homeserver.requests.length).toBe(before);
  });

  it("a user the outbox registered and let in is neither registered nor joined again by ensurePuppet", async () => {
    const { calls, actions, drain } = await setUp();
    const roomId = room("outbox-first");
    const ghost = `@_as_ghost:${SERVER}`;
    await actions.sendMessage(roomId, "hello", { as: ghost });
    expect(await drain()).toEqual([{ kind: "done", status: 200 }]);
    expect(stepsFrom(0).map(withoutTxnId)).toEqual([
      `${ghost} PUT /rooms/${roomId}/send/m.room.message`,
      "bot POST /register",
      `bot POST /rooms/${roomId}/invite`,
      `${ghost} POST /join/${roomId}`,
      `${ghost} PUT /rooms/${roomId}/send/m.room.message`,
    ]);
    const before = homeserver.requests.length;
    await calls.ensurePuppet(ghost, { roomId });
    expect(stepsFrom(before)).toEqual([]);
  });

  it("a puppet ensurePuppet registered is not registered again by the outbox: in another room, only invited and joined", async () => {
    const { calls, actions, drain } = await setUp();
    const [first, second] = [room("first"), room("second")];
    const puppet = `@_as_bob:${SERVER}`;
    await calls.ensurePuppet(puppet, { displayName: "Bob", roomId: first });
    const before = homeserver.requests.length;
    await actions.sendMessage(first, "in the first", { as: puppet });
    await actions.sendMessage(second, "in the second", { as: puppet });
    expect(await drain()).toEqual([
      { kind: "done", status: 200 },
      { kind: "done", status: 200 },
    ]);
    const steps = stepsFrom(before);
    expect(steps.filter((step) => step.endsWith("/register"))).toEqual([]);
    expect(steps.map(withoutTxnId)).toEqual([
      `${puppet} PUT /rooms/${first}/send/m.room.message`,
      `${puppet} PUT /rooms/${second}/send/m.room.message`,
      `bot POST /rooms/${second}/invite`,
      `${puppet} POST /join/${second}`,
      `${puppet} PUT /rooms/${second}/send/m.room.message`,
    ]);
    // And the outbox's join is remembered: ensurePuppet has nothing left to do there.
    const after = homeserver.requests.length;
    await calls.ensurePuppet(puppet, { displayName: "Bob", roomId: second });
    expect(stepsFrom(after)).toEqual([]);
  });

  it("a leave the outbox did is remembered: ensurePuppet lets the puppet in again; a kick it did not see, the refused look repairs", async () => {
    const { calls, actions, drain, memory } = await setUp();
    const roomId = room("leaving");
    const puppet = `@_as_carol:${SERVER}`;
    await calls.ensurePuppet(puppet, { roomId });
    await actions.leave(roomId, { as: puppet });
    expect(await drain()).toEqual([{ kind: "done", status: 200 }]);
    expect(await memory.member(roomId, puppet)).toBeUndefined();
    let before = homeserver.requests.length;
    await calls.ensurePuppet(puppet, { roomId });
    expect(stepsFrom(before)).toEqual([
      `bot POST /rooms/${roomId}/invite`,
      `${puppet} POST /join/${roomId}`,
    ]);
    // Out of the room behind the memory's back (kicked by someone else, say).
    homeserver.rooms.get(roomId)?.delete(puppet);
    homeserver.invites.get(roomId)?.delete(puppet);
    before = homeserver.requests.length;
    await calls.ensurePuppet(puppet, { roomId, roomProfile: { displayName: "Carol (here)" } });
    expect(stepsFrom(before)).toEqual([
      `${puppet} PUT /rooms/${roomId}/state/m.room.member/${puppet}`,
      `bot POST /rooms/${roomId}/invite`,
      `${puppet} POST /join/${roomId}`,
      `${puppet} PUT /rooms/${roomId}/state/m.room.member/${puppet}`,
    ]);
    expect(await memory.member(roomId, puppet)).toEqual({ displayname: "Carol (here)" });
  });

  it("a kick the homeserver pushes is forgotten: ensurePuppet lets the puppet in again", async () => {
    const { calls, memory, receive } = await setUp();
    const roomId = room("kicked");
    const puppet = `@_as_dave:${SERVER}`;
    await calls.ensurePuppet(puppet, { roomId });
    // Kicked by someone else: unseen, the memory says it is in, and nothing is done.
    homeserver.rooms.get(roomId)?.delete(puppet);
    homeserver.invites.get(roomId)?.delete(puppet);
    let before = homeserver.requests.length;
    await calls.ensurePuppet(puppet, { roomId });
    expect(stepsFrom(before)).toEqual([]);
    const membership = (stateKey: string, value: string) =>
      makeEvent(roomId, "", {
        type: "m.room.member",
        sender: `@mod:${SERVER}`,
        state_key: stateKey,
        content: { membership: value },
      });
    // A user not ours changes nothing of the memory.
    await receive(membership(`@bob:${SERVER}`, "ban"));
    expect(await memory.member(roomId, puppet)).toEqual({});
    // The kick, pushed: forgotten, so the puppet is let in again.
    expect(await receive(membership(puppet, "leave"))).toMatchObject({ handled: 1 });
    expect(await memory.member(roomId, puppet)).toBeUndefined();
    before = homeserver.requests.length;
    await calls.ensurePuppet(puppet, { roomId });
    expect(stepsFrom(before)).toEqual([
      `bot POST /rooms/${roomId}/invite`,
      `${puppet} POST /join/${roomId}`,
    ]);
    // A ban is forgotten too.
    await receive(membership(puppet, "ban"));
    expect(await memory.member(roomId, puppet)).toBeUndefined();
  });
});
