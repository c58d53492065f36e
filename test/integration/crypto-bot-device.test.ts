import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { CROSS_SIGNING_AUTH_ERROR, ensureBotDevice } from "../../functions/crypto/bot-device.ts";
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
    expect((await store.load(owner))?.version).toBe(1);

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
});
