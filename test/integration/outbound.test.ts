import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { describe, expect, it, onTestFinished } from "vitest";
import type { Application } from "../../functions/appservice/application.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import type { Log } from "../../functions/shared/log.ts";
import {
  deadLetters,
  makeEvent,
  NO_DEAD_LETTERS,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { SERVER, startWithHomeserver } from "../support/with-homeserver.ts";

const isSend = (r: { method: string; path: string }) =>
  r.method === "PUT" && r.path.includes("/send/");

/** Echoes each message as `echo: <body>`, as the bot or as the user `as`. */
const echoApplication = (as?: string): Application => ({
  async onEvent(event, { actions }) {
    if (event.type === "m.room.message" && !String(event.sender).includes("bot")) {
      await actions.sendMessage(
        event.room_id,
        `echo: ${String(event.content.body)}`,
        as ? { as } : {},
      );
    }
  },
});

describe("outbound calls", () => {
  it("an invite for the bot → exactly one join", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver();
    homeserver.createRoom("!invited:test.local", ["@alice:test.local"], { inviteOnly: true });
    homeserver.invites.set("!invited:test.local", new Set([bot]));
    const invite = makeEvent("!invited:test.local", "", {
      type: "m.room.member",
      state_key: bot,
      content: { membership: "invite" },
    });
    expect((await send("invite", [invite])).status).toBe(200);
    await waitFor(() => homeserver.rooms.get("!invited:test.local")?.has(bot) === true);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const joins = homeserver.requests.filter(
      (r) => r.method === "POST" && r.path.includes("/join/"),
    );
    expect(joins).toHaveLength(1);
    expect(joins[0]?.path).toBe("/_matrix/client/v3/join/!invited%3Atest.local");
    // The bot acts as itself: no user_id, and the token only in the header.
    expect(joins[0]?.query).toEqual({});
    expect(joins[0]?.authorization).toMatch(/^Bearer .{64}$/);
  });

  it("!ping → exactly one pong, even when the transaction is delivered 16 times concurrently", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver();
    homeserver.createRoom("!ping:test.local", ["@alice:test.local", bot]);
    const ping = makeEvent("!ping:test.local", "!ping");
    const responses = await Promise.all(Array.from({ length: 16 }, () => send("ping", [ping])));
    expect(responses.map((r) => r.status)).toEqual(Array(16).fill(200));
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent).toHaveLength(1);
    expect(homeserver.sent[0]).toMatchObject({
      roomId: "!ping:test.local",
      sender: bot,
      type: "m.room.message",
      content: { msgtype: "m.notice", body: "pong" },
    });
    expect(homeserver.requests.filter(isSend)).toHaveLength(1);
  });

  it("429 with retry_after_ms 1500 → the retry comes no sooner than 1.5 s", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver();
    homeserver.createRoom("!slow:test.local", [bot]);
    homeserver.cue(isSend, {
      status: 429,
      body: { errcode: "M_LIMIT_EXCEEDED", error: "Too many requests", retry_after_ms: 1500 },
    });
    await send("rate", [makeEvent("!slow:test.local", "!ping")]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const sends = homeserver.requests.filter(isSend);
    expect(sends.map((r) => r.status)).toEqual([429, 200]);
    expect((sends[1]?.at as number) - (sends[0]?.at as number)).toBeGreaterThanOrEqual(1500);
  });

  it("429 → the Retry-After header wins over retry_after_ms", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver();
    homeserver.createRoom("!slow:test.local", [bot]);
    homeserver.cue(isSend, {
      status: 429,
      body: { errcode: "M_LIMIT_EXCEEDED", error: "Too many requests", retry_after_ms: 100 },
      headers: { "retry-after": "3" },
    });
    await send("rate", [makeEvent("!slow:test.local", "!ping")]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const sends = homeserver.requests.filter(isSend);
    expect((sends[1]?.at as number) - (sends[0]?.at as number)).toBeGreaterThanOrEqual(3000);
  });

  it("500 three times, then 200 → one message delivered", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver();
    homeserver.createRoom("!flaky:test.local", [bot]);
    homeserver.cue(
      isSend,
      { status: 500, body: { errcode: "M_UNKNOWN", error: "Internal server error" } },
      3,
    );
    await send("flaky", [makeEvent("!flaky:test.local", "!ping")]);
    await waitFor(() => homeserver.sent.length >= 1, 30_000);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.requests.filter(isSend).map((r) => r.status)).toEqual([500, 500, 500, 200]);
    expect(local.metrics.counts.get("OutboundCallsRetried")).toBe(3);
    expect(homeserver.sent).toHaveLength(1);
    // The same client txnId each time: the homeserver could have deduplicated a lost answer.
    expect(new Set(homeserver.requests.filter(isSend).map((r) => r.path)).size).toBe(1);
  });

  it("a homeserver that does not answer → the call times out and is retried", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver({
      homeserverTimeoutMs: 1000,
    });
    homeserver.createRoom("!hang:test.local", [bot]);
    homeserver.cue(isSend, { hang: true });
    await send("hang", [makeEvent("!hang:test.local", "!ping")]);
    await waitFor(() => homeserver.sent.length >= 1, 20_000);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.requests.filter(isSend)).toHaveLength(2);
    expect(homeserver.sent).toHaveLength(1);
  });

  it("a permanent 400 → the message goes to the dead-letter queue with its reason; the room's next message goes through", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver({
      application: echoApplication(),
    });
    homeserver.createRoom("!dead:test.local", [bot]);
    homeserver.cue(isSend, {
      status: 400,
      body: { errcode: "M_BAD_JSON", error: "Content not JSON." },
    });
    await send("dead", [
      makeEvent("!dead:test.local", "first"),
      makeEvent("!dead:test.local", "second"),
    ]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual({ ...NO_DEAD_LETTERS, outboundDeadLetters: 1 });
    expect(homeserver.sent.map((e) => e.content.body)).toEqual(["echo: second"]);
    const letters = await deadLetters(local, "outbound");
    expect(letters).toHaveLength(1);
    const [letter] = letters;
    expect(letter.reason).toEqual({
      status: 400,
      errcode: "M_BAD_JSON",
      error: "Content not JSON.",
    });
    expect(letter.action).toMatchObject({
      kind: "send",
      roomId: "!dead:test.local",
      request: { body: { body: "echo: first" } },
    });
  });

  it("a send as an unregistered virtual user → register, invite, join, then send; remembered in DynamoDB", async () => {
    const ghost = `@_as_ghost:${SERVER}`;
    const { local, homeserver, send, bot } = await startWithHomeserver({
      application: echoApplication(ghost),
    });
    homeserver.createRoom("!ghost:test.local", [bot, "@alice:test.local"], { inviteOnly: true });
    await send("ghost", [makeEvent("!ghost:test.local", "boo")]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent).toHaveLength(1);
    expect(homeserver.sent[0]).toMatchObject({ sender: ghost, content: { body: "echo: boo" } });
    const steps = homeserver.requests.map(
      (r) =>
        `${r.method} ${r.path.replace("/_matrix/client/v3", "")} ${r.query.user_id ?? "bot"} ${r.status}`,
    );
    expect(steps).toEqual([
      `PUT ${homeserver.requests[0]?.path.replace("/_matrix/client/v3", "")} ${ghost} 403`,
      "POST /register bot 200",
      // Just created, it is in no room: let in before it acts, nothing refused on the way.
      "POST /rooms/!ghost%3Atest.local/invite bot 200",
      `POST /join/!ghost%3Atest.local ${ghost} 200`,
      `PUT ${homeserver.requests[0]?.path.replace("/_matrix/client/v3", "")} ${ghost} 200`,
    ]);
    expect(homeserver.requests[1]?.body).toEqual({
      type: "m.login.application_service",
      username: "_as_ghost",
      inhibit_login: true,
    });
    const dynamodb = localDynamoDb(local.dynamodbEndpoint);
    onTestFinished(() => dynamodb.destroy());
    const { Item } = await dynamodb.send(
      new GetItemCommand({
        TableName: local.tableName,
        Key: { pk: { S: `USER#${ghost}` }, sk: { S: "-" } },
      }),
    );
    expect(Item?.registered?.BOOL).toBe(true);
  });

  it("M_USER_IN_USE on registration counts as registered", async () => {
    const ghost = `@_as_known:${SERVER}`;
    const { local, homeserver, send, bot } = await startWithHomeserver({
      application: echoApplication(ghost),
    });
    homeserver.createRoom("!known:test.local", [bot, ghost]);
    // Registered by an earlier life of the appservice whose memory is gone.
    homeserver.cue((r) => isSend(r) && r.query.user_id === ghost, {
      status: 403,
      body: { errcode: "M_FORBIDDEN", error: "not registered" },
    });
    homeserver.registered.add(ghost);
    await send("known", [makeEvent("!known:test.local", "hi")]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const registers = homeserver.requests.filter((r) => r.path.endsWith("/register"));
    expect(registers.map((r) => r.status)).toEqual([400]);
    expect(homeserver.sent).toHaveLength(1);
    expect(homeserver.sent[0]?.sender).toBe(ghost);
  });
});

