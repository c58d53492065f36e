import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { DeliveredEvent } from "../../functions/appservice/application.ts";
import {
  INBOUND_RETRY,
  processInboundMessage,
} from "../../functions/appservice/pipeline/process-inbound.ts";
import { serviceContext } from "../../functions/appservice/service-context.ts";
import { botDeviceIdOf } from "../../functions/crypto/device-crypto.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { RetryLater } from "../../functions/queue/queue.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import {
  makeEvent,
  NO_DEAD_LETTERS,
  noServices,
  putTransaction,
  recordingLog,
  sleep,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { BOT, encryptedAppservice } from "../support/encrypted-appservice.ts";
import type { ScriptedHomeserver } from "../support/homeserver.ts";
import { SERVER } from "../support/with-homeserver.ts";

/**
 * The receiving half of encrypted rooms, end to end in-process (`encryptedAppservice`): strict
 * people (Element's policy) encrypt for the bot's device, and the application gets the clear
 * text, marked.
 */
describe("encrypted rooms: what people encrypt reaches the application decrypted", () => {
  let setup: Awaited<ReturnType<typeof encryptedAppservice>>;
  let homeserver: ScriptedHomeserver;
  let alice: CryptoPerson;
  const people: CryptoPerson[] = [];
  const pushed = (eventId: string) => setup.pushed(eventId);
  const delivered = (eventId: string) => setup.delivered(eventId);
  const sendAndPush = (room: string, person: CryptoPerson, body: string) =>
    setup.sendAndPush(room, person, body);
  const encryptedRoom = (roomId: string, person: CryptoPerson) =>
    setup.encryptedRoom(roomId, person);

  beforeAll(async () => {
    setup = await encryptedAppservice();
    homeserver = setup.homeserver;
    alice = await CryptoPerson.create(homeserver, "alice");
    people.push(alice);
  });
  afterAll(async () => {
    for (const person of people) person.close();
    await setup?.stop();
  });

  it("gives the application a strict person's message decrypted, marked with the sender's device", async () => {
    const room = `!enc1:${SERVER}`;
    await encryptedRoom(room, alice);
    // The invite made the bot's device, cross-signed, before the bot was asked to join.
    const deviceId = botDeviceIdOf(BOT);
    expect(homeserver.encryption.device(BOT, deviceId)?.keys).toBeDefined();
    expect(homeserver.encryption.crossSigning.get(BOT)?.master).toBeDefined();

    const event = await sendAndPush(room, alice, "hello, bot");
    expect(event).toMatchObject({
      room_id: room,
      sender: alice.userId,
      type: "m.room.message",
      content: { msgtype: "m.text", body: "hello, bot" },
      decryption: {
        status: "decrypted",
        senderTrust: "cross-signed",
        senderDevice: alice.deviceId,
      },
    });
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
    expect(delivered(event.event_id)).toHaveLength(1);
  });

  it("never gives clear text from a device its owner did not cross-sign", async () => {
    // Not strict itself (it shares its room key with every device), and not cross-signed.
    const mallory = await CryptoPerson.create(homeserver, "mallory", {
      crossSigned: false,
      strict: false,
    });
    people.push(mallory);
    const room = `!enc2:${SERVER}`;
    await encryptedRoom(room, mallory);
    const event = await sendAndPush(room, mallory, "trust me");
    // Its room key came (it shares with every device): the bot refuses it, for its sender.
    expect(event).toMatchObject({
      type: "m.room.encrypted",
      decryption: { status: "undecryptable", reason: "UnsignedSenderDevice" },
    });
    expect(JSON.stringify(event)).not.toContain("trust me");
  });

  it("holds an event back until its room key comes in a later transaction, then decrypts it", async () => {
    const room = `!enc3:${SERVER}`;
    await encryptedRoom(room, alice);
    const eventId = await alice.sendEncrypted(room, [alice.userId, BOT], {
      msgtype: "m.text",
      body: "the key comes later",
    });
    const after = makeEvent(room, "after it, in clear");
    // The event alone first: its room key stays on the homeserver for the next push.
    const alone = await putTransaction(
      setup.local.url,
      "event-without-key",
      { events: [pushed(eventId), after] },
      { token: setup.local.registration.hs_token },
    );
    expect(alone.status).toBe(200);
    await sleep(1500);
    // Held back, and its room with it: what came after it waits too.
    expect(delivered(eventId)).toEqual([]);
    expect(delivered(after.event_id)).toEqual([]);
    expect((await homeserver.pushTransaction([])).status).toBe(200);
    await waitFor(() => delivered(after.event_id).length === 1, 30_000, "the room to go on");
    expect(delivered(eventId)[0]).toMatchObject({
      content: { body: "the key comes later" },
      decryption: { status: "decrypted" },
    });
    // In the room's order.
    expect(setup.received.indexOf(delivered(eventId)[0] as DeliveredEvent)).toBeLessThan(
      setup.received.indexOf(delivered(after.event_id)[0] as DeliveredEvent),
    );
  });

  it("tracks a new member of an encrypted room at its invite, once; none in a room in clear, until it turns encrypted", async () => {
    const room = `!enc5:${SERVER}`;
    await encryptedRoom(room, alice);
    const bob = await CryptoPerson.create(homeserver, "bob");
    const carol = await CryptoPerson.create(homeserver, "carol");
    people.push(bob, carol);
    // Their new devices announced before they are tracked: nothing the machine acts on.
    expect((await homeserver.pushTransaction([])).status).toBe(200);
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
    /** The bot's device's key queries since `from` that asked for `userId`'s devices. */
    const queriesFor = (userId: string, from: number) =>
      homeserver.requests
        .slice(from)
        .filter(
          (r) =>
            r.path.endsWith("/keys/query") &&
            r.query.user_id === undefined &&
            Object.hasOwn((r.body as { device_keys: object }).device_keys, userId),
        );
    const membership = (roomId: string, userId: string, value: string) =>
      makeEvent(roomId, "", {
        type: "m.room.member",
        sender: userId === bob.userId ? alice.userId : userId,
        state_key: userId,
        content: { membership: value },
      });
    const push = async (event: ReturnType<typeof makeEvent>) => {
      expect((await homeserver.pushTransaction([event])).status).toBe(200);
      await waitFor(() => delivered(event.event_id).length === 1, 30_000, "the membership");
    };
    const from = homeserver.requests.length;
    await push(membership(room, bob.userId, "invite"));
    expect(queriesFor(bob.userId, from)).toHaveLength(1);
    // Already tracked: his join queries nothing more.
    await push(membership(room, bob.userId, "join"));
    expect(queriesFor(bob.userId, from)).toHaveLength(1);
    // In a room without `m.room.encryption`, nobody is tracked.
    const clear = `!clear5:${SERVER}`;
    homeserver.createRoom(clear, [alice.userId, BOT, carol.userId]);
    await push(membership(clear, carol.userId, "join"));
    expect(queriesFor(carol.userId, from)).toEqual([]);
    // The room turning encrypted: its joined members are tracked then.
    await push(
      makeEvent(clear, "", {
        type: "m.room.encryption",
        sender: alice.userId,
        state_key: "",
        content: { algorithm: "m.megolm.v1.aes-sha2" },
      }),
    );
    expect(queriesFor(carol.userId, from)).toHaveLength(1);
  });

  it("after a restart, the same device decrypts from the state it saved", async () => {
    const devicesMade = homeserver.requests.filter((r) => /^\/.*\/devices\//.test(r.path)).length;
    await setup.local.stop();
    await setup.start();
    const room = `!enc4:${SERVER}`;
    await encryptedRoom(room, alice);
    expect(await sendAndPush(room, alice, "still there?")).toMatchObject({
      content: { body: "still there?" },
      decryption: { status: "decrypted" },
    });
    // Not made again: the device and its keys came from the store.
    expect(homeserver.requests.filter((r) => /^\/.*\/devices\//.test(r.path)).length).toBe(
      devicesMade,
    );
  });
});

describe("an encrypted event whose room key comes after the wait", () => {
  let setup: Awaited<ReturnType<typeof encryptedAppservice>>;
  let alice: CryptoPerson;
  // While set, the application refuses late deliveries: the keys must come in all the same.
  let refuseLate = true;
  beforeAll(async () => {
    setup = await encryptedAppservice(
      {
        onEvent(event) {
          if (event.decryption?.status === "decrypted" && event.decryption.late && refuseLate) {
            throw new Error("a late delivery refused");
          }
        },
      },
      { keyWait: { backoff: { baseSeconds: 1, capSeconds: 1 }, maxAttempts: 2 } },
    );
    alice = await CryptoPerson.create(setup.homeserver, "alice");
  });
  afterAll(async () => {
    alice?.close();
    await setup?.stop();
  });

  it("is delivered undecryptable, then once more decrypted and marked late when its key comes; a late delivery refused holds back no key and comes again with the next keys", async () => {
    const { homeserver } = setup;
    const room = `!late:${SERVER}`;
    await setup.encryptedRoom(room, alice);
    const eventId = await alice.sendEncrypted(room, [alice.userId, BOT], {
      msgtype: "m.text",
      body: "a key that comes late",
    });
    // The event alone: its room key stays on the homeserver past the wait.
    const alone = await putTransaction(
      setup.local.url,
      "late-key",
      { events: [setup.pushed(eventId)] },
      { token: setup.local.registration.hs_token },
    );
    expect(alone.status).toBe(200);
    await waitFor(() => setup.delivered(eventId).length === 1, 30_000, "the undecryptable event");
    expect(setup.delivered(eventId)[0]).toMatchObject({
      type: "m.room.encrypted",
      decryption: { status: "undecryptable", reason: "MissingRoomKey" },
    });
    const late = {
      type: "m.room.message",
      content: { body: "a key that comes late" },
      decryption: { status: "decrypted", senderTrust: "cross-signed", late: true },
    };
    // Its key comes: the late delivery, refused by the application.
    expect((await homeserver.pushTransaction([])).status).toBe(200);
    await waitFor(() => setup.delivered(eventId).length === 2, 30_000, "the late decryption");
    expect(setup.delivered(eventId)[1]).toMatchObject(late);
    /** A message in a new encrypted room: its room key comes to the bot in a to-device message. */
    const inNewRoom = async (name: string) => {
      const other = `!${name}:${SERVER}`;
      await setup.encryptedRoom(other, alice);
      const sent = await alice.sendEncrypted(other, [alice.userId, BOT], {
        msgtype: "m.text",
        body: name,
      });
      expect((await homeserver.pushTransaction([setup.pushed(sent)])).status).toBe(200);
      await waitFor(() => setup.delivered(sent).length === 1, 30_000, `the message in ${other}`);
      return setup.delivered(sent)[0];
    };
    // Still refused, it holds back no other key: another room's message decrypts (its key's
    // to-device item tried the kept event again, refused again).
    expect(await inNewRoom("late-other")).toMatchObject({ decryption: { status: "decrypted" } });
    await waitFor(() => setup.delivered(eventId).length === 3, 30_000, "the second late try");
    // Taken, it comes with the next keys once, and no more.
    refuseLate = false;
    expect(await inNewRoom("late-third")).toMatchObject({ decryption: { status: "decrypted" } });
    await waitFor(() => setup.delivered(eventId).length === 4, 30_000, "the late one taken");
    expect(setup.delivered(eventId)[3]).toMatchObject(late);
    expect((await homeserver.pushTransaction([])).status).toBe(200);
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
    expect(setup.delivered(eventId)).toHaveLength(4);
  });
});

describe("an encrypted event whose room key never comes", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `key-wait-${randomUUID().slice(0, 8)}`;
  const store = new DynamoDbStore(client, tableName);
  beforeAll(() => ensureTable(client, tableName));
  afterAll(() => client.destroy());

  it("holds its room back a bounded number of runs, then reaches the application marked undecryptable", async () => {
    const event = makeEvent("!wait:test.local", "", {
      type: "m.room.encrypted",
      content: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "…", session_id: "s" },
    });
    const handled: DeliveredEvent[] = [];
    const { log, lines } = recordingLog();
    const run = (attempt: number) =>
      processInboundMessage(
        { txnId: "wait", items: [{ kind: "event", id: event.event_id, event }] },
        { owner: `run-${attempt}`, groupId: event.room_id },
        {
          claims: store,
          application: { onEvent: (e) => void handled.push(e) },
          log,
          leaseMs: 60_000,
          contextFor: (origin) => serviceContext(noServices, origin),
          setAsideItems: { get: () => Promise.reject(new Error("no reference expected")) },
          retry: INBOUND_RETRY,
          deadLetters: { deadLetter: () => Promise.reject(new Error("no dead letter expected")) },
          crypto: {
            owner: { userId: BOT, deviceId: botDeviceIdOf(BOT) },
            ensureDevice: () => Promise.reject(new Error("no device expected")),
            receive: () => Promise.reject(new Error("nothing to receive expected")),
            decrypt: async () => ({ status: "missing-key" }),
            track: () => Promise.reject(new Error("no member to track expected")),
            markAllTrackedUsersAsDirty: () => Promise.reject(new Error("no outage expected")),
          },
          keyWait: { backoff: { baseSeconds: 1, capSeconds: 1 }, maxAttempts: 3 },
        },
      );
    for (const attempt of [1, 2]) {
      const waiting = run(attempt);
      await expect(waiting).rejects.toBeInstanceOf(RetryLater);
      await expect(waiting).rejects.toThrow("waits for its room key");
    }
    expect(handled).toEqual([]);
    expect(await run(3)).toMatchObject({ handled: 1 });
    expect(handled).toEqual([
      { ...event, decryption: { status: "undecryptable", reason: "MissingRoomKey" } },
    ]);
    // Expected, not a failure: no ERROR line (the stack's alarm counts them), and no content.
    expect(lines.filter((line) => line.level === "error")).toEqual([]);
    expect(lines.filter((line) => line.message.includes("waits for its room key"))).toHaveLength(2);
  });
});
