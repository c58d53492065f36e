import { randomBytes, randomUUID } from "node:crypto";
import type { OlmMachine } from "@matrix-org/matrix-sdk-crypto-wasm";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  type ClientServerCall,
  CROSS_SIGNING_AUTH_ERROR,
  ensureBotDevice,
} from "../../functions/crypto/bot-device.ts";
import { DeviceCrypto } from "../../functions/crypto/device-crypto.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import type { Log } from "../../functions/shared/log.ts";
import { DynamoDbCryptoStateStore } from "../../functions/store/dynamodb/crypto-state.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";
import { appserviceCalls } from "../support/homeserver-crypto.ts";

const SERVER = "test.local";

describe("the bot's device, made once", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `bot-device-${randomUUID().slice(0, 8)}`;
  const store = new DynamoDbCryptoStateStore(client, tableName);
  const homeserver = new ScriptedHomeserver("as-token", SERVER, `@bot:${SERVER}`, (id) =>
    id.startsWith("@_as_"),
  );
  const storeKey = randomBytes(32);
  const errors: string[] = [];
  const log: Log = {
    debug: () => undefined,
    info: () => undefined,
    warn: () => undefined,
    error: (message) => errors.push(message),
  };
  const http = appserviceCalls(() => homeserver.url, "as-token");
  const calls = (pattern: RegExp) =>
    homeserver.requests.filter((r) => pattern.test(`${r.method} ${r.path}`)).length;
  /** The public master key of the machine's cross-signing identity. */
  const masterKeyOf = async (machine: OlmMachine) =>
    JSON.parse((await machine.bootstrapCrossSigning(false)).uploadSigningKeysRequest.body)
      .master_key.keys;
  /** What a device's state holds and what the homeserver publishes of it: the same when whole. */
  const keysOf = async (crypto: DeviceCrypto) => {
    const { userId, deviceId } = crypto.owner;
    const held = await crypto.withMachine(async (machine) => ({
      result: {
        curve25519: machine.identityKeys.curve25519.toBase64(),
        master: await masterKeyOf(machine),
      },
      changed: false,
    }));
    const device = homeserver.encryption.device(userId, deviceId)?.keys as
      | { keys: Record<string, string> }
      | undefined;
    const master = homeserver.encryption.crossSigning.get(userId)?.master as
      | { keys: unknown }
      | undefined;
    const published = {
      curve25519: device?.keys[`curve25519:${deviceId}`],
      master: master?.keys,
    };
    return { held, published };
  };
  const deviceCrypto = (userId: string, deviceId: string, calls = http) =>
    new DeviceCrypto({ http: calls, store, storeKey, log, userId, deviceIdOf: () => deviceId });

  beforeAll(async () => {
    await ensureTable(client, tableName);
    await homeserver.start();
    homeserver.registered.add(`@_as_bridge:${SERVER}`);
    homeserver.registered.add(`@_as_reset:${SERVER}`);
  });
  afterAll(async () => {
    await homeserver.stop();
    client.destroy();
  });

  it("is made with PUT /devices, cross-signed, trusted by a strict person, and made once", async () => {
    const owner = { userId: `@bot:${SERVER}`, deviceId: "BOTDEVICE" };
    const device = await ensureBotDevice({ http, store, owner, storeKey, log });
    const identity = device.machine.machine.identityKeys.ed25519.toBase64();
    try {
      expect(device).toMatchObject({ made: "msc4190", crossSigned: true });
      expect(homeserver.encryption.device(owner.userId, owner.deviceId)?.keys).toBeDefined();
      expect(homeserver.encryption.crossSigning.get(owner.userId)?.master).toBeDefined();
      expect(errors).toEqual([]);
      // A strict person shares a room key with the bot's device: it is cross-signed.
      const alice = await CryptoPerson.create(homeserver, "alice");
      try {
        const room = `!r:${SERVER}`;
        homeserver.createRoom(room, [alice.userId, owner.userId]);
        await alice.sendEncrypted(room, [alice.userId, owner.userId], { body: "hi bot" });
        expect(homeserver.encryption.forAppservice.map((m) => m.type)).toEqual([
          "m.room.encrypted",
        ]);
      } finally {
        alice.close();
      }
    } finally {
      await device.machine.close();
    }
    const made = calls(/^PUT .*\/devices\//);
    const logins = calls(/^POST .*\/login$/);
    const again = await ensureBotDevice({ http, store, owner, storeKey, log });
    try {
      expect(again.made).toBe("before");
      expect(again.machine.machine.identityKeys.ed25519.toBase64()).toBe(identity);
      expect([calls(/^PUT .*\/devices\//), calls(/^POST .*\/login$/)]).toEqual([made, logins]);
    } finally {
      await again.machine.close();
    }
  });

  it("is made by appservice login where PUT /devices cannot, acting by the unstable name", async () => {
    // Synapse before 1.141: no MSC4190, and only `org.matrix.msc3202.device_id` is read.
    homeserver.encryption.msc4190Supported = false;
    homeserver.encryption.stableDeviceIdSupported = false;
    try {
      const owner = { userId: `@_as_bridge:${SERVER}`, deviceId: "BRIDGEDEVICE" };
      const device = await ensureBotDevice({ http, store, owner, storeKey, log });
      await device.machine.close();
      expect(device).toMatchObject({ made: "login", crossSigned: true });
      expect(homeserver.encryption.device(owner.userId, owner.deviceId)?.keys).toBeDefined();
    } finally {
      homeserver.encryption.msc4190Supported = true;
      homeserver.encryption.stableDeviceIdSupported = true;
    }
  });

  it("logs one clear ERROR when the homeserver asks for interactive auth, and goes on", async () => {
    const userId = `@_as_reset:${SERVER}`;
    // The user already has a master key (a device made before): an upload is a reset.
    homeserver.encryption.crossSigning.set(userId, { master: { keys: { "ed25519:old": "old" } } });
    const owner = { userId, deviceId: "RESETDEVICE" };
    errors.length = 0;
    const device = await ensureBotDevice({ http, store, owner, storeKey, log });
    await device.machine.close();
    expect(device).toMatchObject({ made: "msc4190", crossSigned: false });
    expect(errors).toEqual([CROSS_SIGNING_AUTH_ERROR]);
    expect(errors[0]).toContain("ui_auth: session_timeout");
    expect(homeserver.encryption.device(userId, owner.deviceId)?.keys).toBeDefined();
    expect((await store.load(owner))?.version).toBe(2);

    // With Synapse's `ui_auth: session_timeout`, the fresh login's token may.
    homeserver.encryption.uiAuthSessionTimeoutMs = 60_000;
    try {
      const other = { userId, deviceId: "RESETDEVICE2" };
      const fresh = await ensureBotDevice({ http, store, owner: other, storeKey, log });
      await fresh.machine.close();
      expect(fresh.crossSigned).toBe(true);
      expect(errors).toHaveLength(1);
    } finally {
      homeserver.encryption.uiAuthSessionTimeoutMs = undefined;
    }
  });

  it("is made once by two processes making it at once: one set of keys, used by both", async () => {
    const userId = `@_as_race:${SERVER}`;
    homeserver.registered.add(userId);
    errors.length = 0;
    const one = deviceCrypto(userId, "RACEDEVICE");
    const two = deviceCrypto(userId, "RACEDEVICE");
    await Promise.all([one.ensureDevice(), two.ensureDevice()]);
    const [first, second] = [await keysOf(one), await keysOf(two)];
    // Both use the state the claim saved, and it is the one published.
    expect(second.held).toEqual(first.held);
    expect(first.published).toEqual(first.held);
    expect(homeserver.encryption.devices.get(userId)?.size).toBe(1);
    expect(errors).toEqual([]);
  });

  it("a device whose making is killed at each step is finished with the keys it claimed", async () => {
    const owner = { userId: `@_as_killed:${SERVER}`, deviceId: "KILLEDDEVICE" };
    homeserver.registered.add(owner.userId);
    errors.length = 0;
    // A process killed at each step of the making in turn, each after the one before: at the
    // device's making, its keys' upload, the cross-signing keys' upload, the signatures' upload.
    for (const step of [
      "/devices/",
      "/keys/upload",
      "/keys/device_signing/",
      "/keys/signatures/",
    ]) {
      const killed: ClientServerCall = async (call) => {
        if (call.path.startsWith(step)) throw new Error(`killed at ${step}`);
        return http(call);
      };
      await expect(
        deviceCrypto(owner.userId, owner.deviceId, killed).ensureDevice(),
      ).rejects.toThrow(`killed at ${step}`);
      // The state saved is the claim's: the keys made before anything was published.
      expect((await store.load(owner))?.version).toBe(1);
    }
    const next = deviceCrypto(owner.userId, owner.deviceId);
    await next.ensureDevice();
    const { held, published } = await keysOf(next);
    expect(published).toEqual(held);
    expect((await store.load(owner))?.version).toBe(2);
    // The cross-signing keys published before the last kill were not uploaded again (a reset,
    // which would have been refused with a 401 and logged).
    expect(errors).toEqual([]);
  });
});
