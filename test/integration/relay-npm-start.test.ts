import { randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createNamespaceMatcher } from "../../functions/appservice/protocol/namespaces.ts";
import {
  newRegistration,
  type Registration,
  registrationYaml,
} from "../../functions/appservice/protocol/registration.ts";
import { freePort } from "../../functions/local/free-port.ts";
import { RELAY_PREFIX } from "../../functions/relay/names.ts";
import { makeEvent, putTransaction, tempDir, waitFor } from "../support/appservice.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";
import { type NpmStart, startNpm, stopAllNpmStarts } from "../support/npm-start.ts";
import { RemoteService } from "../support/remote-service.ts";
import { waitForAsync } from "../support/wait.ts";

// The relay through `npm start` (APPLICATION=relay), one process for the file's cases: this test
// plays the remote chat service on both of its sides, beside the scripted homeserver.

const SERVER = "test.local";
const BOT = `@bot:${SERVER}`;
const BOB = `@bob:${SERVER}`;
// DynamoDB Local is the run's shared one: names of this run's own.
const run = randomUUID().slice(0, 8);
const puppetOf = (user: string) => `@${RELAY_PREFIX}${user}:${SERVER}`;

let remote: RemoteService;
let homeserver: ScriptedHomeserver;
let registration: Registration;
let npm: NpmStart;

beforeAll(async () => {
  remote = new RemoteService();
  await remote.start();
  registration = newRegistration({
    id: "relay-npm-start",
    url: null,
    senderLocalpart: "bot",
    serverName: SERVER,
    prefix: "_as_",
    userPrefixes: [RELAY_PREFIX],
    aliasPrefixes: [RELAY_PREFIX],
  });
  const registrationPath = join(await tempDir(), "registration.yaml");
  await writeFile(registrationPath, registrationYaml(registration));
  const namespaces = createNamespaceMatcher(registration.namespaces);
  homeserver = new ScriptedHomeserver(registration.as_token, SERVER, BOT, (userId) =>
    namespaces.matches("users", userId),
  );
  homeserver.aliasInNamespace = (alias) => namespaces.matches("aliases", alias);
  await homeserver.start();
  npm = await startNpm({
    APPLICATION: "relay",
    RELAY_URL: remote.url,
    PORT: String(await freePort()),
    REGISTRATION: registrationPath,
    HOMESERVER_URL: homeserver.url,
    SERVER_NAME: SERVER,
    DYNAMODB_ENDPOINT: inject("dynamodbEndpoint"),
    ADMIN_TOKEN: "",
  });
  homeserver.appservice = { id: registration.id, url: npm.url, hsToken: registration.hs_token };
}, 120_000);

afterAll(async () => {
  await stopAllNpmStarts("SIGTERM");
  await homeserver?.stop();
  await remote?.stop();
});

/** The remote service posting a message to its channel's route. */
const post = (channel: string, message: Record<string, unknown>) =>
  fetch(`${npm.url}/relay/${channel}/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(message),
  });

/** Nothing queued, in flight, delayed or dead-lettered, as the operator console reads it. */
async function atRest() {
  type Depth = { waiting: number; inFlight: number; delayed: number };
  await waitForAsync(
    async () => {
      const response = await fetch(`${npm.url}/admin/api/status`, {
        headers: { authorization: `Bearer ${npm.adminToken}` },
      });
      const status = (await response.json()) as {
        queues: Record<"inbound" | "outbound", Depth>;
        deadLetters: Record<"inbound" | "outbound", number>;
      };
      const queued = Object.values(status.queues).map((q) => q.waiting + q.inFlight + q.delayed);
      const dead = Object.values(status.deadLetters);
      return [...queued, ...dead].every((count) => count === 0);
    },
    30_000,
    "the queues at rest",
  );
}

describe("the relay through npm start (APPLICATION=relay)", () => {
  it("prints its application and remote service", () => {
    expect(npm.output()).toContain(
      `Application: relay (the remote service at ${remote.url}: RELAY_URL)`,
    );
    expect(npm.output()).toContain(`Application route: POST ${npm.url}/relay/{channel}/messages`);
  });

  it("a remote message → its portal made once, the puppet registered and joined, the text sent as it; the same id again → one Matrix message", async () => {
    const channel = `general-${run}`;
    const user = `alice-${run}`;
    const message = { id: "m1", user, display_name: "Alice", text: "hello" };
    expect((await post(channel, message)).status).toBe(202);
    expect((await post(channel, message)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 1, 30_000, "the message");
    await atRest();

    expect(homeserver.createdRooms.map((room) => room.body)).toEqual([
      expect.objectContaining({ name: channel, room_alias_name: `${RELAY_PREFIX}${channel}` }),
    ]);
    const portal = homeserver.aliases.get(`#${RELAY_PREFIX}${channel}:${SERVER}`) as string;
    expect(homeserver.registered.has(puppetOf(user))).toBe(true);
    expect(homeserver.rooms.get(portal)?.has(puppetOf(user))).toBe(true);
    expect(homeserver.profiles.get(puppetOf(user))).toMatchObject({ displayname: "Alice" });
    expect(homeserver.sent.map(({ roomId, sender, content }) => [roomId, sender, content])).toEqual(
      [[portal, puppetOf(user), { msgtype: "m.text", body: "hello" }]],
    );
  });

  it("a Matrix user's message in the portal → delivered once, with an Idempotency-Key; the puppet's and the bot's never", async () => {
    const channel = `random-${run}`;
    const user = `carol-${run}`;
    expect(
      (await post(channel, { id: "r1", user, display_name: "Carol", text: "hi" })).status,
    ).toBe(202);
    const portal = homeserver.aliases.get(`#${RELAY_PREFIX}${channel}:${SERVER}`) as string;
    // Bob in the portal, with his name there.
    const member = { membership: "join", displayname: "Bob" };
    homeserver.rooms.get(portal)?.add(BOB);
    homeserver.setState(portal, "m.room.member", BOB, member, BOB);
    const events = [
      makeEvent(portal, "hi carol", { sender: BOB }),
      makeEvent(portal, "hi", { sender: puppetOf(user) }),
      makeEvent(portal, "a notice", { sender: BOT }),
    ];
    // Sent twice, as a homeserver retries a transaction whose answer it lost.
    for (let attempt = 0; attempt < 2; attempt++) {
      const response = await putTransaction(
        npm.url,
        `portal-${run}`,
        { events },
        { token: registration.hs_token },
      );
      expect(response.status).toBe(200);
    }
    await waitFor(() => remote.requests.length >= 1, 30_000, "the delivery");
    await atRest();

    expect(remote.requests.map((r) => [r.method, r.path])).toEqual([
      ["POST", `/channels/${channel}/messages`],
    ]);
    expect(remote.bodies(`/channels/${channel}/messages`)).toEqual([
      { sender: BOB, display_name: "Bob", text: "hi carol" },
    ]);
    expect(remote.requests[0]?.headers["idempotency-key"]).toMatch(/^[0-9a-f]{64}$/);
  });
});
