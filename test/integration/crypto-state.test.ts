import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { once } from "node:events";
import { text } from "node:stream/consumers";
import { fileURLToPath } from "node:url";
import { type DynamoDBClient, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { parseTransaction } from "../../functions/appservice/protocol/transaction.ts";
import { bootstrapCrossSigning } from "../../functions/crypto/cross-signing.ts";
import { DurableOlmMachine } from "../../functions/crypto/durable-machine.ts";
import { receiveTransactionCrypto } from "../../functions/crypto/receive.ts";
import { type CryptoCall, sendOutgoingRequests } from "../../functions/crypto/requests.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { StaleCryptoStateError } from "../../functions/store/crypto-state.ts";
import { DynamoDbCryptoStateStore } from "../../functions/store/dynamodb/crypto-state.ts";
import { partitionItems } from "../../functions/store/dynamodb/partition.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

const SERVER = "test.local";
const BOT = `@bot:${SERVER}`;
const ROOM = `!encrypted:${SERVER}`;
const CHILD = fileURLToPath(new URL("../support/crypto-restore-child.ts", import.meta.url));
const ms = (since: number) => Math.round(performance.now() - since);

describe("a device's crypto state kept in DynamoDB between processes", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `crypto-${randomUUID().slice(0, 8)}`;
  const store = new DynamoDbCryptoStateStore(client, tableName);
  const homeserver = new ScriptedHomeserver("as-token", SERVER, BOT, () => false);
  const owner = { userId: BOT, deviceId: "BOTDEVICE" };
  const storeKey = randomBytes(32);
  let alice: CryptoPerson;

  /** The bot's device's calls: the as_token, acting as the device (`device_id`). */
  const asDevice = async (call: CryptoCall) => {
    const separator = call.path.includes("?") ? "&" : "?";
    const response = await fetch(
      `${homeserver.url}/_matrix/client/v3${call.path}${separator}device_id=${owner.deviceId}`,
      {
        method: call.method,
        headers: { authorization: "Bearer as-token", "content-type": "application/json" },
        body: call.body,
      },
    );
    const text = await response.text();
    if (!response.ok) throw new Error(`${call.path}: ${response.status} ${text}`);
    return text;
  };
  /** What the homeserver would push the appservice now, given to the bot's machine. */
  const receivePush = async (bot: DurableOlmMachine) => {
    const transaction = parseTransaction({
      events: [],
      ...homeserver.encryption.takeTransactionExtensions(),
    });
    await receiveTransactionCrypto(bot.machine, owner, transaction);
    await sendOutgoingRequests(bot.machine, asDevice);
  };
  const decrypt = async (bot: DurableOlmMachine, eventId: string) => {
    await alice.sync();
    const event = alice.event(eventId);
    const { sdk } = alice;
    const decrypted = await bot.machine.decryptRoomEvent(
      JSON.stringify(event),
      new sdk.RoomId(ROOM),
      new sdk.DecryptionSettings(sdk.TrustRequirement.CrossSigned),
    );
    return JSON.parse(decrypted.event).content.body as string;
  };
  const claimsOfBotKeys = () =>
    homeserver.requests.filter(
      (r) => r.path.endsWith("/keys/claim") && JSON.stringify(r.body).includes(owner.deviceId),
    ).length;

  beforeAll(async () => {
    await ensureTable(client, tableName);
    await homeserver.start();
    const made = await fetch(`${homeserver.url}/_matrix/client/v3/devices/${owner.deviceId}`, {
      method: "PUT",
      headers: { authorization: "Bearer as-token", "content-type": "application/json" },
      body: "{}",
    });
    expect(made.status).toBe(201);
    alice = await CryptoPerson.create(homeserver, "alice");
    homeserver.createRoom(ROOM, [alice.userId, BOT]);
    homeserver.setState(ROOM, "m.room.encryption", "", { algorithm: "m.megolm.v1.aes-sha2" });
  });
  afterAll(async () => {
    alice?.close();
    await homeserver.stop();
    client.destroy();
  });

  it("restores the same device, which decrypts over an Olm session made before the save", async () => {
    const first = await DurableOlmMachine.open(store, owner, storeKey);
    expect(first.version).toBe(0);
    await sendOutgoingRequests(first.machine, asDevice);
    // Cross-signed, or a strict person withholds the room key from it.
    await bootstrapCrossSigning(first.machine, asDevice);
    const identity = first.machine.identityKeys.curve25519.toBase64();
    expect(homeserver.encryption.device(BOT, owner.deviceId)?.keys).toMatchObject({
      keys: { [`curve25519:${owner.deviceId}`]: identity },
    });
    // Alice makes an Olm session with the bot's device and shares a room key over it.
    const before = await alice.sendEncrypted(ROOM, [alice.userId, BOT], { body: "before" });
    expect(claimsOfBotKeys()).toBe(1);
    await receivePush(first);
    await first.machine.updateTrackedUsers([new alice.sdk.UserId(alice.userId)]);
    await sendOutgoingRequests(first.machine, asDevice);
    expect(await decrypt(first, before)).toBe("before");
    expect(await first.save()).toMatchObject({ version: 1 });
    await first.close();

    // Alice starts a new room key, sent over the same Olm session: no key claimed again.
    expect(await alice.machine.invalidateGroupSession(new alice.sdk.RoomId(ROOM))).toBe(true);
    const after = await alice.sendEncrypted(ROOM, [alice.userId, BOT], { body: "after" });
    expect(claimsOfBotKeys()).toBe(1);

    // Another machine, from nothing but the saved state: the same device and identity keys.
    const second = await DurableOlmMachine.open(store, owner, storeKey);
    try {
      expect(second.version).toBe(1);
      expect(second.machine.deviceId.toString()).toBe(owner.deviceId);
      expect(second.machine.identityKeys.curve25519.toBase64()).toBe(identity);
      await receivePush(second);
      expect(await decrypt(second, after)).toBe("after");
      expect(await decrypt(second, before)).toBe("before");
      expect(await second.save()).toMatchObject({ version: 2 });
    } finally {
      await second.close();
    }
    // One snapshot is kept: the ones it replaced are deleted.
    const items = await partitionItems(client, tableName, `CRYPTO#${BOT}#${owner.deviceId}`);
    expect(items.map((item) => item.sk?.S)).toEqual([
      "HEAD",
      expect.stringMatching(/^PART#[-0-9a-f]{36}#00000$/),
    ]);
  });

  it("is restored whole by another process, which decrypts what this one received", async () => {
    const bot = await DurableOlmMachine.open(store, owner, storeKey);
    const identity = bot.machine.identityKeys.curve25519.toBase64();
    expect(await alice.machine.invalidateGroupSession(new alice.sdk.RoomId(ROOM))).toBe(true);
    const eventId = await alice.sendEncrypted(ROOM, [alice.userId, BOT], { body: "elsewhere" });
    await receivePush(bot);
    const { version } = await bot.save();
    await bot.close();
    await alice.sync();
    const child = spawn(process.execPath, ["--import", "tsx", CHILD], {
      stdio: ["pipe", "pipe", "inherit"],
      timeout: 30_000,
    });
    child.stdin.end(
      JSON.stringify({
        endpoint: inject("dynamodbEndpoint"),
        tableName,
        owner,
        storeKey: storeKey.toString("hex"),
        event: alice.event(eventId),
      }),
    );
    const [output, [code]] = await Promise.all([text(child.stdout), once(child, "exit")]);
    expect(code).toBe(0);
    expect(JSON.parse(output)).toEqual({ version, curve25519: identity, body: "elsewhere" });
  });

  it("tops up its one-time keys from a pushed count of none left", async () => {
    const bot = await DurableOlmMachine.open(store, owner, storeKey);
    try {
      const device = homeserver.encryption.device(BOT, owner.deviceId);
      const uploaded = device?.oneTimeKeys.size ?? 0;
      expect(uploaded).toBeGreaterThan(10);
      const fallback = device?.fallbackKeys.get("signed_curve25519")?.keyId;
      expect(fallback).toBeDefined();
      // Every one-time key claimed, then the fallback key (Synapse pushes nothing for a claim).
      for (let i = 0; i <= uploaded; i++) {
        await alice.call({
          method: "POST",
          path: "/keys/claim",
          body: JSON.stringify({
            one_time_keys: { [BOT]: { [owner.deviceId]: "signed_curve25519" } },
          }),
        });
      }
      expect(device?.oneTimeKeys.size).toBe(0);
      expect(device?.fallbackKeys.get("signed_curve25519")?.used).toBe(true);
      // The next transaction says `{}` (none left) and no unused fallback key.
      await receivePush(bot);
      expect(device?.oneTimeKeys.size).toBeGreaterThanOrEqual(uploaded);
      // The used fallback key is not replaced at once: matrix-rust-sdk rotates fallback keys by
      // time, not when told one was used (its PR #3151).
      expect(device?.fallbackKeys.get("signed_curve25519")?.keyId).toBe(fallback);
      await bot.save();
    } finally {
      await bot.close();
    }
  });

  it("refuses a save over a version another writer saved since", async () => {
    const one = await DurableOlmMachine.open(store, owner, storeKey);
    const two = await DurableOlmMachine.open(store, owner, storeKey);
    try {
      const loaded = one.version;
      expect(two.version).toBe(loaded);
      expect(await one.save()).toMatchObject({ version: loaded + 1 });
      await expect(two.save()).rejects.toBeInstanceOf(StaleCryptoStateError);
      expect((await store.load(owner))?.version).toBe(loaded + 1);
      // The refused save left no parts behind.
      const items = await partitionItems(client, tableName, `CRYPTO#${BOT}#${owner.deviceId}`);
      expect(items).toHaveLength(2);
      // A first save of a device already saved is refused too.
      await expect(store.save(owner, 0, new Uint8Array([1]))).rejects.toBeInstanceOf(
        StaleCryptoStateError,
      );
    } finally {
      await one.close();
      await two.close();
    }
  });

  it("cannot be opened with another store key", async () => {
    await expect(DurableOlmMachine.open(store, owner, randomBytes(32))).rejects.toThrow();
  });

  it("keeps a state of any size in parts, read back whole", async () => {
    const other = { userId: BOT, deviceId: "BIG" };
    const data = new Uint8Array(randomBytes(800_000));
    expect(await store.save(other, 0, data)).toBe(1);
    const loaded = await store.load(other);
    expect(loaded?.version).toBe(1);
    expect(Buffer.from(loaded?.data ?? []).equals(Buffer.from(data))).toBe(true);
    const items = await partitionItems(client, tableName, `CRYPTO#${BOT}#BIG`);
    expect(items).toHaveLength(4); // HEAD and three parts of 350 KB at most
  });

  it("keeps a save's parts that another machine of the process saw while it saved", async () => {
    const racer = { userId: BOT, deviceId: "RACER" };
    // The client of one process, whose saves pause before their commit while `hold` is on.
    let hold = false;
    let paused!: () => void;
    let release!: () => void;
    const committing = new Promise<void>((resolve) => {
      paused = resolve;
    });
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const pausing = {
      send: async (command: Parameters<DynamoDBClient["send"]>[0]) => {
        if (hold && command instanceof UpdateItemCommand) {
          paused();
          await gate;
        }
        return client.send(command);
      },
    } as DynamoDBClient;
    const shared = new DynamoDbCryptoStateStore(pausing, tableName);
    expect(await shared.save(racer, 0, new Uint8Array([1]))).toBe(1);
    expect((await shared.load(racer))?.version).toBe(1);
    hold = true;
    const saving = shared.save(racer, 1, new Uint8Array([2]));
    await committing;
    hold = false;
    // Another machine loads while the save's parts are written and its commit is still to come.
    expect((await shared.load(racer))?.data).toEqual(new Uint8Array([1]));
    release();
    expect(await saving).toBe(2);
    expect(await shared.load(racer)).toEqual({ version: 2, data: new Uint8Array([2]) });
    const items = await partitionItems(client, tableName, `CRYPTO#${BOT}#RACER`);
    expect(items).toHaveLength(2);
  });

  it("measures restore and save with a few sessions", async () => {
    // Four more people, each with an Olm session to the bot and a room key in a room of its own.
    const people = await Promise.all(
      ["carol", "dave", "erin", "frank"].map((name) => CryptoPerson.create(homeserver, name)),
    );
    try {
      const bot = await DurableOlmMachine.open(store, owner, storeKey);
      for (const [i, person] of people.entries()) {
        const room = `!room${i}:${SERVER}`;
        homeserver.createRoom(room, [person.userId, BOT]);
        for (let n = 0; n < 3; n++) {
          await person.machine.invalidateGroupSession(new person.sdk.RoomId(room));
          await person.sendEncrypted(room, [person.userId, BOT], { body: `m${n}` });
        }
      }
      await receivePush(bot);
      const saved = await bot.save();
      await bot.close();
      const restores: number[] = [];
      const saves: number[] = [];
      for (let i = 0; i < 3; i++) {
        let started = performance.now();
        const again = await DurableOlmMachine.open(store, owner, storeKey);
        restores.push(ms(started));
        started = performance.now();
        await again.save();
        saves.push(ms(started));
        await again.close();
      }
      console.info(
        `crypto state: ${saved.bytes} bytes (gzip) for 5 Olm sessions and 14 room keys; ` +
          `restore ${restores.join("/")} ms, save ${saves.join("/")} ms`,
      );
      expect(saved.bytes).toBeGreaterThan(1000);
      expect(saved.bytes).toBeLessThan(350_000);
    } finally {
      for (const person of people) person.close();
    }
  });
});
