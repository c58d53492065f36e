import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  type ClientEvent,
  parseTransaction,
} from "../../functions/appservice/protocol/transaction.ts";
import { actingAsDevice, ensureBotDevice } from "../../functions/crypto/bot-device.ts";
import { DeviceCrypto, type DeviceOptions } from "../../functions/crypto/device-crypto.ts";
import { DurableOlmMachine } from "../../functions/crypto/durable-machine.ts";
import { encryptRoomEventWriteAhead, MEGOLM } from "../../functions/crypto/room-encryption.ts";
import { WarmMachines } from "../../functions/crypto/warm-machines.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import type { Log } from "../../functions/shared/log.ts";
import type { CryptoOwner, CryptoStateStore } from "../../functions/store/crypto-state.ts";
import { DynamoDbCryptoStateStore } from "../../functions/store/dynamodb/crypto-state.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { noServices } from "../support/appservice.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";
import { appserviceCalls } from "../support/homeserver-crypto.ts";

const SERVER = "test.local";
const BOT = `@bot:${SERVER}`;
const ms = (since: number) => Math.round(performance.now() - since);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];

describe("one writer per device: warm machines, kills at each step, concurrent writers", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `one-writer-${randomUUID().slice(0, 8)}`;
  const store = new DynamoDbCryptoStateStore(client, tableName);
  const homeserver = new ScriptedHomeserver("as-token", SERVER, BOT, () => false);
  const owner: CryptoOwner = { userId: BOT, deviceId: "BOTDEVICE" };
  const storeKey = randomBytes(32);
  const infos: string[] = [];
  const log: Log = { ...noServices.log, info: (message) => infos.push(message) };
  const http = appserviceCalls(() => homeserver.url, "as-token");
  const devices: DeviceOptions = { http, store, storeKey, log, deviceIdOf: () => owner.deviceId };
  /** A process's crypto for the bot's device: no machine kept from any other. */
  const newProcess = (options: Partial<DeviceOptions> = {}) =>
    new DeviceCrypto({ ...devices, ...options, userId: BOT });
  const open = () => DurableOlmMachine.open(store, owner, storeKey);
  let alice: CryptoPerson;

  const encryptedRoom = () => {
    const roomId = `!r-${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.createRoom(roomId, [alice.userId, BOT]);
    homeserver.setState(roomId, "m.room.encryption", "", { algorithm: MEGOLM });
    return roomId;
  };
  /** Alice's message into `roomId` under a new room key, and the transaction that carries it. */
  const aliceSends = async (roomId: string, body: string) => {
    await alice.machine.invalidateGroupSession(new alice.sdk.RoomId(roomId));
    const eventId = await alice.sendEncrypted(roomId, [alice.userId, BOT], { body });
    await alice.sync();
    const transaction = parseTransaction({
      events: [],
      ...homeserver.encryption.takeTransactionExtensions(),
    });
    return { event: alice.event(eventId) as unknown as ClientEvent, transaction };
  };
  const bodyOf = async (crypto: DeviceCrypto, event: ClientEvent) => {
    const decryption = await crypto.decrypt(event);
    return decryption.status === "decrypted" ? decryption.content.body : decryption.status;
  };
  /** The bot's message into `roomId`, encrypted write-ahead on the machine `opened` gives. */
  const botEncrypts = (opened: () => Promise<DurableOlmMachine>, roomId: string, body: string) =>
    encryptRoomEventWriteAhead({
      open: opened,
      callsAs: (who) => actingAsDevice(http, who),
      room: {
        roomId,
        encryption: { algorithm: MEGOLM },
        historyVisibility: "shared",
        members: [BOT, alice.userId],
      },
      txnId: randomUUID(),
      type: "m.room.message",
      content: { msgtype: "m.text", body },
      log,
    });
  /** Sends the bot's encrypted `content` into `roomId`; answers what Alice decrypts of it. */
  const aliceReads = async (roomId: string, content: Record<string, unknown>) => {
    const answer = await http({
      method: "PUT",
      path: `/rooms/${encodeURIComponent(roomId)}/send/m.room.encrypted/${randomUUID()}`,
      body: JSON.stringify(content),
    });
    await alice.sync();
    const event = alice.event((JSON.parse(answer.text) as { event_id: string }).event_id);
    return (await alice.decrypt(event)).content.body;
  };
  /** The store, with its saves killed (the process dies in them: nothing saved). */
  const killedInSave: CryptoStateStore = {
    load: (who) => store.load(who),
    version: (who) => store.version(who),
    save: async () => {
      throw new Error("killed while saving");
    },
  };

  beforeAll(async () => {
    await Promise.all([ensureTable(client, tableName), homeserver.start()]);
    const device = await ensureBotDevice({ http, store, owner, storeKey, log });
    await device.machine.close();
    alice = await CryptoPerson.create(homeserver, "alice");
    await alice.track([BOT]);
  });
  afterAll(async () => {
    alice?.close();
    await homeserver.stop();
    client.destroy();
  });

  it("keeps a machine warm while no other process saves, lent one unit of work at a time", async () => {
    const machines = new WarmMachines();
    const cold = performance.now();
    const first = await machines.open(store, owner, open);
    const coldMs = ms(cold);
    await first.use(async () => undefined);
    const warmMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const again = await machines.open(store, owner, open);
      warmMs.push(ms(started));
      expect(again).toBe(first);
      await again.use(async () => undefined);
    }
    // Lent to one at a time: a second unit of work waits for the first to give it back.
    const lent = await machines.open(store, owner, open);
    let waited = false;
    const next = machines.open(store, owner, open).then((machine) => {
      waited = true;
      return machine;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(waited).toBe(false);
    await lent.use(async () => undefined);
    const after = await next;
    expect(after).toBe(first);
    // Work that fails closes it: what it did unsaved is never used again.
    await expect(
      after.use(async () => {
        throw new Error("failed");
      }),
    ).rejects.toThrow("failed");
    const reopened = await machines.open(store, owner, open);
    expect(reopened).not.toBe(first);
    await reopened.use(async () => undefined);
    // Another process saves: the machine kept is stale, so the device is opened again.
    const other = await open();
    await other.save();
    await other.close();
    const fresh = await machines.open(store, owner, open);
    expect(fresh).not.toBe(reopened);
    expect(fresh.version).toBe(other.version);
    await fresh.use(async () => undefined);
    console.info(`machine open: cold ${coldMs} ms, warm ${warmMs.join("/")} ms`);
  });

  it("keeps the machines of the devices used last, up to its capacity", async () => {
    const machines = new WarmMachines(2);
    const owners = ["LRU1", "LRU2", "LRU3"].map((deviceId) => ({ userId: BOT, deviceId }));
    const opened = [];
    for (const who of owners) {
      const machine = await machines.open(store, who, () =>
        DurableOlmMachine.open(store, who, storeKey),
      );
      opened.push(machine);
      await machine.use(async () => undefined);
    }
    expect(machines.size).toBe(2);
    const [oldest, , newest] = owners as [CryptoOwner, CryptoOwner, CryptoOwner];
    const reopen = (who: CryptoOwner) =>
      machines.open(store, who, () => DurableOlmMachine.open(store, who, storeKey));
    const last = await reopen(newest);
    expect(last).toBe(opened[2]);
    await last.use(async () => undefined);
    const first = await reopen(oldest);
    expect(first).not.toBe(opened[0]);
    await first.use(async () => undefined);
  });

  it("a receive killed before its save, or after it before the ack, is received again: every message decrypts", async () => {
    const roomId = encryptedRoom();
    const { event, transaction } = await aliceSends(roomId, "key in a killed receive");
    // Killed in the save: the transaction is not acked, so it comes again.
    await expect(newProcess({ store: killedInSave }).receive(transaction)).rejects.toThrow(
      "killed",
    );
    await newProcess().receive(transaction);
    // Killed after the save, before the ack: it comes again, to a state that holds it.
    const third = newProcess();
    await third.receive(transaction);
    expect(await bodyOf(third, event)).toBe("key in a killed receive");
    // The Olm session is whole: a new room key over it is received and decrypts.
    const later = await aliceSends(roomId, "after the kills");
    const fourth = newProcess();
    await fourth.receive(later.transaction);
    expect(await bodyOf(fourth, later.event)).toBe("after the kills");
  });

  it("two processes receiving at once both keep what they received (a stale save redone)", async () => {
    const [roomA, roomB] = [encryptedRoom(), encryptedRoom()];
    const a = await aliceSends(roomA, "to the first process");
    const b = await aliceSends(roomB, "to the second process");
    infos.length = 0;
    // Each with its machines warm, both loading the same version and both saving.
    await Promise.all([
      newProcess({ machines: new WarmMachines() }).receive(a.transaction),
      newProcess({ machines: new WarmMachines() }).receive(b.transaction),
    ]);
    expect(infos).toEqual(["the crypto state was saved by another process: done again on it"]);
    const next = newProcess();
    expect(await bodyOf(next, a.event)).toBe("to the first process");
    expect(await bodyOf(next, b.event)).toBe("to the second process");
  });

  it("two processes encrypting at once send each message once, and all decrypt", async () => {
    const [roomA, roomB] = [encryptedRoom(), encryptedRoom()];
    infos.length = 0;
    const encrypt = (roomId: string, body: string) => {
      const machines = new WarmMachines();
      return botEncrypts(() => machines.open(store, owner, open), roomId, body);
    };
    const from = homeserver.requests.length;
    const made = await Promise.all([encrypt(roomA, "first"), encrypt(roomB, "second")]);
    expect(infos).toEqual(["the crypto state was saved by another process: encrypted again on it"]);
    // One room key's messages per room: none made on the stale state went out.
    const toDevice = homeserver.requests
      .slice(from)
      .filter((r) => r.path.startsWith("/_matrix/client/v3/sendToDevice/m.room.encrypted/"));
    expect(toDevice).toHaveLength(2);
    expect(await aliceReads(roomA, made[0]?.content ?? {})).toBe("first");
    expect(await aliceReads(roomB, made[1]?.content ?? {})).toBe("second");
  });

  it("measures a unit of work with the machine warm and opened each time", async () => {
    const roomId = encryptedRoom();
    const sent: Awaited<ReturnType<typeof aliceSends>>[] = [];
    for (let i = 0; i < 4; i++) sent.push(await aliceSends(roomId, `m${i}`));
    let loads = 0;
    const counted: CryptoStateStore = {
      load: (who) => {
        loads++;
        return store.load(who);
      },
      version: (who) => store.version(who),
      save: (who, expected, data) => store.save(who, expected, data),
    };
    /** Each unit of work's time, and how many states it loaded. */
    const timed = async (work: (i: number) => Promise<unknown>) => {
      const times: number[] = [];
      loads = 0;
      for (let i = 0; i < sent.length; i++) {
        const started = performance.now();
        await work(i);
        times.push(ms(started));
      }
      return { times, loads };
    };
    const machines = new WarmMachines();
    const warm = newProcess({ store: counted, machines });
    for (const { transaction } of sent) await warm.receive(transaction);
    const decrypted = async (crypto: DeviceCrypto, i: number) =>
      expect(await bodyOf(crypto, sent[i]?.event as ClientEvent)).toBe(`m${i}`);
    const opened = () => DurableOlmMachine.open(counted, owner, storeKey);
    const figures = {
      decryptWarm: await timed((i) => decrypted(warm, i)),
      decryptCold: await timed((i) => decrypted(newProcess({ store: counted }), i)),
      encryptCold: await timed((i) => botEncrypts(opened, roomId, `e${i}`)),
      encryptWarm: await timed((i) =>
        botEncrypts(() => machines.open(counted, owner, opened), roomId, `e${i}`),
      ),
    };
    // Warm, no unit loads the state, but the first warm encrypt: the cold encrypts (another
    // process) saved since, so the machine kept is stale. Opened each time, each unit loads it.
    expect(Object.values(figures).map((figure) => figure.loads)).toEqual([0, 4, 4, 1]);
    // What a kept machine costs: more machines of the same state, opened at once.
    global.gc?.();
    const before = globalThis.process.memoryUsage();
    const kept = await Promise.all(Array.from({ length: 8 }, () => open()));
    global.gc?.();
    const after = globalThis.process.memoryUsage();
    const mbEach = (key: "rss" | "heapUsed" | "arrayBuffers") =>
      ((after[key] - before[key]) / kept.length / 2 ** 20).toFixed(2);
    const { bytes } = await (kept[0] as DurableOlmMachine).save();
    await Promise.all(kept.map((machine) => machine.close()));
    console.info(
      `a machine kept, with a ${bytes}-byte state: rss ${mbEach("rss")} MB, ` +
        `heap ${mbEach("heapUsed")} MB, array buffers ${mbEach("arrayBuffers")} MB`,
    );
    console.info(
      Object.entries(figures)
        .map(([what, { times }]) => `${what} ${times.join("/")} ms (median ${median(times)})`)
        .join("; "),
    );
  });
});