describe("outbound calls while the homeserver is down", () => {
  it("down until each room's call was retried twice, then up → every message delivered once, in order per room", async () => {
    // The outbox warns of each call it will retry, naming the room.
    const retries = new Map<string, number>();
    const log: Log = {
      debug() {},
      info() {},
      error() {},
      warn(_message, ...attributes) {
        const roomId = attributes[0]?.roomId;
        if (typeof roomId === "string") retries.set(roomId, (retries.get(roomId) ?? 0) + 1);
      },
    };
    const { local, homeserver, send, bot } = await startWithHomeserver({
      application: echoApplication(),
      log,
    });
    const rooms = ["!a:test.local", "!b:test.local", "!c:test.local"];
    for (const room of rooms) homeserver.createRoom(room, [bot]);
    await homeserver.stop();
    for (let batch = 0; batch < 5; batch++) {
      const events = rooms.flatMap((room) =>
        [0, 1].map((i) => makeEvent(room, `${room} ${batch * 2 + i}`)),
      );
      expect((await send(`down-${batch}`, events)).status).toBe(200);
    }
    // Down past the backoff's cap (2 s here): the refused calls wait and are tried again.
    await waitFor(
      () => rooms.every((room) => (retries.get(room) ?? 0) >= 2),
      30_000,
      "two retries a room",
    );
    await homeserver.start();
    await waitFor(() => homeserver.sent.length >= 30, 30_000, "all 30 echoes");
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent).toHaveLength(30);
    for (const room of rooms) {
      expect(homeserver.sent.filter((e) => e.roomId === room).map((e) => e.content.body)).toEqual(
        Array.from({ length: 10 }, (_, i) => `echo: ${room} ${i}`),
      );
    }
  });
});
