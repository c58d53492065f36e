import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from "vitest";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { BudgetExhausted } from "../../functions/matrix/bounded-call.ts";
import {
  type HomeserverCallsDeps,
  HttpHomeserverCalls,
} from "../../functions/matrix/homeserver-calls.ts";
import { HttpHomeserverClient } from "../../functions/matrix/http-client.ts";
import { MediaTooLarge } from "../../functions/matrix/media.ts";
import { HomeserverRefused } from "../../functions/matrix/request.ts";
import type { AppDataStore } from "../../functions/store/app-data.ts";
import {
  CALL_RECORDS_KEY_PREFIX,
  DynamoDbAppData,
} from "../../functions/store/dynamodb/app-data.ts";
import { DynamoDbIntentMemory } from "../../functions/store/dynamodb/intent-memory.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

const SERVER = "calls.test";
const BOT = `@bot:${SERVER}`;
const PUPPET = `@_as_alice:${SERVER}`;
const quiet = { debug() {}, info() {}, warn() {}, error() {} };

describe("immediate calls against the scripted homeserver, records in DynamoDB Local", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `calls-${randomUUID().slice(0, 8)}`;
  let homeserver: ScriptedHomeserver;
  beforeAll(() => ensureTable(client, tableName));
  afterAll(() => client.destroy());
  afterEach(() => homeserver?.stop());

  /**
   * A homeserver of its own and records of their own (a fresh prefix) for each test, and a table
   * of its own for the Intent's memory (its keys are the users' and rooms' IDs).
   */
  const setUp = async (overrides: Partial<HomeserverCallsDeps> = {}) => {
    homeserver = new ScriptedHomeserver("as-token", SERVER, BOT, (user) =>
      user.startsWith("@_as_"),
    );
    homeserver.aliasInNamespace = (alias) => alias.startsWith("#_as_");
    await homeserver.start();
    const records = new DynamoDbAppData(
      client,
      tableName,
      `${CALL_RECORDS_KEY_PREFIX}${randomUUID().slice(0, 8)}#`,
    );
    const memoryTable = `calls-memory-${randomUUID().slice(0, 8)}`;
    await ensureTable(client, memoryTable);
    const deps: HomeserverCallsDeps = {
      homeserver: new HttpHomeserverClient(homeserver.url, "as-token", BOT, 2_000),
      botUserId: BOT,
      records,
      intentMemory: new DynamoDbIntentMemory(client, memoryTable),
      ownsAlias: (alias) => alias.startsWith("#_as_"),
      derivedAliasPrefix: "_as_",
      log: quiet,
      ...overrides,
    };
    return { calls: new HttpHomeserverCalls(deps), records, deps };
  };
  const creations = () => homeserver.requests.filter((r) => r.path.endsWith("/createRoom"));

  describe("createRoom", () => {
    it("one room per key, however often and however concurrently it is asked", async () => {
      const { calls } = await setUp();
      const ids = await Promise.all(
        Array.from({ length: 8 }, () => calls.createRoom("remote:general", { name: "general" })),
      );
      expect(new Set(ids).size).toBe(1);
      expect(homeserver.createdRooms).toHaveLength(1);
      expect(await calls.createRoom("remote:general")).toBe(ids[0]);
      // Another key, another room; the derived alias is in the namespace.
      const other = await calls.createRoom("remote:random");
      expect(other).not.toBe(ids[0]);
      expect([...homeserver.aliases.keys()]).toEqual([
        expect.stringMatching(/^#_as_rooms_[0-9a-f]{32}:calls\.test$/),
        expect.stringMatching(/^#_as_rooms_[0-9a-f]{32}:calls\.test$/),
      ]);
      expect(homeserver.state.get(`${ids[0]}\nm.room.name\n`)?.content).toEqual({
        name: "general",
      });
    });

    it("a crash between the homeserver's answer and the record: the repeat resolves the alias, one room", async () => {
      let crashed = false;
      const { calls, records, deps } = await setUp({ claimLeaseMs: 500 });
      // The process dies once the room exists: no write of it reaches the table.
      const dying: AppDataStore = {
        get: (collection, key) => records.get(collection, key),
        list: (collection) => records.list(collection),
        write: async (writes) => {
          if (homeserver.createdRooms.length > 0) {
            crashed = true;
            throw new Error("crashed");
          }
          return records.write(writes);
        },
      };
      const crashing = new HttpHomeserverCalls({ ...deps, records: dying });
      await expect(crashing.createRoom("remote:general", { alias: "_as_general" })).rejects.toThrow(
        "crashed",
      );
      expect(crashed).toBe(true);
      expect(homeserver.createdRooms).toHaveLength(1);
      // The retry waits out the dead handler's claim, is told the alias is taken, and resolves it.
      const roomId = await calls.createRoom("remote:general", { alias: "_as_general" });
      expect(roomId).toBe(homeserver.createdRooms[0]?.roomId);
      expect(homeserver.createdRooms).toHaveLength(1);
      expect(creations().map((r) => [r.status, r.body])).toEqual([
        [200, expect.objectContaining({ room_alias_name: "_as_general" })],
        [400, expect.objectContaining({ room_alias_name: "_as_general" })],
      ]);
      expect(homeserver.requests.at(-1)?.path).toBe(
        "/_matrix/client/v3/directory/room/%23_as_general%3Acalls.test",
      );
      // Recorded now: no more calls.
      const before = homeserver.requests.length;
      expect(await calls.createRoom("remote:general", { alias: "_as_general" })).toBe(roomId);
      expect(homeserver.requests.length).toBe(before);
    });

    it("the options reach the request: creator puppet (registered on demand), invitees, avatar, power levels, state, version", async () => {
      const { calls } = await setUp();
      const roomId = await calls.createRoom("dm-ish", {
        as: PUPPET,
        name: "n",
        topic: "t",
        avatarUrl: "mxc://calls.test/avatar",
        invite: ["@carol:calls.test"],
        isDirect: true,
        powerLevels: { events_default: 50 },
        initialState: [{ type: "m.room.guest_access", content: { guest_access: "forbidden" } }],
        roomVersion: "11",
      });
      expect(homeserver.registered.has(PUPPET)).toBe(true);
      expect(homeserver.createdRooms).toEqual([
        {
          roomId,
          creator: PUPPET,
          body: {
            room_alias_name: expect.stringMatching(/^_as_rooms_/),
            name: "n",
            topic: "t",
            invite: ["@carol:calls.test"],
            is_direct: true,
            room_version: "11",
            power_level_content_override: { events_default: 50 },
            initial_state: [
              { type: "m.room.avatar", state_key: "", content: { url: "mxc://calls.test/avatar" } },
              { type: "m.room.guest_access", content: { guest_access: "forbidden" } },
            ],
          },
        },
      ]);
    });

    it("an alias outside the namespaces is refused before any call; without a prefix, an alias is needed", async () => {
      const { calls, deps } = await setUp();
      await expect(calls.createRoom("k", { alias: "general" })).rejects.toMatchObject({
        name: "HomeserverRefused",
        errcode: "M_EXCLUSIVE",
      });
      const noPrefix = new HttpHomeserverCalls({ ...deps, derivedAliasPrefix: undefined });
      await expect(noPrefix.createRoom("k")).rejects.toThrow(/needs options.alias/);
      expect(homeserver.requests).toEqual([]);
    });

    it("429 and 5xx are retried within the budget; past it, BudgetExhausted and the claim is freed", async () => {
      const { calls } = await setUp({ budgetMs: 3_000 });
      homeserver.cue((r) => r.path.endsWith("/createRoom"), {
        status: 429,
        body: { errcode: "M_LIMIT_EXCEEDED", retry_after_ms: 300 },
      });
      homeserver.cue((r) => r.path.endsWith("/createRoom"), { status: 502, body: {} });
      const roomId = await calls.createRoom("flaky");
      expect(creations().map((r) => r.status)).toEqual([429, 502, 200]);
      expect(homeserver.createdRooms.map((r) => r.roomId)).toEqual([roomId]);

      homeserver.cue((r) => r.path.endsWith("/createRoom"), { status: 500, body: {} }, 1000);
      await expect(calls.createRoom("down")).rejects.toBeInstanceOf(BudgetExhausted);
      homeserver.clearCues();
      // Freed at once: the retry creates it without waiting for a lease.
      const started = Date.now();
      await calls.createRoom("down");
      expect(Date.now() - started).toBeLessThan(2_000);
    });

    it("a direct-message room once per (user, acting user)", async () => {
      const { calls } = await setUp();
      const a = await calls.directRoom("@carol:calls.test");
      expect(await calls.directRoom("@carol:calls.test")).toBe(a);
      const b = await calls.directRoom("@carol:calls.test", { as: PUPPET });
      expect(b).not.toBe(a);
      expect(
        homeserver.createdRooms.map((r) => [
          r.creator,
          r.body.invite,
          r.body.is_direct,
          r.body.preset,
        ]),
      ).toEqual([
        [BOT, ["@carol:calls.test"], true, "trusted_private_chat"],
        [PUPPET, ["@carol:calls.test"], true, "trusted_private_chat"],
      ]);
    });
  });

  describe("media", () => {
    it("create then PUT; the same bytes give the same URI, uploaded once; downloads authenticated", async () => {
      const { calls } = await setUp();
      const bytes = randomBytes(1000);
      const uri = await calls.uploadMedia(bytes, { contentType: "image/png", fileName: "a b.png" });
      expect(uri).toMatch(/^mxc:\/\/calls\.test\/[0-9a-f]+$/);
      // A stream of the same bytes, concurrently twice.
      async function* chunks() {
        yield bytes.subarray(0, 10);
        yield bytes.subarray(10);
      }
      expect(
        await Promise.all([
          calls.uploadMedia(chunks(), { contentType: "image/png" }),
          calls.uploadMedia(Uint8Array.from(bytes), { contentType: "image/png" }),
        ]),
      ).toEqual([uri, uri]);
      const uploads = homeserver.requests.filter((r) => r.path.startsWith("/_matrix/media/"));
      expect(
        uploads.map((r) => [r.method, r.path.replace(/[0-9a-f]{32}$/, "ID"), r.status]),
      ).toEqual([
        ["POST", "/_matrix/media/v1/create", 200],
        ["PUT", "/_matrix/media/v3/upload/calls.test/ID", 200],
      ]);
      expect(uploads[1]?.query).toEqual({ filename: "a b.png" });
      expect(uploads[1]?.contentType).toBe("image/png");

      const downloaded = await calls.downloadMedia(uri);
      expect(Buffer.from(downloaded?.bytes ?? [])).toEqual(bytes);
      expect(downloaded).toMatchObject({ contentType: "image/png", fileName: "a b.png" });
      expect(homeserver.requests.at(-1)?.path).toMatch(/^\/_matrix\/client\/v1\/media\/download\//);
      expect(await calls.downloadMedia("mxc://calls.test/nothere")).toBeUndefined();
      await expect(calls.downloadMedia(uri, { maxBytes: 999 })).rejects.toBeInstanceOf(
        MediaTooLarge,
      );
    });

    /** A handler that dies uploading `bytes`: the URI created, the upload never answered. */
    const dieUploading = async (deps: HomeserverCallsDeps, bytes: Uint8Array) => {
      homeserver.cue((r) => r.method === "PUT" && r.path.includes("/upload/"), { hang: true });
      const dying = new HttpHomeserverCalls({
        ...deps,
        homeserver: new HttpHomeserverClient(homeserver.url, "as-token", BOT, 300),
        budgetMs: 100,
      });
      await expect(dying.uploadMedia(bytes, { contentType: "text/plain" })).rejects.toThrow();
    };

    it("a crash between create and upload: the repeat uploads to the recorded URI", async () => {
      const { calls, deps } = await setUp();
      const bytes = randomBytes(64);
      await dieUploading(deps, bytes);
      const uri = await calls.uploadMedia(bytes, { contentType: "text/plain" });
      expect(homeserver.requests.filter((r) => r.path === "/_matrix/media/v1/create")).toHaveLength(
        1,
      );
      expect([...homeserver.media.keys()]).toEqual([uri.split("/").pop()]);
      expect(homeserver.media.get(uri.split("/").pop() as string)?.bytes).toEqual(bytes);
    });

    it("a created URI that expired unused (a crash long ago): another is created, recorded and uploaded to", async () => {
      const { calls, deps } = await setUp();
      const bytes = randomBytes(64);
      await dieUploading(deps, bytes);
      const [expired] = [...homeserver.media.keys()];
      // Synapse forgets a created URI nothing was uploaded to (after 24 hours).
      homeserver.media.delete(expired as string);
      const uri = await calls.uploadMedia(bytes, { contentType: "text/plain" });
      expect(uri).not.toBe(`mxc://${SERVER}/${expired}`);
      expect(homeserver.media.get(uri.split("/").pop() as string)?.bytes).toEqual(bytes);
      expect(await calls.uploadMedia(bytes, { contentType: "text/plain" })).toBe(uri);
      expect(
        homeserver.requests
          .filter((r) => r.path.startsWith("/_matrix/media/"))
          .map((r) => [r.method, r.status]),
      ).toEqual([
        ["POST", 200],
        ["PUT", undefined],
        ["PUT", 404],
        ["POST", 200],
        ["PUT", 200],
      ]);
    });

    it("before Matrix 1.7 and 1.11: the v3 upload and the v3 download", async () => {
      const { calls } = await setUp();
      homeserver.mediaCreateSupported = false;
      homeserver.authenticatedMediaSupported = false;
      const bytes = randomBytes(100);
      const uri = await calls.uploadMedia(bytes, { contentType: "application/pdf" });
      expect(await calls.uploadMedia(bytes, { contentType: "application/pdf" })).toBe(uri);
      const downloaded = await calls.downloadMedia(uri);
      expect(Buffer.from(downloaded?.bytes ?? [])).toEqual(bytes);
      expect(
        homeserver.requests.map((r) => [r.method, r.path.replace(/[0-9a-f]{32}$/, "ID"), r.status]),
      ).toEqual([
        ["GET", "/_matrix/client/v1/media/config", 404],
        ["GET", "/_matrix/media/v3/config", 200],
        ["POST", "/_matrix/media/v1/create", 404],
        ["POST", "/_matrix/media/v3/upload", 200],
        ["GET", "/_matrix/media/v3/download/calls.test/ID", 200],
      ]);
    });

    it("over m.upload.size: MediaTooLarge, nothing uploaded", async () => {
      const { calls } = await setUp();
      homeserver.maxUploadBytes = 100;
      await expect(calls.uploadMedia(randomBytes(101), { contentType: "x/y" })).rejects.toThrow(
        /over the homeserver's upload limit \(m\.upload\.size 100 bytes; 101 given\)/,
      );
      expect(homeserver.requests.map((r) => r.path)).toEqual(["/_matrix/client/v1/media/config"]);
      expect(await calls.uploadMedia(randomBytes(100), { contentType: "x/y" })).toMatch(/^mxc:/);
    });
  });

  describe("reads, puppets and power levels", () => {
    it("alias, members with their names, one event, a profile", async () => {
      const { calls } = await setUp();
      const roomId = await calls.createRoom("r", { alias: "_as_r" });
      expect(await calls.resolveAlias(`#_as_r:${SERVER}`)).toBe(roomId);
      expect(await calls.resolveAlias(`#_as_none:${SERVER}`)).toBeUndefined();
      await calls.ensurePuppet(PUPPET, {
        displayName: "Alice",
        avatarUrl: "mxc://calls.test/alice",
        roomId,
        roomProfile: { displayName: "Alice (general)" },
      });
      expect(await calls.joinedMembers(roomId)).toEqual({
        [BOT]: {},
        [PUPPET]: { displayName: "Alice (general)", avatarUrl: "mxc://calls.test/alice" },
      });
      expect(await calls.profile(PUPPET)).toEqual({
        displayName: "Alice",
        avatarUrl: "mxc://calls.test/alice",
      });
      expect(await calls.profile(`@_as_nobody:${SERVER}`)).toBeUndefined();
      const response = await fetch(
        `${homeserver.url}/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/t1`,
        {
          method: "PUT",
          headers: { authorization: "Bearer as-token" },
          body: JSON.stringify({ msgtype: "m.text", body: "hi" }),
        },
      );
      const { event_id } = (await response.json()) as { event_id: string };
      expect(await calls.event(roomId, event_id)).toMatchObject({
        event_id,
        room_id: roomId,
        sender: BOT,
        content: { body: "hi" },
      });
      expect(await calls.event(roomId, "$none")).toBeUndefined();
      await expect(calls.joinedMembers("!elsewhere:calls.test")).rejects.toBeInstanceOf(
        HomeserverRefused,
      );
    });

    it("ensurePuppet: registered, profile, joined through the bot's invite, once; again only what changed", async () => {
      const { calls } = await setUp();
      const roomId = await calls.createRoom("p");
      const puppet = { displayName: "Alice", roomId };
      await calls.ensurePuppet(PUPPET, puppet);
      expect(homeserver.rooms.get(roomId)?.has(PUPPET)).toBe(true);
      const calledFirst = homeserver.requests.length;
      await calls.ensurePuppet(PUPPET, puppet);
      expect(homeserver.requests.length).toBe(calledFirst);
      await calls.ensurePuppet(PUPPET, { ...puppet, displayName: "Alice B" });
      expect(homeserver.requests.slice(calledFirst).map((r) => [r.method, r.path, r.body])).toEqual(
        [
          [
            "PUT",
            `/_matrix/client/v3/profile/${encodeURIComponent(PUPPET)}/displayname`,
            { displayname: "Alice B" },
          ],
        ],
      );
    });

    it("a portal: m.bridge (MSC2346) and uk.half-shot.bridge state, the bot its bridgebot", async () => {
      const { calls } = await setUp();
      const bridge = {
        protocol: { id: "relay", displayname: "Relay" },
        channel: { id: "general/x", displayname: "general" },
      };
      const roomId = await calls.createRoom("portal", { bridge });
      const stateKey = `${encodeURIComponent(BOT)}/relay/general%2Fx`;
      for (const type of ["m.bridge", "uk.half-shot.bridge"]) {
        expect(homeserver.state.get(`${roomId}\n${type}\n${stateKey}`)).toEqual({
          sender: BOT,
          content: { bridgebot: BOT, ...bridge },
        });
      }
    });

    it("room version 12: creators (the creator, additional_creators) never in the power levels' users; its opaque room ID kept as given", async () => {
      const { calls } = await setUp();
      const carol = "@carol:calls.test";
      const roomId = await calls.createRoom("v12", {
        roomVersion: "12",
        additionalCreators: [carol],
        powerLevels: { users: { [BOT]: 100, [carol]: 100, [PUPPET]: 50 }, events_default: 10 },
      });
      // No server name in it: nothing parses it.
      expect(roomId).toMatch(/^![A-Za-z0-9_-]+$/);
      expect(creations()[0]?.body).toMatchObject({
        room_version: "12",
        creation_content: { additional_creators: [carol] },
        power_level_content_override: { users: { [PUPPET]: 50 }, events_default: 10 },
      });
      expect(await calls.createRoom("v12")).toBe(roomId);
      // A creator's power is infinite already: nothing written (the homeserver would refuse it).
      const writes = () =>
        homeserver.requests.filter(
          (r) => r.method === "PUT" && r.path.includes("m.room.power_levels"),
        ).length;
      await calls.setPowerLevel(roomId, BOT, 100);
      await calls.setPowerLevel(roomId, carol, 50);
      expect(writes()).toBe(0);
      await calls.setPowerLevel(roomId, PUPPET, 75);
      expect(writes()).toBe(1);
      expect(homeserver.state.get(`${roomId}\nm.room.power_levels\n`)?.content.users).toEqual({
        [PUPPET]: 75,
      });
    });

    it("no version given: the homeserver's default decides (asked once); before 12 the power levels go as given", async () => {
      const { calls } = await setUp();
      homeserver.defaultRoomVersion = "12";
      const levels = { users: { [BOT]: 100, [PUPPET]: 50 } };
      await calls.createRoom("default-a", { powerLevels: levels });
      await calls.createRoom("default-b", { powerLevels: levels });
      await calls.createRoom("v11", { roomVersion: "11", powerLevels: levels });
      expect(
        creations().map((r) => (r.body as Record<string, unknown>).power_level_content_override),
      ).toEqual([{ users: { [PUPPET]: 50 } }, { users: { [PUPPET]: 50 } }, levels]);
      expect(homeserver.requests.filter((r) => r.path.endsWith("/capabilities"))).toHaveLength(1);
    });

    it("setPowerLevel: read-modify-write, written again when a concurrent change undid it", async () => {
      const { calls } = await setUp();
      const roomId = await calls.createRoom("pl");
      // The first write is lost (a stale writer overwrote it): the homeserver answers, changes nothing.
      homeserver.cue((r) => r.method === "PUT" && r.path.includes("m.room.power_levels"), {
        status: 200,
        body: { event_id: "$lost" },
      });
      await calls.setPowerLevel(roomId, PUPPET, 50);
      const levels = homeserver.state.get(`${roomId}\nm.room.power_levels\n`)?.content;
      expect(levels).toMatchObject({ users: { [BOT]: 100, [PUPPET]: 50 }, state_default: 50 });
      const plCalls = homeserver.requests.filter((r) => r.path.includes("m.room.power_levels"));
      expect(plCalls.map((r) => r.method)).toEqual(["GET", "PUT", "GET", "PUT", "GET"]);
      // Already so: read only.
      await calls.setPowerLevel(roomId, PUPPET, 50);
      expect(
        homeserver.requests.filter((r) => r.path.includes("m.room.power_levels")),
      ).toHaveLength(6);
    });
  });
});
