import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RELAY_PREFIX } from "../../functions/applications/relay/names.ts";
import type { Registration } from "../../functions/appservice/protocol/registration.ts";
import { signatureValid } from "../../functions/remote/signature.ts";
import { makeEvent, putTransaction, waitFor } from "../support/appservice.ts";
import type { RecordedRequest, ScriptedHomeserver } from "../support/homeserver.ts";
import { type NpmStart, startNpmFor, stopAllNpmStarts } from "../support/npm-start.ts";
import { RemoteService, signedPost, signedRequest } from "../support/remote-service.ts";
import { waitForAsync } from "../support/wait.ts";
import { homeserverWithRegistration, SERVER } from "../support/with-homeserver.ts";

// The relay through `npm start` (APPLICATION=relay), one process for the file's cases: this test
// plays the remote chat service on both of its sides, beside the scripted homeserver.

const BOT = `@bot:${SERVER}`;
const BOB = `@bob:${SERVER}`;
// DynamoDB Local is the run's shared one: names of this run's own.
const run = randomUUID().slice(0, 8);
const puppetOf = (user: string) => `@${RELAY_PREFIX}${user}:${SERVER}`;
const BACKOFF_CAP_SECONDS = 2;

let remote: RemoteService;
let homeserver: ScriptedHomeserver;
let registration: Registration;
let npm: NpmStart;
/** The relay's secret, which npm start wrote beside the registration (no RELAY_SECRET given). */
let secret: string;
let secretFile: string;
/** `npm start` again on the same port and data (the run's DynamoDB Local), as after a crash. */
let restartNpm: () => Promise<NpmStart>;

beforeAll(async () => {
  const withRegistration = await homeserverWithRegistration({
    id: "relay-npm-start",
    userPrefixes: [RELAY_PREFIX],
    aliasPrefixes: [RELAY_PREFIX],
  });
  ({ homeserver, registration } = withRegistration);
  secretFile = join(dirname(withRegistration.registrationPath), "relay-secret");
  // Started before the secret exists: it checks the signatures with what the file holds then.
  remote = new RemoteService();
  await remote.start();
  const env = {
    APPLICATION: "relay",
    RELAY_URL: remote.url,
    // None given: npm start makes one, in a file beside the registration.
    RELAY_SECRET: "",
    ADMIN_TOKEN: "",
    // Retries of a refused delivery at most 2 s apart, and a dead process's room claim held 5 s
    // (defaults 300 s and 50 s): the outage and crash cases wait seconds, not a minute each.
    OUTBOX_BACKOFF_CAP_SECONDS: String(BACKOFF_CAP_SECONDS),
    ROOM_CLAIM_LEASE_SECONDS: "5",
  };
  npm = await startNpmFor(withRegistration, env);
  secret = (await readFile(secretFile, "utf8")).trim();
  const port = String(npm.port);
  restartNpm = () => startNpmFor(withRegistration, { ...env, PORT: port });
}, 120_000);

afterAll(async () => {
  await stopAllNpmStarts("SIGTERM");
  await homeserver?.stop();
  await remote?.stop();
});

/** The remote service posting a message to its channel's route, signed with the secret. */
const post = (channel: string, message: Record<string, unknown>) =>
  signedPost(`${npm.url}/relay/${channel}/messages`, secret, message);

/** Bob in the portal, with his name there. */
function bobJoins(portal: string) {
  const member = { membership: "join", displayname: "Bob" };
  homeserver.rooms.get(portal)?.add(BOB);
  homeserver.setState(portal, "m.room.member", BOB, member, BOB);
}

/** Polls of the console's API under its rate (OPERATOR_RATE: 5 a second), which 100 ms ran out of. */
const ADMIN_POLL_MS = 300;

/** The operator console's API: `path` under `/admin/api/`, as JSON. */
async function admin(path: string): Promise<unknown> {
  const response = await fetch(`${npm.url}/admin/api/${path}`, {
    headers: { authorization: `Bearer ${npm.adminToken}` },
  });
  if (!response.ok) throw new Error(`GET /admin/api/${path}: ${response.status}`);
  return response.json();
}

/** The outbound calls the operator console shows retried because the remote service refused them. */
async function refusedCalls() {
  const { outbound } = (await admin("traffic")) as {
    outbound: { outcome: string; reason?: string }[];
  };
  return outbound.filter(
    (call) => call.outcome === "retry" && call.reason?.startsWith("remote service unreachable"),
  );
}

