import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CryptoPerson } from "../support/crypto-person.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

const SERVER = "test.local";
const BOT = `@bot:${SERVER}`;

describe("the scripted homeserver's encryption endpoints, for an appservice", () => {
  const homeserver = new ScriptedHomeserver("as-token", SERVER, BOT, (id) =>
    id.startsWith("@_as_"),
  );
  const pushed: Record<string, unknown>[] = [];
  let receiver: Server;

  /** A client-server call as the appservice: status and JSON answer. */
  const call = async (
    method: string,
    path: string,
    body?: unknown,
    token = "as-token",
  ): Promise<[number, Record<string, unknown>]> => {
    const response = await fetch(`${homeserver.url}/_matrix/client/v3${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return [response.status, (await response.json()) as Record<string, unknown>];
  };
  const deviceKeys = (deviceId: string) => ({
    user_id: BOT,
    device_id: deviceId,
    algorithms: ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
    keys: { [`curve25519:${deviceId}`]: "c", [`ed25519:${deviceId}`]: "e" },
    signatures: {},
  });

  beforeAll(async () => {
    await homeserver.start();
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        pushed.push({
          path: req.url,
          authorization: req.headers.authorization,
          body: JSON.parse(Buffer.concat(chunks).toString("utf8")),
        });
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const port = (receiver.address() as AddressInfo).port;
    homeserver.appservice = { id: "as", url: `http://127.0.0.1:${port}`, hsToken: "hs-token" };
  });
  afterAll(async () => {
    await homeserver.stop();
    await new Promise((resolve) => receiver.close(resolve));
  });

  it("makes a device with PUT /devices/{id} (MSC4190), else answers 404", async () => {
    expect(await call("PUT", "/devices/BOTDEVICE", { display_name: "bot" })).toEqual([201, {}]);
    expect(await call("PUT", "/devices/BOTDEVICE", {})).toEqual([200, {}]);
    expect(homeserver.encryption.device(BOT, "BOTDEVICE")?.displayName).toBe("bot");
    homeserver.encryption.msc4190Supported = false;
    try {
      expect((await call("PUT", "/devices/OTHER", {}))[0]).toBe(404);
    } finally {
      homeserver.encryption.msc4190Supported = true;
    }
  });

  it("acts as a device by device_id or org.matrix.msc3202.device_id, as Synapse answers", async () => {
    const [noDevice, noDeviceBody] = await call("POST", "/keys/upload", {});
    expect([noDevice, noDeviceBody.errcode]).toEqual([400, "M_UNKNOWN"]);
    const [unknown, unknownBody] = await call("POST", "/keys/upload?device_id=NOPE", {});
    expect([unknown, unknownBody.errcode]).toEqual([400, "M_EXCLUSIVE"]);
    const upload = {
      device_keys: deviceKeys("BOTDEVICE"),
      one_time_keys: { "signed_curve25519:A": { key: "a" }, "signed_curve25519:B": { key: "b" } },
      fallback_keys: { "signed_curve25519:F": { key: "f", fallback: true } },
    };
    expect(await call("POST", "/keys/upload?device_id=BOTDEVICE", upload)).toEqual([
      200,
      { one_time_key_counts: { signed_curve25519: 2 } },
    ]);
    // Before Matrix 1.17 the stable name is not read: the request has no device.
    homeserver.encryption.stableDeviceIdSupported = false;
    try {
      expect((await call("POST", "/keys/upload?device_id=BOTDEVICE", {}))[0]).toBe(400);
      expect(await call("POST", "/keys/upload?org.matrix.msc3202.device_id=BOTDEVICE", {})).toEqual(
        [200, { one_time_key_counts: { signed_curve25519: 2 } }],
      );
    } finally {
      homeserver.encryption.stableDeviceIdSupported = true;
    }
    // Claims take the one-time keys in turn, then the fallback key (kept, marked used).
    const claim = { one_time_keys: { [BOT]: { BOTDEVICE: "signed_curve25519" } } };
    const claimed = [];
    for (let i = 0; i < 3; i++) {
      const [, answer] = await call("POST", "/keys/claim", claim);
      const keys = answer.one_time_keys as Record<string, Record<string, object>>;
      claimed.push(Object.keys(keys[BOT]?.BOTDEVICE ?? {})[0]);
    }
    expect(claimed).toEqual(["signed_curve25519:A", "signed_curve25519:B", "signed_curve25519:F"]);
    const [, query] = await call("POST", "/keys/query", { device_keys: { [BOT]: [] } });
    expect(query.device_keys).toEqual({
      [BOT]: { BOTDEVICE: expect.objectContaining(deviceKeys("BOTDEVICE")) },
    });
  });

  it("logs in with m.login.application_service, keeping the device; its token acts as it", async () => {
    const [status, login] = await call("POST", "/login", {
      type: "m.login.application_service",
      identifier: { type: "m.id.user", user: "bot" },
      device_id: "BOTDEVICE",
    });
    expect(status).toBe(200);
    expect(login).toMatchObject({ user_id: BOT, device_id: "BOTDEVICE" });
    expect(homeserver.encryption.device(BOT, "BOTDEVICE")?.keys).toEqual(deviceKeys("BOTDEVICE"));
    const [, counts] = await call("POST", "/keys/upload", {}, login.access_token as string);
    expect(counts).toEqual({ one_time_key_counts: {} });
    const [outside] = await call("POST", "/login", {
      type: "m.login.application_service",
      identifier: { type: "m.id.user", user: "someone" },
    });
    expect(outside).toBe(403);
  });

  it("uploads cross-signing keys once without interactive auth; a reset gets 401 with flows", async () => {
    const keys = (name: string) => ({
      user_id: BOT,
      usage: [name],
      keys: { [`ed25519:${name}pub`]: `${name}pub` },
    });
    const body = {
      master_key: keys("master"),
      self_signing_key: keys("self_signing"),
      user_signing_key: keys("user_signing"),
    };
    expect(await call("POST", "/keys/device_signing/upload", body)).toEqual([200, {}]);
    const [status, answer] = await call("POST", "/keys/device_signing/upload", body);
    expect(status).toBe(500); // the as_token cannot do interactive auth
    expect(answer.error).toBe("Cannot validate a user without an access token");
    const [, login] = await call("POST", "/login", {
      type: "m.login.application_service",
      identifier: { type: "m.id.user", user: "bot" },
      device_id: "BOTDEVICE",
    });
    const token = login.access_token as string;
    const [reset, flows] = await call("POST", "/keys/device_signing/upload", body, token);
    expect(reset).toBe(401);
    expect(flows).toMatchObject({ flows: [{ stages: ["m.login.password"] }] });
    // Synapse's `ui_auth: session_timeout`: a token from a fresh login may.
    homeserver.encryption.uiAuthSessionTimeoutMs = 60_000;
    try {
      expect(await call("POST", "/keys/device_signing/upload", body, token)).toEqual([200, {}]);
    } finally {
      homeserver.encryption.uiAuthSessionTimeoutMs = undefined;
    }
    const [, query] = await call("POST", "/keys/query", { device_keys: { [BOT]: [] } });
    expect(query.master_keys).toEqual({ [BOT]: keys("master") });
    expect(query.user_signing_keys).toEqual({ [BOT]: keys("user_signing") });
  });

  it("pushes to-device messages, device-list changes and key counts in a transaction", async () => {
    const alice = await CryptoPerson.create(homeserver, "alice");
    try {
      // Alice's client sends the bot's device a to-device message.
      await alice.call({
        method: "PUT",
        path: "/sendToDevice/m.test/t1",
        body: JSON.stringify({ messages: { [BOT]: { BOTDEVICE: { hello: "bot" } } } }),
      });
      pushed.length = 0;
      const response = await homeserver.pushTransaction();
      expect(response.status).toBe(200);
      const [push] = pushed as {
        path: string;
        authorization: string;
        body: Record<string, never>;
      }[];
      expect(push?.path).toMatch(/^\/_matrix\/app\/v1\/transactions\//);
      expect(push?.authorization).toBe("Bearer hs-token");
      expect(push?.body.events).toEqual([]);
      expect(push?.body["de.sorunome.msc2409.to_device"]).toEqual([
        {
          type: "m.test",
          sender: alice.userId,
          content: { hello: "bot" },
          to_user_id: BOT,
          to_device_id: "BOTDEVICE",
        },
      ]);
      expect(push?.body["org.matrix.msc3202.device_lists"]).toEqual({
        changed: expect.arrayContaining([BOT, alice.userId]),
        left: [],
      });
      // The bot's device (its keys all claimed: `{}`), and its cross-signing keys as if devices.
      expect(push?.body["org.matrix.msc3202.device_one_time_keys_count"]).toEqual({
        [BOT]: { BOTDEVICE: {}, masterpub: {}, self_signingpub: {}, user_signingpub: {} },
      });
      expect(push?.body["org.matrix.msc3202.device_unused_fallback_key_types"]).toEqual({
        [BOT]: { BOTDEVICE: [] },
      });
      // Taken: the next push carries none of them again.
      await homeserver.pushTransaction();
      expect(pushed[1]?.body).toMatchObject({
        "de.sorunome.msc2409.to_device": [],
        "org.matrix.msc3202.device_lists": { changed: [], left: [] },
      });
    } finally {
      alice.close();
    }
  });
});
