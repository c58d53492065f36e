import { GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { describe, expect, it } from "vitest";
import type { Application } from "../../functions/appservice/application.ts";
import { localDynamoDb, localSqs } from "../../functions/local/aws-clients.ts";
import type { LocalOptions } from "../../functions/local/local.ts";
import { SqsFifoQueue } from "../../functions/queue/sqs/queue.ts";
import type { Log } from "../../functions/shared/log.ts";
import { DynamoDbDeadLetters } from "../../functions/store/dynamodb/dead-letters.ts";
import { makeEvent, NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { waitForAsync } from "../support/wait.ts";
import { startWithHomeserver } from "../support/with-homeserver.ts";

const isSend = (r: { method: string; path: string }) =>
  r.method === "PUT" && r.path.includes("/send/");

/** Echoes each message of a user as `echo: <body>`. */
const echo: Application = {
  async onEvent(event, { actions }) {
    if (event.type === "m.room.message" && !event.sender.startsWith("@bot")) {
      await actions.sendMessage(event.room_id, `echo: ${String(event.content.body)}`);
    }
  },
};

/** A log that keeps every line (and prints nothing). */
const keptLog = () => {
  const lines: { level: string; message: string; attributes: Record<string, unknown> }[] = [];
  const method =
    (level: string) =>
    (message: string, ...attributes: Record<string, unknown>[]) =>
      lines.push({ level, message, attributes: Object.assign({}, ...attributes) });
  const log: Log = {
    debug: method("debug"),
    info: method("info"),
    warn: method("warn"),
    error: method("error"),
  };
  return { log, lines };
};

const ADMIN_TOKEN = "a".repeat(40);

// biome-ignore lint/suspicious/noExplicitAny: the answers' shapes are what the tests check.
type Loose = any;

async function consoleOf(options: Partial<LocalOptions>) {
  const { log, lines } = keptLog();
  const started = await startWithHomeserver({ ...options, adminToken: ADMIN_TOKEN, log });
  const call = async <T = Loose>(path: string, body?: unknown, token = ADMIN_TOKEN) => {
    const response = await fetch(`${started.local.url}/admin/api/${path}`, {
      method: body === undefined ? "GET" : "POST",
      headers: {
        ...(token && { authorization: `Bearer ${token}` }),
        "x-operator": "alice the operator",
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    return {
      status: response.status,
      headers: response.headers,
      body: (await response.json()) as T,
    };
  };
  return { ...started, call, lines };
}

describe("operator console API", () => {
  it("refuses every API request without the admin token (401 M_UNAUTHORIZED); the page needs none", async () => {
    const { local, call } = await consoleOf({ application: echo });
    for (const [path, body] of [
      ["status", undefined],
      ["traffic", undefined],
      ["dead-letters", undefined],
      ["sections", undefined],
      ["sections/rooms", undefined],
      ["dead-letters/replay", { direction: "outbound", all: true }],
      ["dead-letters/discard", { direction: "outbound", all: true }],
    ] as const) {
      for (const token of ["", `${ADMIN_TOKEN}x`]) {
        const answer = await call(path, body, token);
        expect({ path, token, status: answer.status, errcode: answer.body.errcode }).toEqual({
          path,
          token,
          status: 401,
          errcode: "M_UNAUTHORIZED",
        });
      }
    }
    // Not in the query string either.
    const query = await fetch(`${local.url}/admin/api/status?access_token=${ADMIN_TOKEN}`);
    expect(query.status).toBe(401);
    // The registration's tokens are not the admin token.
    const hsToken = await call("status", undefined, local.registration.hs_token);
    expect(hsToken.status).toBe(401);

    const page = await fetch(`${local.url}/admin`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("set-cookie")).toBeNull();
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).not.toContain("unsafe-inline");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(await page.text()).not.toContain(ADMIN_TOKEN);

    const status = await call("status");
    expect(status.status).toBe(200);
    expect(status.headers.get("set-cookie")).toBeNull();
    expect(status.body).toMatchObject({
      version: expect.any(String),
      homeserver: { reachable: true },
      queues: { inbound: { waiting: 0 }, outbound: { waiting: 0 } },
      deadLetters: { inbound: 0, outbound: 0 },
    });
  });

  it("shows the sections the application declares: their columns, then their rows, loaded with the recent calls; an unknown section is 404", async () => {
    const room = "!sections:test.local";
    const declared = {
      id: "rooms",
      title: "Rooms <echoed>",
      columns: [
        { key: "roomId", label: "room" },
        { key: "last", label: "last call" },
      ],
    };
    const withSection: Application = {
      ...echo,
      consoleSections: [
        {
          ...declared,
          async rows(context) {
            const [last] = (await context.recentCalls()).filter((call) => call.roomId === room);
            return [{ roomId: room, last: last && `${last.outcome} ${last.status}`, more: true }];
          },
        },
      ],
    };
    const { homeserver, send, bot, call } = await consoleOf({ application: withSection });
    homeserver.createRoom(room, [bot]);
    await send("t1", [makeEvent(room, "hello")]);
    await waitFor(() => homeserver.sent.length === 1);

    // The declarations alone, without their loader.
    expect((await call("sections")).body).toEqual({ sections: [declared] });
    await waitForAsync(
      async () => (await call("sections/rooms")).body.rows[0].last === "done 200",
      10_000,
      "the echo's call in the section",
    );
    expect((await call("sections/rooms")).body).toEqual({
      rows: [{ roomId: room, last: "done 200", more: true }],
    });
    for (const path of ["sections/nothing", "sections/Rooms", "sections/", "sections/rooms/x"]) {
      const answer = await call(path);
      expect({ path, status: answer.status, errcode: answer.body.errcode }).toEqual({
        path,
        status: 404,
        errcode: "M_UNRECOGNIZED",
      });
    }
  });

  it("rate-limits the API: past its burst, 429 M_LIMIT_EXCEEDED with retry_after_ms", async () => {
    const { call } = await consoleOf({ application: echo });
    // At once, so that the bucket (20, refilled 5 a second) cannot refill in between.
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => call("traffic", undefined, "wrong")),
    );
    const limited = answers.filter((answer) => answer.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    expect(limited[0]?.body).toMatchObject({
      errcode: "M_LIMIT_EXCEEDED",
      retry_after_ms: expect.any(Number),
    });
  });

  it("a wrong token spends no budget of the right one: after 40 wrong tokens, the operator gets in", async () => {
    const { call } = await consoleOf({ application: echo });
    const wrong = await Promise.all(
      Array.from({ length: 40 }, (_, i) => call("traffic", undefined, `wrong${i}`)),
    );
    expect(wrong.filter((answer) => answer.status === 429).length).toBeGreaterThan(0);
    expect(wrong.every((answer) => [401, 429].includes(answer.status))).toBe(true);
    const right = await Promise.all(Array.from({ length: 10 }, () => call("traffic")));
    expect(right.map((answer) => answer.status)).toEqual(Array(10).fill(200));
  });

  it("lists outbound dead letters with their reason; replay keeps the room's order and doubles nothing, even replayed again after a partial success", async () => {
    const { local, homeserver, send, bot, call, lines } = await consoleOf({ application: echo });
    const room = "!dead:test.local";
    homeserver.createRoom(room, [bot]);
    homeserver.cue(isSend, { status: 400, body: { errcode: "M_BAD_JSON", error: "No." } }, 3);
    await send(
      "t1",
      ["one", "two", "three"].map((body) => makeEvent(room, body)),
    );
    expect(await waitUntilDrained(local)).toEqual({ ...NO_DEAD_LETTERS, outboundDeadLetters: 3 });
    expect(homeserver.sent).toEqual([]);

    const status = await call("status");
    expect(status.body.deadLetters).toEqual({ inbound: 0, outbound: 3 });
    const listed = await call(`dead-letters?direction=outbound&room=${encodeURIComponent(room)}`);
    expect(listed.status).toBe(200);
    const letters = listed.body.deadLetters as { id: string; key: string }[];
    expect(letters).toHaveLength(3);
    for (const letter of letters) {
      expect(letter).toMatchObject({
        direction: "outbound",
        roomId: room,
        kind: "send",
        reason: { status: 400, errcode: "M_BAD_JSON", error: "No." },
        attempts: 1,
        ageSeconds: expect.any(Number),
      });
    }
    // Listed, they left the queue for the table; the count is the same.
    expect((await call("status")).body.deadLetters).toEqual({ inbound: 0, outbound: 3 });

    // A replay that stopped part-way: the first one queued again, its record still kept.
    const store = new DynamoDbDeadLetters(localDynamoDb(local.dynamodbEndpoint), local.tableName);
    const [first] = await store.list("outbound");
    if (!first) throw new Error("no dead letter kept");

    // The homeserver is fixed (its cues used up): replay the room's.
    const replayed = await call("dead-letters/replay", { direction: "outbound", room });
    expect(replayed.body).toEqual({ done: letters.map((l) => l.id), skipped: [] });
    await waitFor(() => homeserver.sent.length >= 3);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent.map((event) => event.content.body)).toEqual([
      "echo: one",
      "echo: two",
      "echo: three",
    ]);
    // Each carried the action's ID as its txnId, as the first try did.
    const sends = homeserver.requests.filter(isSend);
    expect(new Set(sends.map((r) => r.path)).size).toBe(3);

    // The record left behind by a replay that failed after queuing: replayed again, nothing
    // reaches the room twice.
    await store.put(first);
    const again = await call("dead-letters/replay", { direction: "outbound", ids: [first.id] });
    expect(again.body.done).toEqual([first.id]);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent).toHaveLength(3);
    expect((await call("dead-letters")).body.deadLetters).toEqual([]);

    const logged = lines.filter((line) => line.message === "dead letter replayed");
    expect(logged).toHaveLength(4);
    expect(logged[0]?.attributes).toMatchObject({
      direction: "outbound",
      deadLetterId: letters[0]?.id,
      group: room,
      operator: { name: "alice the operator", sourceIp: "127.0.0.1" },
    });
    // The traffic shows the calls: dead, then done.
    const traffic = await call("traffic");
    expect(traffic.body.outbound.map((c: { outcome: string }) => c.outcome)).toEqual([
      "done",
      "done",
      "done",
      "dead",
      "dead",
      "dead",
    ]);
    expect(traffic.body.transactions).toMatchObject([{ txnId: "t1", events: 3, outcome: "new" }]);
  });

  it("shows a retried call under its action's kind, and a message that was no action with its reason", async () => {
    const { local, homeserver, send, bot, call } = await consoleOf({ application: echo });
    const room = "!retried:test.local";
    homeserver.createRoom(room, [bot]);
    homeserver.cue(isSend, { status: 500, body: { errcode: "M_UNKNOWN", error: "Down." } }, 1);
    await send("t1", [makeEvent(room, "one")]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const traffic = (await call("traffic")).body.outbound;
    expect(traffic).toMatchObject([
      { kind: "send", outcome: "done", status: 200, attempts: 2, roomId: room },
      { kind: "send", outcome: "retry", status: 500, attempts: 1, roomId: room },
    ]);

    // A body that is no JSON object is dead-lettered as itself, with the reason.
    const queue = new SqsFifoQueue(localSqs(local.sqsEndpoint), local.outboundQueueUrl);
    await queue.send([{ groupId: "injected", deduplicationId: "injected", body: "not json {" }]);
    expect(await waitUntilDrained(local)).toEqual({ ...NO_DEAD_LETTERS, outboundDeadLetters: 1 });
    const listed = (await call("dead-letters?direction=outbound")).body.deadLetters;
    expect(listed).toEqual([
      {
        id: expect.any(String),
        direction: "outbound",
        group: "injected",
        kind: "unknown",
        reason: { error: "refused, not sent: the message is not a JSON object" },
        attempts: 1,
        failedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
        ageSeconds: expect.any(Number),
      },
    ]);
  });

  it("discards one, or all of a room, logged with who did it; a discarded one is never sent", async () => {
    const { local, homeserver, send, bot, call, lines } = await consoleOf({ application: echo });
    homeserver.createRoom("!a:test.local", [bot]);
    homeserver.createRoom("!b:test.local", [bot]);
    homeserver.cue(isSend, { status: 400, body: { errcode: "M_UNKNOWN", error: "Bad." } }, 3);
    await send("t1", [makeEvent("!a:test.local", "1"), makeEvent("!a:test.local", "2")]);
    await send("t2", [makeEvent("!b:test.local", "3")]);
    expect(await waitUntilDrained(local)).toEqual({ ...NO_DEAD_LETTERS, outboundDeadLetters: 3 });
    const listed = (await call("dead-letters")).body.deadLetters as {
      id: string;
      roomId: string;
    }[];
    expect(listed.map((l) => l.roomId).sort()).toEqual([
      "!a:test.local",
      "!a:test.local",
      "!b:test.local",
    ]);
    const inB = listed.find((l) => l.roomId === "!b:test.local");
    const one = await call("dead-letters/discard", { direction: "outbound", ids: [inB?.id] });
    expect(one.body).toEqual({ done: [inB?.id], skipped: [] });
    const room = await call("dead-letters/discard", {
      direction: "outbound",
      room: "!a:test.local",
    });
    expect(room.body.done).toHaveLength(2);
    expect((await call("dead-letters")).body.deadLetters).toEqual([]);
    expect((await call("status")).body.deadLetters).toEqual({ inbound: 0, outbound: 0 });
    // Discarding again finds nothing; replaying a discarded one does nothing.
    const again = await call("dead-letters/discard", { direction: "outbound", ids: [inB?.id] });
    expect(again.body).toEqual({
      done: [],
      skipped: [{ id: inB?.id, why: "not found (replayed or discarded already?)" }],
    });
    const gone = await call("dead-letters/replay", { direction: "outbound", ids: [inB?.id] });
    expect(gone.body).toMatchObject({ done: [], skipped: [{ id: inB?.id }] });
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent).toEqual([]);
    const logged = lines.filter((line) => line.message === "dead letter discarded");
    expect(logged).toHaveLength(3);
    for (const line of logged) {
      expect(line.attributes.operator).toMatchObject({
        name: "alice the operator",
        sourceIp: "127.0.0.1",
      });
    }
    const bad = await call("dead-letters/discard", { direction: "sideways", all: true });
    expect(bad).toMatchObject({ status: 400, body: { errcode: "M_BAD_JSON" } });
  });

  it("replays an inbound dead letter: the item runs again once the application is fixed", async () => {
    let broken = true;
    const handled: string[] = [];
    const application: Application = {
      onEvent(event) {
        if (broken) throw new Error("the application is broken");
        handled.push(String(event.content.body));
      },
    };
    const { local, send, call } = await consoleOf({
      application,
      inboundRetry: { maxAttempts: 2, backoff: { baseSeconds: 1, capSeconds: 1 } },
    });
    const room = "!in:test.local";
    await send("t1", [makeEvent(room, "first")]);
    expect(await waitUntilDrained(local, 60_000)).toEqual({
      ...NO_DEAD_LETTERS,
      inboundDeadLetters: 1,
    });
    const [letter] = (await call("dead-letters?direction=inbound")).body.deadLetters;
    expect(letter).toMatchObject({
      direction: "inbound",
      roomId: room,
      kind: "event",
      txnId: "t1",
      attempts: 2,
      reason: { error: "Error: the application is broken" },
    });
    broken = false;
    const replayed = await call("dead-letters/replay", { direction: "inbound", all: true });
    expect(replayed.body.done).toEqual([letter.id]);
    await waitFor(() => handled.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(handled).toEqual(["first"]);
  });

  it("sweeps dead letters into the table for good, logs ERROR while any wait, and the console replays and discards them", async () => {
    const { local, homeserver, send, bot, call, lines } = await consoleOf({
      application: echo,
      deadLetterSweepMs: 200,
    });
    const dynamodb = localDynamoDb(local.dynamodbEndpoint);
    const store = new DynamoDbDeadLetters(dynamodb, local.tableName);
    const itemOf = async (id: string) =>
      (
        await dynamodb.send(
          new GetItemCommand({
            TableName: local.tableName,
            Key: { pk: { S: "DEADLETTER#outbound" }, sk: { S: id } },
            ConsistentRead: true,
          }),
        )
      ).Item;
    // One an older version kept, with the 14-day expiry it gave each.
    await dynamodb.send(
      new PutItemCommand({
        TableName: local.tableName,
        Item: {
          pk: { S: "DEADLETTER#outbound" },
          sk: { S: "legacy" },
          groupId: { S: "!old:test.local" },
          sequenceNumber: { S: "1" },
          sentAt: { N: String(Date.now()) },
          body: { S: "not json {" },
          expiresAt: { N: String(Math.floor(Date.now() / 1000) + 3600) },
        },
      }),
    );
    const room = "!swept:test.local";
    homeserver.createRoom(room, [bot]);
    homeserver.cue(isSend, { status: 400, body: { errcode: "M_BAD_JSON", error: "No." } }, 1);
    await send("t1", [makeEvent(room, "one")]);

    // Nobody opened the console: the sweep took it off its queue into the table.
    await waitForAsync(async () => (await store.list("outbound")).length === 2);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const kept = (await store.list("outbound")).find((letter) => letter.id !== "legacy");
    if (!kept) throw new Error("no dead letter swept");
    expect(await itemOf(kept.id)).not.toHaveProperty("expiresAt");
    expect(await itemOf("legacy")).not.toHaveProperty("expiresAt");
    await waitFor(() =>
      lines.some(
        (line) =>
          line.level === "error" &&
          line.message === "dead letters waiting" &&
          (line.attributes.deadLetters as { outbound: number }).outbound === 2,
      ),
    );
    const waiting = lines.filter((line) => line.message === "dead letters waiting");
    expect(waiting.at(-1)?.attributes).toEqual({ deadLetters: { inbound: 0, outbound: 2 } });

    // The console lists the swept ones; replayed and discarded, none waits.
    const listed = (await call("dead-letters?direction=outbound")).body.deadLetters;
    expect(listed.map((letter: { id: string }) => letter.id).sort()).toEqual(
      [kept.id, "legacy"].sort(),
    );
    expect((await call("status")).body.deadLetters).toEqual({ inbound: 0, outbound: 2 });
    const replayed = await call("dead-letters/replay", { direction: "outbound", ids: [kept.id] });
    expect(replayed.body).toEqual({ done: [kept.id], skipped: [] });
    const discarded = await call("dead-letters/discard", {
      direction: "outbound",
      ids: ["legacy"],
    });
    expect(discarded.body).toEqual({ done: ["legacy"], skipped: [] });
    await waitFor(() => homeserver.sent.length >= 1);
    expect(homeserver.sent.map((event) => event.content.body)).toEqual(["echo: one"]);
    const before = lines.length;
    await waitFor(() =>
      lines.slice(before).some((line) => line.message === "no dead letters waiting"),
    );
    expect((await call("status")).body.deadLetters).toEqual({ inbound: 0, outbound: 0 });
  });
});
