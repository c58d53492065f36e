import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_DEAD_LETTERS, sleep, waitFor, waitUntilDrained } from "../support/appservice.ts";
import {
  DISK_FULL_ALERT,
  newWebhook,
  noticesIn,
  sendCommand,
  startWithWebhookRoom,
} from "../support/webhooks.ts";
import type { startAppserviceAndHomeserver } from "../support/with-homeserver.ts";
import { SERVER } from "../support/with-homeserver.ts";

const ROOM = `!hooks-v2:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;
const hookUserPattern = (name: string) =>
  new RegExp(`^@_webhook_[0-9a-f]{12}_${name}:test\\.local$`);

describe("webhooks, second version: idempotency, msgtypes, expiry, transformations", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  const command = (body: string) => sendCommand(started, body, MODERATOR, ROOM);
  const hookMessages = (name: string) =>
    started.homeserver.sent.filter(
      (e) => e.roomId === ROOM && hookUserPattern(name).test(e.sender),
    );
  const roomNotices = () => noticesIn(started, ROOM);
  const newHook = (name: string, options = "") =>
    newWebhook(started, name, MODERATOR, ROOM, options);
  const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });

  beforeAll(async () => {
    started = await startWithWebhookRoom(ROOM, MODERATOR);
  });
  afterAll(() => started?.stop());

  it("Idempotency-Key: a repeat posts once and gets the first answer again; the key with another body → 422; a malformed key → 400", async () => {
    const { url } = await newHook("idem");
    const headers = { "idempotency-key": "build-42" };
    const first = await post(url, { text: "build 42 passed" }, headers);
    expect(first.status).toBe(202);
    expect(first.headers.get("idempotency-replayed")).toBeNull();
    const again = await post(url, { text: "build 42 passed" }, headers);
    expect(again.status).toBe(202);
    expect(again.headers.get("idempotency-replayed")).toBe("true");
    expect(await again.json()).toEqual(await first.json());

    const other = await post(url, { text: "something else" }, headers);
    expect(other.status).toBe(422);
    expect(await other.json()).toMatchObject({
      errcode: "M_INVALID_PARAM",
      error: expect.any(String),
    });
    const malformed = await post(url, { text: "x" }, { "idempotency-key": "é" });
    expect(malformed.status).toBe(400);
    expect(await malformed.json()).toMatchObject({ errcode: "M_INVALID_PARAM" });
    // The same key on another webhook is another key.
    const second = await newHook("idem2");
    expect((await post(second.url, { text: "other hook" }, headers)).status).toBe(202);

    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(hookMessages("idem").map((m) => m.content.body)).toEqual(["build 42 passed"]);
    expect(hookMessages("idem2").map((m) => m.content.body)).toEqual(["other hook"]);
  });

  it("Idempotency-Key after a 429: the key is not spent, its repeat posts once a token is back, then replays", async () => {
    const { url } = await newHook("idem-limited");
    let limitedKey: string | undefined;
    // Far faster than one a second: the bucket runs dry within these.
    for (let i = 0; i < 100 && !limitedKey; i++) {
      const response = await post(url, { text: `burst ${i}` }, { "idempotency-key": `burst-${i}` });
      if (response.status === 429) limitedKey = `burst-${i}`;
    }
    expect(limitedKey).toBeDefined();
    const headers = { "idempotency-key": limitedKey as string };
    const text = `burst ${limitedKey?.slice("burst-".length)}`;
    let accepted: Response | undefined;
    await waitFor(
      async () => {
        const response = await post(url, { text }, headers);
        expect(response.headers.get("idempotency-replayed")).toBeNull();
        if (response.status === 202) accepted = response;
        else expect(response.status).toBe(429);
        return accepted !== undefined;
      },
      10_000,
      "a token for the repeat",
    );
    const replay = await post(url, { text }, headers);
    expect(replay.status).toBe(202);
    expect(replay.headers.get("idempotency-replayed")).toBe("true");
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(hookMessages("idem-limited").filter((m) => m.content.body === text)).toHaveLength(1);
  });

  it("msgtype: the payload's (m.notice, m.emote), else the webhook's default (--notice); another msgtype → 400", async () => {
    const plain = await newHook("plain");
    const notices = await newHook("notices", "--notice");
    expect((await post(plain.url, { text: "a text" })).status).toBe(202);
    expect((await post(plain.url, { text: "waves", msgtype: "m.emote" })).status).toBe(202);
    expect((await post(notices.url, { text: "a notice" })).status).toBe(202);
    expect((await post(notices.url, { text: "loud", msgtype: "m.text" })).status).toBe(202);
    const bad = await post(plain.url, { text: "x", msgtype: "m.image" });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ errcode: "M_BAD_JSON" });
    await waitFor(() => hookMessages("plain").length === 2 && hookMessages("notices").length === 2);
    expect(hookMessages("plain").map((m) => m.content.msgtype)).toEqual(["m.text", "m.emote"]);
    expect(hookMessages("notices").map((m) => m.content.msgtype)).toEqual(["m.notice", "m.text"]);
    expect(await command("!webhook list")).toContain("notices — created ");
  });

  it("--expires: the room is told once within its last day; once expired its URL answers 410 and the list says so", async () => {
    const { url } = await newHook("brief", "--expires 8s");
    expect((await post(url, { text: "while it lasts" })).status).toBe(202);
    expect((await post(url, { text: "again" })).status).toBe(202);
    await waitFor(() => hookMessages("brief").length === 2);
    // Expiry is checked on each use: an invalid body is 400 until then, 410 after. One a second,
    // as the webhook's bucket refills.
    const deadline = Date.now() + 30_000;
    let status = 400;
    while (status === 400 && Date.now() < deadline) {
      status = (await post(url, "{}")).status;
      if (status === 400) await sleep(1000);
    }
    expect(status).toBe(410);
    const gone = await post(url, { text: "too late" });
    expect(gone.status).toBe(410);
    expect(await gone.json()).toMatchObject({
      errcode: "M_NOT_FOUND",
      error: expect.stringContaining("expired"),
    });
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(roomNotices().filter((n) => n.startsWith("Webhook brief expires at"))).toHaveLength(1);
    expect(await command("!webhook list")).toMatch(/brief — created .*, expired 20/);
    expect(hookMessages("brief").map((m) => m.content.body)).toEqual(["while it lasts", "again"]);
  });

  it("a transformation that loops forever is stopped: 422, one notice in the room for every failure of that code, and the next payload goes through", async () => {
    await newHook("loopy");
    const { url } = await newHook("loopy2");
    expect(
      await command(
        "!webhook transform loopy2\n```js\nif (data.loop) { for (;;) {} }\nreturn { text: 'got ' + data.n, msgtype: 'm.notice' };\n```",
      ),
    ).toMatch(/^Webhook loopy2 now transforms each payload with your code/);
    for (let i = 0; i < 2; i++) {
      const stopped = await post(url, { loop: true });
      expect(stopped.status).toBe(422);
      expect(await stopped.json()).toMatchObject({
        errcode: "M_UNKNOWN",
        error: expect.stringContaining("stopped: it ran over 100 ms"),
      });
    }
    const works = await post(url, { n: 1 });
    expect(works.status).toBe(202);
    await waitFor(() => hookMessages("loopy2").length === 1);
    expect(hookMessages("loopy2")[0]?.content).toMatchObject({
      body: "got 1",
      msgtype: "m.notice",
    });
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(
      roomNotices().filter((n) => n.startsWith("Webhook loopy2: its transformation failed")),
    ).toHaveLength(1);
    expect((await post(url, { n: 2 })).status).toBe(202);
    await waitFor(() => hookMessages("loopy2").length === 2);
    // A transformation that returns nothing posts nothing: 204.
    expect(await command("!webhook transform loopy\n```\nreturn null;\n```")).toMatch(/your code/);
    expect(await command("!webhook list")).toMatch(
      /loopy — created .*, transformed \(set by @mod:test\.local\)/,
    );
  });

  it("--preset alertmanager: an Alertmanager payload becomes its alerts; the list names the preset", async () => {
    const { url } = await newHook("alerts", "--preset alertmanager");
    const response = await post(url, DISK_FULL_ALERT);
    expect(response.status).toBe(202);
    await waitFor(() => hookMessages("alerts").length === 1);
    const [message] = hookMessages("alerts");
    expect(message?.content.body).toContain("**DiskFull** [critical] on db1: disk at 97%");
    expect(String(message?.content.formatted_body)).toContain("<strong>DiskFull</strong>");
    expect(await command("!webhook list")).toContain("alerts — created ");
    expect(await command("!webhook list")).toContain("preset alertmanager");
    expect(await command("!webhook new other --preset nope")).toMatch(/^There is no preset "nope"/);
  });

  it("random payloads, keys and msgtypes, through a transformed webhook and a plain one: never a 5xx, always a JSON error", async () => {
    const plain = await newHook("fuzzplain", "--notice");
    const transformed = await newHook("fuzzgit", "--preset github");
    const payload = fc.oneof(
      fc.jsonValue(),
      fc.record(
        {
          text: fc.oneof(fc.string(), fc.anything()),
          msgtype: fc.oneof(
            fc.constantFrom("m.text", "m.notice", "m.emote", "m.file"),
            fc.anything(),
          ),
          repository: fc.anything(),
          commits: fc.oneof(fc.array(fc.anything(), { maxLength: 3 }), fc.anything()),
          ref: fc.oneof(fc.string(), fc.anything()),
        },
        { requiredKeys: [] },
      ),
    );
    await fc.assert(
      fc.asyncProperty(
        payload,
        fc.boolean(),
        // Header values fetch can send: printable ASCII and spaces.
        fc.option(fc.stringMatching(/^[\x20-\x7e]{1,300}$/)),
        async (value, toTransformed, key) => {
          const response = await post(
            toTransformed ? transformed.url : plain.url,
            JSON.stringify(value) ?? "null",
            key === null ? {} : { "idempotency-key": key },
          );
          expect([202, 204, 400, 409, 413, 422, 429]).toContain(response.status);
          if (response.status >= 400) {
            expect(await response.json()).toMatchObject({
              errcode: expect.any(String),
              error: expect.any(String),
            });
          }
        },
      ),
      { numRuns: 120 },
    );
  });
});
