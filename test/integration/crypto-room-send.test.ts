import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ensureBotDevice } from "../../functions/crypto/bot-device.ts";
import { openUserDevice } from "../../functions/crypto/device-crypto.ts";
import { DurableOlmMachine } from "../../functions/crypto/durable-machine.ts";
import { DeviceRoomEncryptor } from "../../functions/crypto/room-encryptor.ts";
import { WarmMachines } from "../../functions/crypto/warm-machines.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { createActions } from "../../functions/matrix/actions.ts";
import { BotProfileKeeper, botProfile } from "../../functions/matrix/bot-profile.ts";
import { HttpHomeserverClient } from "../../functions/matrix/http-client.ts";
import { type OutboxDeps, performAction } from "../../functions/matrix/outbox.ts";
import type { HomeserverClient, OutboundAction } from "../../functions/matrix/request.ts";
import type { RoomEncryptor } from "../../functions/matrix/room-encryptor.ts";
import type { FifoMessage } from "../../functions/queue/queue.ts";
import type { Log } from "../../functions/shared/log.ts";
import { DynamoDbAppData } from "../../functions/store/dynamodb/app-data.ts";
import { DynamoDbCryptoStateStore } from "../../functions/store/dynamodb/crypto-state.ts";
import { DynamoDbIntentMemory } from "../../functions/store/dynamodb/intent-memory.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { messageLinker } from "../../functions/store/messages.ts";
import { noServices } from "../support/appservice.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";
import { appserviceCalls } from "../support/homeserver-crypto.ts";

const SERVER = "test.local";
const BOT = `@bot:${SERVER}`;
const MEGOLM = { algorithm: "m.megolm.v1.aes-sha2" };

