import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { MAX_OUTBOUND_PER_ROOM } from "../../functions/applications/webhooks/webhooks/outbound.ts";
import { WEBHOOK_MAX_BODY_BYTES } from "../../functions/applications/webhooks/webhooks/post.ts";
import { makeEvent, waitFor } from "../support/appservice.ts";
import { newWebhook, noticesIn, sendCommand, startWithWebhookRoom } from "../support/webhooks.ts";
import { SERVER } from "../support/with-homeserver.ts";

const ROOM = `!hostile:${SERVER}`;
const OTHER_ROOM = `!bystander:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;

/** A Markdown table of about `bytes` bytes. */
const table = (bytes: number) => {
  const rows = ["| a | b |", "|---|---|"];
  let size = 20;
  while (size < bytes) {
    rows.push("| x | y |");
    size += 10;
  }
  return rows.join("\n");
};

describe("webhook payloads built to stall the HTTP thread", () => {
  let started: Awaited<ReturnType<typeof startWithWebhookRoom>>;
  let hostile: string;
  let bystander: string;

  beforeAll(async () => {
    started = await startWithWebhookRoom(ROOM, MODERATOR);
    started.homeserver.createRoom(OTHER_ROOM, [MODERATOR, started.bot]);
    started.homeserver.setState(OTHER_ROOM, "m.room.power_levels", "", {
      users: { [MODERATOR]: 50 },
      users_default: 0,
    });
    hostile = (await newWebhook(started, "target", MODERATOR, ROOM)).url;
    bystander = (await newWebhook(started, "other", MODERATOR, OTHER_ROOM)).url;
  }, 120_000);
  afterAll(() => started?.stop());

  const timedPost = async (url: string, payload: unknown) => {
    const begun = performance.now();
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(payload),
    });
    const body = (await response.json().catch(() => undefined)) as
      | { errcode?: string; error?: string }
      | undefined;
    return { status: response.status, body, ms: performance.now() - begun };
  };

  it("refused before rendering, each at once with a spec-shaped error naming the limit; a transaction and another room's webhook are answered meanwhile", async () => {
    const payloads = {
      // 16 s of Markdown before the fix, refused after it.
      "4 MB Markdown table": { text: table(Math.floor(WEBHOOK_MAX_BODY_BYTES * 0.85)) },
      // 69 s in the sanitizer before the fix.
      "<b> × 400,000": { text: "x", html: "<b>".repeat(400_000) },
      // Within the size limit, nested 19,000 deep.
      "<b> × 19,000": { text: "x", html: "<b>".repeat(19_000) },
      "<div><b> × 7,000": { text: "x", html: "<div><b>".repeat(7_000) },
    };
    const expected = {
      "4 MB Markdown table": [413, "M_TOO_LARGE", /over 60000 bytes, the most a Matrix event/],
      "<b> × 400,000": [413, "M_TOO_LARGE", /over 60000 bytes, the most a Matrix event/],
      "<b> × 19,000": [400, "M_INVALID_PARAM", /nests tags deeper than 100 levels/],
      "<div><b> × 7,000": [400, "M_INVALID_PARAM", /nests tags deeper than 100 levels/],
    } as const;
    const sentBefore = started.homeserver.sent.length;
    const answers = Promise.all(
      Object.entries(payloads).map(async ([name, payload]) => [
        name,
        await timedPost(hostile, payload),
      ]),
    );
    // While they arrive: the homeserver's transaction and another room's webhook.
    const begun = performance.now();
    const [transaction, other] = await Promise.all([
      started
        .send("bystander-txn", [makeEvent(OTHER_ROOM, "hello", { sender: MODERATOR })])
        .then((response) => ({ status: response.status, ms: performance.now() - begun })),
      timedPost(bystander, { text: "**deploy** done" }),
    ]);
    const results = Object.fromEntries(await answers) as Record<
      keyof typeof payloads,
      Awaited<ReturnType<typeof timedPost>>
    >;
    for (const [name, [status, errcode, error]] of Object.entries(expected)) {
      const result = results[name as keyof typeof payloads];
      expect(result.status, name).toBe(status);
      expect(result.body?.errcode, name).toBe(errcode);
      expect(result.body?.error, name).toMatch(error);
    }
    console.log(
      "refusal round trips (ms):",
      Object.entries(results).map(([name, { ms }]) => `${name}: ${Math.round(ms)}`),
      `transaction: ${Math.round(transaction.ms)}, other room's webhook: ${Math.round(other.ms)}`,
    );
    // Before the fix: 16 s and 69 s on one thread, which the transaction and the other webhook
    // waited for. Each round trip here carries DynamoDB Local's lookups, a 4 MB upload and six
    // requests at once on one thread: 0.6–2.8 s measured on a 2-core machine at load 18 (the
    // refusal itself is timed in test/unit/render.test.ts).
    const bound = 10_000;
    for (const { ms } of Object.values(results)) expect(ms).toBeLessThan(bound);
    expect(transaction).toMatchObject({ status: 200 });
    expect(transaction.ms).toBeLessThan(bound);
    expect(other.status).toBe(202);
    expect(other.ms).toBeLessThan(bound);
    await waitFor(
      () =>
        started.homeserver.sent.some(
          (e) => e.roomId === OTHER_ROOM && e.content.body === "**deploy** done",
        ),
      20_000,
      "the other room's message",
    );
    // Nothing of the refused payloads was posted.
    expect(started.homeserver.sent.slice(sentBefore).filter((e) => e.roomId === ROOM)).toEqual([]);
  });

  it("a sender cannot put its text in the room through a transformation's failure, nor hide the room's own failures", async () => {
    const hook = await newWebhook(started, "shaped", MODERATOR, ROOM);
    expect(
      await sendCommand(
        started,
        "!webhook transform shaped\n```js\nif (data.msg) throw new Error(data.msg);\nreturn { text: 'n=' + data.n.value };\n```",
        MODERATOR,
        ROOM,
      ),
    ).toMatch(/^Webhook shaped now transforms/);
    const failureNotices = () =>
      noticesIn(started, ROOM).filter((n) => n.startsWith("Webhook shaped: its transformation"));
    const lure = "Your session expired: log in again at https://evil.example/login";
    const attack = await timedPost(hook.url, { msg: lure });
    // The sender is told everything: it is its own text.
    expect(attack).toMatchObject({
      status: 422,
      body: { errcode: "M_UNKNOWN", error: `The webhook's transformation failed: Error: ${lure}` },
    });
    await waitFor(() => failureNotices().length === 1, 20_000, "the first failure's notice");
    expect(failureNotices()[0]).toContain("(Error)");
    expect(failureNotices()[0]).not.toContain("evil.example");
    // The room's own bug (a payload without `n`) is another kind: told too, not hidden by the first.
    expect((await timedPost(hook.url, { other: 1 })).status).toBe(422);
    await waitFor(() => failureNotices().length === 2, 20_000, "the room's own failure's notice");
    expect(failureNotices()[1]).toContain("(TypeError)");
    // Repeats of a kind are not told again.
    expect((await timedPost(hook.url, { msg: "again, other words" })).status).toBe(422);
    expect((await timedPost(hook.url, { n: { value: 7 } })).status).toBe(202);
    await waitFor(
      () => started.homeserver.sent.some((e) => e.roomId === ROOM && e.content.body === "n=7"),
      20_000,
      "the transformed message",
    );
    expect(failureNotices()).toHaveLength(2);
    expect(noticesIn(started, ROOM).join("\n")).not.toContain("other words");
  });

  it("a command sent as m.notice is no command: not obeyed, not answered", async () => {
    const roomsBefore = started.homeserver.createdRooms.length;
    const noticesBefore = noticesIn(started, ROOM).length;
    const notice = (body: string) =>
      makeEvent(ROOM, body, { sender: MODERATOR, content: { msgtype: "m.notice", body } });
    expect(
      (await started.send("notices", [notice("!webhook new sneaky"), notice("!ping")])).status,
    ).toBe(200);
    // The room's next command is answered first: nothing came of the notices before it.
    const answer = await sendCommand(started, "!webhook list", MODERATOR, ROOM);
    expect(answer).toMatch(/^Webhooks in this room:/);
    expect(answer).not.toContain("sneaky");
    expect(noticesIn(started, ROOM).slice(noticesBefore)).toEqual([answer]);
    expect(started.homeserver.createdRooms.length).toBe(roomsBefore);
  });

  it("outbound webhooks of one room each in their own order: a target that keeps failing holds back no other at the same origin; at most 5 per room", async () => {
    // One origin, two paths: /slow fails until told otherwise, /fast answers at once. The slow
    // one's name comes first, so its delivery is queued first.
    let slowFails = true;
    const arrivals: { path: string; status: number; at: number }[] = [];
    const server = createServer((request, response) => {
      request.resume();
      request.on("end", () => {
        const status = request.url === "/slow" && slowFails ? 500 : 200;
        arrivals.push({ path: request.url ?? "", status, at: Date.now() });
        response.writeHead(status).end("{}");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const out = (body: string) => sendCommand(started, body, MODERATOR, OTHER_ROOM);
    expect(await out(`!webhook out aaa ${origin}/slow`)).toMatch(/^Outbound webhook aaa created/);
    expect(await out(`!webhook out zzz ${origin}/fast`)).toMatch(/^Outbound webhook zzz created/);
    const message = makeEvent(OTHER_ROOM, "to both", { sender: MODERATOR });
    expect((await started.send("outbound-order", [message])).status).toBe(200);
    // Before: the fast one waited behind the slow one's retries (for up to a day).
    await waitFor(
      () => arrivals.some((a) => a.path === "/fast" && a.status === 200),
      30_000,
      "the fast target's delivery",
    );
    // Delivered while the other still fails.
    expect(arrivals.filter((a) => a.path === "/slow").map((a) => a.status)).not.toContain(200);
    // Let the slow one through, so that nothing stays queued.
    slowFails = false;
    await waitFor(
      () => arrivals.some((a) => a.path === "/slow" && a.status === 200),
      60_000,
      "the slow target's delivery once it is up",
    );

    // The cap: 5 in all, the sixth refused, saying why.
    for (let i = 3; i <= MAX_OUTBOUND_PER_ROOM; i++) {
      expect(await out(`!webhook out n${i} ${origin}/n${i}`)).toMatch(
        /^Outbound webhook n\d created/,
      );
    }
    expect(await out(`!webhook out extra ${origin}/extra`)).toBe(
      `This room has ${MAX_OUTBOUND_PER_ROOM} outbound webhooks, the most it may: remove one first (!webhook out remove <name>).`,
    );
    expect(await out("!webhook out remove n3")).toMatch(/^Outbound webhook n3 removed/);
    expect(await out(`!webhook out extra ${origin}/extra`)).toMatch(
      /^Outbound webhook extra created/,
    );
  });
});