/** Nothing queued, in flight, delayed or dead-lettered, as the operator console reads it. */
async function atRest() {
  type Depth = { waiting: number; inFlight: number; delayed: number };
  await waitForAsync(
    async () => {
      const status = (await admin("status")) as {
        queues: Record<"inbound" | "outbound", Depth>;
        deadLetters: Record<"inbound" | "outbound", number>;
      };
      const queued = Object.values(status.queues).map((q) => q.waiting + q.inFlight + q.delayed);
      const dead = Object.values(status.deadLetters);
      return [...queued, ...dead].every((count) => count === 0);
    },
    30_000,
    "the queues at rest",
    ADMIN_POLL_MS,
  );
}

describe("the relay through npm start (APPLICATION=relay)", () => {
  it("prints its application and remote service", () => {
    expect(npm.output()).toContain(
      `Application: relay (the remote service at ${remote.url}: RELAY_URL)`,
    );
    expect(npm.output()).toContain(`Application route: POST ${npm.url}/relay/{channel}/messages`);
  });

  it("without RELAY_SECRET: a fresh secret written beside the registration (0600), its path printed, never the secret; an unsigned post → 401", async () => {
    expect(secret.length).toBeGreaterThanOrEqual(32);
    const { stat } = await import("node:fs/promises");
    expect((await stat(secretFile)).mode & 0o777).toBe(0o600);
    expect(npm.output()).toContain(
      `The relay signs and checks requests with the secret in ${secretFile} (new, readable by you only)`,
    );
    expect(npm.output()).not.toContain(secret);
    const unsigned = await fetch(`${npm.url}/relay/general-${run}/messages`, {
      method: "POST",
      body: JSON.stringify({ id: "u1", user: "mallory", display_name: "Admin", text: "hi" }),
    });
    expect(unsigned.status).toBe(401);
    expect(((await unsigned.json()) as { errcode: string }).errcode).toBe("M_UNKNOWN_TOKEN");
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
    bobJoins(portal);
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
      { id: events[0]?.event_id, sender: BOB, display_name: "Bob", text: "hi carol" },
    ]);
    expect(remote.requests[0]?.headers["idempotency-key"]).toMatch(/^[0-9a-f]{64}$/);
    // Signed by the outbox with the secret npm start wrote.
    const seen = remote.requests[0];
    expect(signatureValid(secret, seen?.headers ?? {}, seen?.raw ?? "")).toBe(true);
  });

  it("an edit, a reply at the remote time, a reaction, its removal, a deletion, each requested twice → each done once; a Matrix user's reaction and redaction, in a transaction sent twice → delivered once each", async () => {
    const channel = `edits-${run}`;
    const alice = `alice-${run}`;
    const dave = `dave-${run}`;
    const relay = (method: "POST" | "PUT" | "DELETE", path: string, body: object) =>
      signedRequest(method, `${npm.url}/relay/${channel}${path}`, secret, body);
    const twice = async (request: () => Promise<Response>) => {
      for (let attempt = 0; attempt < 2; attempt++) expect((await request()).status).toBe(202);
    };
    const inChannel = () => homeserver.sent.filter((e) => e.roomId === portal);
    await twice(() => post(channel, { id: "e1", user: alice, text: "helo" }));
    const portal = homeserver.aliases.get(`#${RELAY_PREFIX}${channel}:${SERVER}`) as string;
    // At once: the message's send may still be queued, which the edit waits for.
    await twice(() => relay("PUT", "/messages/e1", { user: alice, text: "hello" }));
    await twice(() =>
      post(channel, { id: "e2", user: dave, text: "hi", reply_to: "e1", ts: 1_600_000_000_000 }),
    );
    await twice(() =>
      relay("POST", "/reactions", { id: "x1", user: dave, message_id: "e1", key: "🎉" }),
    );
    await waitFor(() => inChannel().length >= 4, 30_000, "the sends");
    await twice(() => relay("DELETE", "/reactions/x1", {}));
    await twice(() => relay("DELETE", "/messages/e2", { user: dave }));
    await atRest();
    const [message, edit, reply, reaction] = inChannel();
    expect(inChannel().map((e) => [e.sender, e.type])).toEqual([
      [puppetOf(alice), "m.room.message"],
      [puppetOf(alice), "m.room.message"],
      [puppetOf(dave), "m.room.message"],
      [puppetOf(dave), "m.reaction"],
    ]);
    expect(edit?.content["m.relates_to"]).toEqual({
      rel_type: "m.replace",
      event_id: message?.eventId,
    });
    expect(reply?.content["m.relates_to"]).toEqual({
      "m.in_reply_to": { event_id: message?.eventId },
    });
    const replySends = homeserver.requests.filter((r) => r.path.endsWith(`/${reply?.txnId}`));
    expect(replySends.map((r) => r.query.ts)).toEqual(["1600000000000"]);
    const redacted = homeserver.requests
      .filter((r) => r.path.includes(`/rooms/${encodeURIComponent(portal)}/redact/`))
      .map((r) => decodeURIComponent(r.path.split("/")[7] ?? ""));
    expect(redacted).toEqual([reaction?.eventId, reply?.eventId]);

    // A Matrix user reacts to alice's message, then takes it back.
    bobJoins(portal);
    const hearts = makeEvent(portal, "", {
      sender: BOB,
      type: "m.reaction",
      content: {
        "m.relates_to": { rel_type: "m.annotation", event_id: message?.eventId, key: "❤️" },
      },
    });
    const taken = makeEvent(portal, "", {
      sender: BOB,
      type: "m.room.redaction",
      content: { redacts: hearts.event_id },
    });
    for (let attempt = 0; attempt < 2; attempt++) {
      const response = await putTransaction(
        npm.url,
        `reactions-${run}`,
        { events: [hearts, taken] },
        { token: registration.hs_token },
      );
      expect(response.status).toBe(200);
    }
    const toChannel = () =>
      remote.requests.filter((r) => r.path.startsWith(`/channels/${channel}/`));
    await waitFor(() => toChannel().length >= 2, 30_000, "the deliveries");
    await atRest();
    expect(toChannel().map((r) => [r.method, r.path, r.body ? JSON.parse(r.body) : null])).toEqual([
      [
        "POST",
        `/channels/${channel}/reactions`,
        { id: hearts.event_id, sender: BOB, message_id: "e1", key: "❤️" },
      ],
      ["DELETE", `/channels/${channel}/reactions/${encodeURIComponent(hearts.event_id)}`, null],
    ]);
  });

  it("a crash between the portal's creation and recording it → after a restart, one room, the message sent once as the puppet", async () => {
    const channel = `crash-${run}`;
    const user = `dave-${run}`;
    const alias = `#${RELAY_PREFIX}${channel}:${SERVER}`;
    const isCreatePortal = (r: RecordedRequest) =>
      r.method === "POST" &&
      r.path === "/_matrix/client/v3/createRoom" &&
      (r.body as { room_alias_name?: unknown }).room_alias_name === `${RELAY_PREFIX}${channel}`;
    homeserver.cue(isCreatePortal, { holdAnswer: true });
    const message = { id: "c1", user, display_name: "Dave", text: "still here" };
    const firstPost = post(channel, message).then(
      (response) => response.status,
      () => "no answer",
    );
    await waitFor(() => homeserver.aliases.has(alias), 30_000, "the portal made");
    // Killed while the homeserver holds the room's ID: the room made, not recorded.
    const killedAt = Date.now();
    await npm.stop("SIGKILL", 10_000);
    expect(await firstPost).toBe("no answer");
    npm = await restartNpm();
    // The remote service posts again what got no answer, until it is taken. The dead process's
    // claim on the room holds until its lease (5 s here) runs out: the repeats meanwhile fail.
    await waitForAsync(
      async () => (await post(channel, message)).status === 202,
      60_000,
      "the repeat taken",
    );
    // Within ROOM_CLAIM_LEASE_SECONDS and the restart: the default lease (50 s, from the claim
    // taken before the kill) would have refused the repeats past this.
    expect(Date.now() - killedAt).toBeLessThan(45_000);
    const portal = homeserver.aliases.get(alias) as string;
    await waitFor(() => homeserver.sent.some((e) => e.roomId === portal), 30_000, "the message");
    await atRest();

    expect(
      homeserver.createdRooms.filter(
        (room) => room.body.room_alias_name === `${RELAY_PREFIX}${channel}`,
      ),
    ).toEqual([expect.objectContaining({ roomId: portal })]);
    // The held one (never answered), then the repeat: 400, the alias taken (M_ROOM_IN_USE);
    // and the alias resolved to the room made.
    expect(homeserver.requests.filter(isCreatePortal).map((r) => r.status)).toEqual([
      undefined,
      400,
    ]);
    expect(
      homeserver.requests.filter(
        (r) =>
          r.method === "GET" &&
          r.path === `/_matrix/client/v3/directory/room/${encodeURIComponent(alias)}` &&
          r.status === 200,
      ),
    ).toHaveLength(1);
    expect(
      homeserver.sent
        .filter((e) => e.roomId === portal)
        .map(({ sender, content }) => [sender, content]),
    ).toEqual([[puppetOf(user), { msgtype: "m.text", body: "still here" }]]);
  }, 120_000);

  it("the remote service down for three refused attempts → every delivery arrives once, in order, each with its own Idempotency-Key, the same on its retries", async () => {
    const channel = `outage-${run}`;
    const user = `erin-${run}`;
    const path = `/channels/${channel}/messages`;
    expect((await post(channel, { id: "o1", user, display_name: "Erin", text: "hi" })).status).toBe(
      202,
    );
    const portal = homeserver.aliases.get(`#${RELAY_PREFIX}${channel}:${SERVER}`) as string;
    bobJoins(portal);
    const texts = Array.from({ length: 5 }, (_, n) => `message ${n + 1}`);
    /** Bob writes in the portal: one transaction per message, as the homeserver pushes them. */
    const write = async (text: string) => {
      const response = await putTransaction(
        npm.url,
        `outage-${run}-${text}`,
        { events: [makeEvent(portal, text, { sender: BOB })] },
        { token: registration.hs_token },
      );
      expect(response.status).toBe(200);
    };
    // The service fails the first attempt (503), then goes down: its port refuses connections.
    remote.cue({ status: 503, body: "going down" });
    for (const text of texts.slice(0, 2)) await write(text);
    await waitFor(() => remote.requests.some((r) => r.path === path), 30_000, "the first attempt");
    const refusedBefore = (await refusedCalls()).length;
    await remote.stop();
    const downAt = Date.now();
    for (const text of texts.slice(2)) await write(text);
    // Down until the outbox has met the refusal three times (retried each time, up to the cap
    // apart): a retry then comes back from a wait, not only the first attempt.
    await waitForAsync(
      async () => (await refusedCalls()).length >= refusedBefore + 3,
      30_000,
      "three refused attempts",
      ADMIN_POLL_MS,
    );
    await remote.start();
    const upAt = Date.now();
    const delivered = () => remote.requests.filter((r) => r.path === path && r.status === 200);
    // A retry waits up to 2^attempt s, capped here at BACKOFF_CAP_SECONDS: the next comes within
    // that of its return, then the rest in order (not the up to 64 s of the default cap).
    await waitFor(() => delivered().length >= texts.length, 30_000, "every delivery");
    const lastAt = Date.now();
    // Within the cap of its return (and the four behind it): never a default cap's minute.
    expect(lastAt - upAt).toBeLessThan(BACKOFF_CAP_SECONDS * 1000 + 10_000);
    await atRest();

    const attempts = remote.requests.filter((r) => r.path === path);
    expect(attempts.map((r) => [r.status, (JSON.parse(r.body) as { text: string }).text])).toEqual([
      [503, "message 1"],
      ...texts.map((text) => [200, text]),
    ]);
    expect(delivered().map((r) => JSON.parse(r.body))).toEqual(
      texts.map((text) => ({ id: expect.any(String), sender: BOB, display_name: "Bob", text })),
    );
    const keys = delivered().map((r) => r.headers["idempotency-key"]);
    expect(new Set(keys).size).toBe(texts.length);
    // Signed at each attempt, by a process started again: the secret kept in its file.
    for (const r of delivered()) expect(signatureValid(secret, r.headers, r.raw)).toBe(true);
    expect(attempts[0]?.headers["idempotency-key"]).toBe(keys[0]);
    // Refused attempts were made and retried while it was down, as the operator console shows.
    const refused = await refusedCalls();
    expect(refused.length).toBeGreaterThanOrEqual(refusedBefore + 3);
    console.log(
      `remote down ${upAt - downAt} ms, ${refused.length} refused attempts retried; every delivery in ${lastAt - upAt} ms after it came back`,
    );
  }, 120_000);
});