describe("the outbox's sends into encrypted rooms", () => {
  const dynamodb = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `crypto-send-${randomUUID().slice(0, 8)}`;
  const store = new DynamoDbStore(dynamodb, tableName);
  const intentMemory = new DynamoDbIntentMemory(dynamodb, tableName);
  const cryptoStore = new DynamoDbCryptoStateStore(dynamodb, tableName);
  const ours = (userId: string) => userId.startsWith("@_as_");
  const homeserver = new ScriptedHomeserver("as-token", SERVER, BOT, ours);
  const owner = { userId: BOT, deviceId: "BOTDEVICE" };
  const storeKey = randomBytes(32);
  const infos: string[] = [];
  const log: Log = { ...noServices.log, info: (message) => infos.push(message) };
  let alice: CryptoPerson;
  /** A person whose device is not cross-signed: strict senders share no room key with it. */
  let mallory: CryptoPerson;

  const http = appserviceCalls(() => homeserver.url, "as-token");
  const open = () => DurableOlmMachine.open(cryptoStore, owner, storeKey);
  const encryptorOpening = (opener: (userId: string) => Promise<DurableOlmMachine>) =>
    new DeviceRoomEncryptor({ open: opener, log });
  const outboxDeps = (roomEncryptor: RoomEncryptor, timeoutMs = 10_000): OutboxDeps => ({
    homeserver: new HttpHomeserverClient(homeserver.url, "as-token", BOT, timeoutMs),
    intentMemory,
    messages: messageLinker(new DynamoDbAppData(dynamodb, tableName)),
    serverErrors: store,
    sentEvents: store,
    botUserId: BOT,
    isOurUser: ours,
    backoff: { baseSeconds: 1, capSeconds: 1 },
    log,
    botProfile: new BotProfileKeeper(BOT, botProfile("Bot"), intentMemory, log),
    roomEncryptor,
  });
  /** The action `sendMessage` queues, as the outbox receives it. */
  const queuedMessage = async (roomId: string, text: string, as?: string) => {
    const queued: OutboundAction[] = [];
    const actions = createActions({
      botUserId: BOT,
      outboundQueue: {
        send: async (messages) => void queued.push(...messages.map((m) => JSON.parse(m.body))),
      },
      origin: `encrypted-${randomUUID()}`,
    });
    await actions.sendMessage(roomId, text, as === undefined ? {} : { as });
    return queued[0] as OutboundAction;
  };
  const encryptedRoom = (members: string[]) => {
    const roomId = `!encrypted-${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.createRoom(roomId, members);
    homeserver.setState(roomId, "m.room.encryption", "", MEGOLM);
    return roomId;
  };
  /** The `PUT /sendToDevice` requests made since `from`, by the bot's device. */
  const toDeviceSince = (from: number) =>
    homeserver.requests
      .slice(from)
      .filter((r) => r.method === "PUT" && r.path.startsWith("/_matrix/client/v3/sendToDevice/"));
  const targets = (requests: { body?: unknown }[]) =>
    requests.flatMap((r) =>
      Object.entries(
        (r.body as { messages: Record<string, Record<string, unknown>> }).messages,
      ).flatMap(([user, byDevice]) => Object.keys(byDevice).map((device) => `${user} ${device}`)),
    );
  const sentWith = (txnId: string) => homeserver.sent.filter((e) => e.txnId === txnId);
  /** The body of the event sent under `txnId`, as Alice's strict client decrypts it. */
  const bodyAliceReads = async (txnId: string) => {
    await alice.sync();
    const event = alice.event(sentWith(txnId)[0]?.eventId as string);
    return (await alice.decrypt(event)).content.body;
  };

  beforeAll(async () => {
    await Promise.all([ensureTable(dynamodb, tableName), homeserver.start()]);
    const device = await ensureBotDevice({ http, store: cryptoStore, owner, storeKey, log });
    await device.machine.close();
    expect(device.crossSigned).toBe(true);
    alice = await CryptoPerson.create(homeserver, "alice");
    mallory = await CryptoPerson.create(homeserver, "mallory", { crossSigned: false });
    // Their clients track the bot, a member of their encrypted rooms.
    await alice.track([BOT]);
    await mallory.track([BOT]);
  });
  afterAll(async () => {
    alice?.close();
    mallory?.close();
    await homeserver.stop();
    dynamodb.destroy();
  });

  it("sends the bot's message encrypted: a strict person decrypts it from the bot's trusted device, an uncross-signed one gets no key, nothing in clear", async () => {
    const room = encryptedRoom([BOT, alice.userId, mallory.userId]);
    const secret = `the pong ${randomUUID()}`;
    const action = await queuedMessage(room, secret);
    const from = homeserver.requests.length;
    expect(await performAction(action, 0, outboxDeps(encryptorOpening(open)))).toEqual({
      kind: "done",
      status: 200,
    });

    const [sent] = sentWith(action.id);
    expect(sentWith(action.id)).toHaveLength(1);
    expect(sent).toMatchObject({ roomId: room, sender: BOT, type: "m.room.encrypted" });
    // Nothing the homeserver was asked carries the text.
    expect(JSON.stringify(homeserver.requests.slice(from))).not.toContain(secret);
    // The room key went to Alice's device over Olm; Mallory's was told it is withheld.
    const toDevice = toDeviceSince(from);
    const olm = toDevice.filter((r) => r.path.includes("/m.room.encrypted/"));
    const withheld = toDevice.filter((r) => r.path.includes("/m.room_key.withheld/"));
    expect(targets(olm)).toEqual([`${alice.userId} ${alice.deviceId}`]);
    expect(targets(withheld)).toEqual([`${mallory.userId} ${mallory.deviceId}`]);

    await alice.sync();
    // Decrypted under the strict policy: the bot's device is cross-signed by the bot.
    expect(await alice.decrypt(alice.event(sent?.eventId as string))).toEqual({
      type: "m.room.message",
      content: { msgtype: "m.text", body: secret },
      senderDevice: owner.deviceId,
    });
    await mallory.sync();
    await expect(mallory.decrypt(mallory.event(sent?.eventId as string))).rejects.toMatchObject({
      code: mallory.sdk.DecryptionErrorCode.MissingRoomKey,
    });
  });

  const toDeviceSend = (r: { path: string }) =>
    r.path.startsWith("/_matrix/client/v3/sendToDevice/");
  const roomEventSend = (r: { path: string }) => r.path.includes("/send/m.room.encrypted/");
  it.each([
    { step: "at the first to-device send", match: toDeviceSend, cue: { hang: true } as const },
    { step: "at the room event's send", match: roomEventSend, cue: { hang: true } as const },
    {
      step: "after the room event's send, its answer lost",
      match: roomEventSend,
      cue: { loseAnswer: true } as const,
    },
  ])(
    "killed after the save, $step: a new process sends the same ciphertexts under the same txnIds, and the sessions go on",
    async ({ match, cue }) => {
      const room = encryptedRoom([BOT, alice.userId]);
      const action = await queuedMessage(room, "once, though sent twice");
      const from = homeserver.requests.length;
      // The state and the ciphertexts are saved; then the process dies (its machine kept warm
      // with it): the call never ends, or its answer never comes.
      homeserver.cue(match, cue);
      const warm = openUserDevice({
        http,
        store: cryptoStore,
        storeKey,
        log,
        deviceIdOf: () => owner.deviceId,
        machines: new WarmMachines(),
      });
      const crashed = await performAction(action, 0, outboxDeps(encryptorOpening(warm), 500));
      expect(crashed).toMatchObject({ kind: "retry" });
      const saved = (await cryptoStore.load(owner))?.version;

      // The next process opens the device from the store.
      const deps = outboxDeps(encryptorOpening(open));
      expect(await performAction(action, 1, deps)).toEqual({ kind: "done", status: 200 });
      // Not encrypted again: the retry sent what was saved, and saved nothing more.
      expect((await cryptoStore.load(owner))?.version).toBe(saved);
      const toDevice = toDeviceSince(from);
      expect(toDevice).toHaveLength(2);
      expect(toDevice[1]?.path).toBe(toDevice[0]?.path);
      expect(toDevice[1]?.body).toEqual(toDevice[0]?.body);
      expect(sentWith(action.id)).toHaveLength(1);

      // Sent again whole (the room event's answer lost, say): the homeserver's txnIds keep one.
      expect(await performAction(action, 2, deps)).toEqual({ kind: "done", status: 200 });
      const rooms = homeserver.requests.slice(from).filter(roomEventSend);
      expect(rooms.length).toBeGreaterThanOrEqual(2);
      expect(new Set(rooms.map((r) => JSON.stringify(r.body))).size).toBe(1);
      expect(sentWith(action.id)).toHaveLength(1);
      expect(await bodyAliceReads(action.id)).toBe("once, though sent twice");

      // No session broken: the next message, on the same room key, decrypts.
      const later = await queuedMessage(room, "and the next one");
      expect(await performAction(later, 0, deps)).toEqual({ kind: "done", status: 200 });
      expect(await bodyAliceReads(later.id)).toBe("and the next one");
    },
  );

  /**
   * The outbox's dependencies with a small budget (6 s, calls of 1 s) on a clock that moves only
   * at the first call to `path`: it takes 5.5 s, so that no call can start after it.
   */
  const budgetSpentAfterFirst = (path: string): OutboxDeps => {
    const clock = { now: 0, slow: true };
    const deps = outboxDeps(encryptorOpening(open));
    const timed: HomeserverClient = {
      call: (userId, request) => {
        if (clock.slow && request.path.startsWith(path)) {
          clock.slow = false;
          clock.now += 5_500;
        }
        return deps.homeserver.call(userId, request);
      },
    };
    return {
      ...deps,
      homeserver: timed,
      actionBudget: { callTimeoutMs: 1_000, budgetMs: 6_000 },
      now: () => clock.now,
    };
  };

  it("its action's time spent after the key query: the devices saved, the retry queries them not again, then shares the key", async () => {
    const dave = await CryptoPerson.create(homeserver, "dave");
    const room = encryptedRoom([BOT, dave.userId]);
    const action = await queuedMessage(room, "after a slow key query");
    const budgeted = budgetSpentAfterFirst("/_matrix/client/v3/keys/query");
    const from = homeserver.requests.length;
    const queries = () =>
      homeserver.requests.slice(from).filter((r) => r.path === "/_matrix/client/v3/keys/query");
    expect(await performAction(action, 0, budgeted)).toMatchObject({
      kind: "retry",
      reason: expect.stringContaining("the action's time is spent"),
    });
    expect(queries()).toHaveLength(1);
    expect(toDeviceSince(from)).toEqual([]);

    expect(await performAction(action, 1, budgeted)).toEqual({ kind: "done", status: 200 });
    expect(queries()).toHaveLength(1);
    expect(targets(toDeviceSince(from))).toEqual([`${dave.userId} ${dave.deviceId}`]);
    await dave.track([BOT]);
    await dave.sync();
    const event = dave.event(sentWith(action.id)[0]?.eventId as string);
    expect((await dave.decrypt(event)).content.body).toBe("after a slow key query");
    dave.close();
  });

  it("its action's time spent among the room key's to-device sends: the retry sends the rest, once each under its txnId, then the event; nothing in clear", async () => {
    const others = [
      await CryptoPerson.create(homeserver, "bob"),
      await CryptoPerson.create(homeserver, "carol"),
    ];
    const persons = [alice, mallory, ...others];
    const room = encryptedRoom([BOT, ...persons.map((p) => p.userId)]);
    const secret = `in a room of many ${randomUUID()}`;
    const action = await queuedMessage(room, secret);
    const budgeted = budgetSpentAfterFirst("/_matrix/client/v3/sendToDevice/");
    const from = homeserver.requests.length;
    expect(await performAction(action, 0, budgeted)).toMatchObject({
      kind: "retry",
      reason: expect.stringContaining("the action's time is spent"),
    });
    const first = toDeviceSince(from);
    expect(first).toHaveLength(1);
    expect(sentWith(action.id)).toEqual([]);

    expect(await performAction(action, 1, budgeted)).toEqual({ kind: "done", status: 200 });
    const all = toDeviceSince(from);
    // The retry went on from the saved progress: no to-device send made twice.
    expect(new Set(all.map((r) => r.path)).size).toBe(all.length);
    expect(all.length).toBeGreaterThan(first.length);
    const olm = all.filter((r) => r.path.includes("/m.room.encrypted/"));
    const withheld = all.filter((r) => r.path.includes("/m.room_key.withheld/"));
    const crossSigned = persons.filter((p) => p !== mallory);
    expect(targets(olm).sort()).toEqual(crossSigned.map((p) => `${p.userId} ${p.deviceId}`).sort());
    expect(targets(withheld)).toEqual([`${mallory.userId} ${mallory.deviceId}`]);
    expect(sentWith(action.id)).toHaveLength(1);
    expect(JSON.stringify(homeserver.requests.slice(from))).not.toContain(secret);
    expect(await bodyAliceReads(action.id)).toBe(secret);
    for (const person of others) person.close();
  });

  /** Runs the action's attempts in order, as the queue would redeliver it: their outcomes' kinds. */
  const attemptKinds = async (action: OutboundAction, count: number) => {
    const deps = outboxDeps(encryptorOpening(open));
    const kinds = [];
    for (let attempt = 0; attempt < count; attempt++) {
      kinds.push((await performAction(action, attempt, deps)).kind);
    }
    return kinds;
  };
  const failTwice = (path: string) =>
    homeserver.cue(
      (r) => r.path.startsWith(path),
      { status: 500, body: { errcode: "M_UNKNOWN", error: "busy" } },
      2,
    );
  /** What Alice's device has been sent and has not synced yet, of `type`. */
  const aliceInbox = (type: string) =>
    (homeserver.encryption.inboxes.get(`${alice.userId}\n${alice.deviceId}`) ?? []).filter(
      (delivery) => delivery.type === type,
    );

  it("the room key's to-device send failing twice (500): the action's retries send it again under the same txnId, and it arrives once", async () => {
    await alice.sync();
    const room = encryptedRoom([BOT, alice.userId]);
    const action = await queuedMessage(room, "after two 500s");
    failTwice("/_matrix/client/v3/sendToDevice/");
    const from = homeserver.requests.length;
    expect(await attemptKinds(action, 3)).toEqual(["retry", "retry", "done"]);
    const toDevice = toDeviceSince(from);
    expect(toDevice).toHaveLength(3);
    expect(new Set(toDevice.map((r) => r.path)).size).toBe(1);
    expect(new Set(toDevice.map((r) => JSON.stringify(r.body))).size).toBe(1);
    expect(aliceInbox("m.room.encrypted")).toHaveLength(1);
    expect(await bodyAliceReads(action.id)).toBe("after two 500s");
  });

  it("an application's to-device send is an action of the queue: failing twice (500), it arrives once, under the same txnId", async () => {
    await alice.sync();
    const queued: FifoMessage[] = [];
    const actions = createActions({
      botUserId: BOT,
      outboundQueue: { send: async (messages) => void queued.push(...messages) },
      origin: `to-device-${randomUUID()}`,
    });
    const content = { ping: randomUUID() };
    const txnId = await actions.sendToDevice("org.example.ping", {
      [alice.userId]: { [alice.deviceId]: content },
    });
    // In the sender's to-device group: each device gets the sender's messages in order.
    expect(queued.map((m) => m.groupId)).toEqual([`toDevice ${BOT}`]);
    const action = JSON.parse(queued[0]?.body as string) as OutboundAction;
    failTwice("/_matrix/client/v3/sendToDevice/org.example.ping/");
    const from = homeserver.requests.length;
    expect(await attemptKinds(action, 3)).toEqual(["retry", "retry", "done"]);
    expect(homeserver.requests.slice(from).map((r) => `${r.method} ${r.path}`)).toEqual(
      new Array(3).fill(`PUT /_matrix/client/v3/sendToDevice/org.example.ping/${txnId}`),
    );
    expect(aliceInbox("org.example.ping")).toMatchObject([{ sender: BOT, content }]);
  });

  it("after a crash before the save, encrypts again: nothing encrypted was sent", async () => {
    const room = encryptedRoom([BOT, alice.userId]);
    const action = await queuedMessage(room, "the save failed first");
    // The process dies in its save: the state and what it encrypted are lost.
    const failingStore = {
      load: (who: typeof owner) => cryptoStore.load(who),
      version: (who: typeof owner) => cryptoStore.version(who),
      save: async () => {
        throw new Error("killed while saving");
      },
    };
    const from = homeserver.requests.length;
    const crashed = await performAction(
      action,
      0,
      outboxDeps(encryptorOpening(() => DurableOlmMachine.open(failingStore, owner, storeKey))),
    );
    expect(crashed).toMatchObject({ kind: "retry", reason: expect.stringContaining("killed") });
    expect(toDeviceSince(from)).toEqual([]);
    expect(sentWith(action.id)).toEqual([]);

    expect(await performAction(action, 1, outboxDeps(encryptorOpening(open)))).toEqual({
      kind: "done",
      status: 200,
    });
    expect(targets(toDeviceSince(from))).toEqual([`${alice.userId} ${alice.deviceId}`]);
    expect(await bodyAliceReads(action.id)).toBe("the save failed first");
  });

  it("encrypts again on the newer state when another writer saved first, and sends once", async () => {
    const room = encryptedRoom([BOT, alice.userId]);
    const action = await queuedMessage(room, "after a stale save");
    let opened = 0;
    // Another process saves the device's state after this one loaded it, the first time.
    const racing = async () => {
      const machine = await open();
      if (opened++ === 0) {
        const other = await open();
        await other.save();
        await other.close();
      }
      return machine;
    };
    const from = homeserver.requests.length;
    infos.length = 0;
    expect(await performAction(action, 0, outboxDeps(encryptorOpening(racing)))).toEqual({
      kind: "done",
      status: 200,
    });
    expect(opened).toBe(2);
    expect(infos).toEqual(["the crypto state was saved by another process: encrypted again on it"]);
    // Nothing encrypted left before the stale save: one room key's messages, one event.
    expect(targets(toDeviceSince(from))).toEqual([`${alice.userId} ${alice.deviceId}`]);
    expect(sentWith(action.id)).toHaveLength(1);
    expect(await bodyAliceReads(action.id)).toBe("after a stale save");
  });

  it("rotates the room key as the room says (rotation_period_msgs)", async () => {
    const room = encryptedRoom([BOT, alice.userId]);
    homeserver.setState(room, "m.room.encryption", "", { ...MEGOLM, rotation_period_msgs: 2 });
    const sessions: unknown[] = [];
    for (const text of ["one", "two", "three"]) {
      const action = await queuedMessage(room, text);
      const from = homeserver.requests.length;
      expect(await performAction(action, 0, outboxDeps(encryptorOpening(open)))).toMatchObject({
        kind: "done",
      });
      sessions.push(sentWith(action.id)[0]?.content.session_id);
      // A room key is shared with Alice for the first message and again for the third.
      expect(targets(toDeviceSince(from))).toEqual(
        text === "two" ? [] : [`${alice.userId} ${alice.deviceId}`],
      );
    }
    expect(sessions[1]).toBe(sessions[0]);
    expect(sessions[2]).not.toBe(sessions[1]);
    await alice.sync();
    const bodies = [];
    for (const event of alice.events.filter((e) => e.room_id === room)) {
      bodies.push((await alice.decrypt(event)).content.body);
    }
    expect(bodies).toEqual(["one", "two", "three"]);
  });

  it("sends into a room without m.room.encryption as it is, and refuses an algorithm it cannot do", async () => {
    const clear = `!clear-${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.createRoom(clear, [BOT]);
    const plain = await queuedMessage(clear, "in clear");
    expect(await performAction(plain, 0, outboxDeps(encryptorOpening(open)))).toMatchObject({
      kind: "done",
    });
    expect(sentWith(plain.id)).toMatchObject([{ type: "m.room.message" }]);

    const odd = `!odd-${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.createRoom(odd, [BOT]);
    homeserver.setState(odd, "m.room.encryption", "", {
      algorithm: "m.olm.v1.curve25519-aes-sha2",
    });
    const refused = await queuedMessage(odd, "never in clear");
    expect(await performAction(refused, 0, outboxDeps(encryptorOpening(open)))).toMatchObject({
      kind: "dead",
      reason: { error: expect.stringContaining("refused, not sent") },
    });
    expect(sentWith(refused.id)).toEqual([]);
  });

  it("a puppet not in the room joins first, then sends encrypted by a device of its own", async () => {
    const room = encryptedRoom([BOT, alice.userId]);
    const puppet = `@_as_puppet${randomUUID().slice(0, 8)}:${SERVER}`;
    const action = await queuedMessage(room, "from a puppet", puppet);
    const encryptor = encryptorOpening(
      openUserDevice({ http, store: cryptoStore, storeKey, log, deviceIdOf: () => "PUPPETDEVICE" }),
    );
    const from = homeserver.requests.length;
    expect(await performAction(action, 0, outboxDeps(encryptor))).toEqual({
      kind: "done",
      status: 200,
    });
    // Its encryption unknown until it joined: nothing sent before, and only encrypted after.
    expect(JSON.stringify(homeserver.requests.slice(from))).not.toContain("from a puppet");
    expect(homeserver.rooms.get(room)?.has(puppet)).toBe(true);
    expect(homeserver.encryption.crossSigning.get(puppet)?.master).toBeDefined();
    const [sent] = sentWith(action.id);
    expect(sent).toMatchObject({ sender: puppet, type: "m.room.encrypted" });

    await alice.track([puppet]);
    await alice.sync();
    expect(await alice.decrypt(alice.event(sent?.eventId as string))).toMatchObject({
      content: { body: "from a puppet" },
      senderDevice: "PUPPETDEVICE",
    });
  });

  it("a puppet's message encrypted by the bot's device is refused by a strict client", async () => {
    const room = encryptedRoom([BOT, alice.userId]);
    const puppet = `@_as_borrower${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.registered.add(puppet);
    homeserver.rooms.get(room)?.add(puppet);
    const action = await queuedMessage(room, "on the bot's device", puppet);
    // mautrix's way: one device, the bot's, encrypts for every user.
    expect(await performAction(action, 0, outboxDeps(encryptorOpening(open)))).toEqual({
      kind: "done",
      status: 200,
    });
    await alice.track([puppet]);
    await alice.sync();
    const event = alice.event(sentWith(action.id)[0]?.eventId as string);
    // The room key came from a device that is not the puppet's.
    await expect(alice.decrypt(event)).rejects.toMatchObject({
      code: alice.sdk.DecryptionErrorCode.MismatchedSender,
    });
  });
});
