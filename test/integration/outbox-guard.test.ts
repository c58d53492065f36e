import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { DeleteMessageCommand, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { WEBHOOK_MAX_SERVER_ERRORS } from "../../functions/applications/webhooks/webhooks/post.ts";
import { WEBHOOK_USER_PREFIX } from "../../functions/applications/webhooks/webhooks/user.ts";
import { localSqs } from "../../functions/local/aws-clients.ts";
import { HttpHomeserverClient } from "../../functions/matrix/http-client.ts";
import type { OutboundAction } from "../../functions/matrix/request.ts";
import { queueJson } from "../../functions/queue/queue.ts";
import { SqsFifoQueue } from "../../functions/queue/sqs/queue.ts";
import { sha256 } from "../../functions/shared/hash.ts";
import type { Log } from "../../functions/shared/log.ts";
import { waitFor } from "../support/appservice.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";
import { newWebhook } from "../support/webhooks.ts";
import { SERVER, startAppserviceAndHomeserver } from "../support/with-homeserver.ts";

const ROOM = `!guarded:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;
const isSend = (r: { method: string; path: string }) =>
  r.method === "PUT" && r.path.includes("/send/");
const byHook = (r: { query: Record<string, string> }) =>
  r.query.user_id?.startsWith(`@${WEBHOOK_USER_PREFIX}`) === true;

/** Every log line with its level, to find the outbox's errors and check them for tokens. */
const logged: { level: string; line: string }[] = [];
const log = Object.fromEntries(
  ["debug", "info", "warn", "error"].map((level) => [
    level,
    (message: string, ...attributes: unknown[]) =>
      logged.push({ level, line: `${message} ${JSON.stringify(attributes)}` }),
  ]),
) as unknown as Log;

describe("the outbox sends only what the appservice may ask, and gives up on untrusted input", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  let sqs: ReturnType<typeof localSqs>;
  /** The outbound dead letters received so far (each is received once). */
  const letters: { action: OutboundAction; reason: { status?: number; error: string } }[] = [];
  const receiveLetters = async () => {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: started.local.outboundDeadLetterUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        MessageSystemAttributeNames: ["MessageDeduplicationId"],
      }),
    );
    for (const message of Messages) {
      letters.push(JSON.parse(message.Body as string));
      // fauxqs takes any deduplication ID; SQS only 1–128 printable ASCII characters.
      expect(message.Attributes?.MessageDeduplicationId).toMatch(/^[\x21-\x7e]{1,128}$/);
      // Deleted, so that the FIFO queue hands out the group's next letters.
      await sqs.send(
        new DeleteMessageCommand({
          QueueUrl: started.local.outboundDeadLetterUrl,
          ReceiptHandle: message.ReceiptHandle,
        }),
      );
    }
  };

  beforeAll(async () => {
    // The outbox sets each retry's wait itself; a long visibility keeps a slow batch from being
    // handed out twice on a loaded machine, so that the calls can be counted exactly.
    started = await startAppserviceAndHomeserver({ log, visibilityTimeoutSeconds: 30 });
    sqs = localSqs(started.local.sqsEndpoint);
    started.homeserver.createRoom(ROOM, [MODERATOR, started.bot]);
    started.homeserver.setState(ROOM, "m.room.power_levels", "", { users: { [MODERATOR]: 50 } });
  });
  afterAll(async () => {
    sqs?.destroy();
    await started?.stop();
  });

  it("actions outside the allowlist on the queue → dead-lettered unsent, logged at ERROR without tokens; the room's next action goes through", async () => {
    const { local, homeserver, bot, registration } = started;
    const send = (id: string, overrides: Partial<OutboundAction>): OutboundAction => ({
      id,
      kind: "send",
      userId: bot,
      roomId: ROOM,
      request: {
        method: "PUT",
        path: `/_matrix/client/v3/rooms/${encodeURIComponent(ROOM)}/send/m.room.message/${id}`,
        body: { msgtype: "m.text", body: id },
      },
      ...overrides,
    });
    const forbidden = [
      send("admin-api", {
        request: { method: "POST", path: "/_synapse/admin/v1/deactivate/%40mod%3Atest.local" },
      }),
      send("traversal", {
        request: {
          method: "GET",
          path: "/_matrix/client/v3/%2e%2e/%2e%2e/_synapse/admin/v2/users",
        },
      }),
      send("elsewhere", { request: { method: "GET", path: "@evil.example/_matrix/client/v3/x" } }),
      send("not-ours", { userId: `@admin:${SERVER}` }),
      send("bot-as-another", {
        request: { ...send("x", {}).request, query: { user_id: MODERATOR } },
      }),
      // An id SQS would not take as a deduplication ID: the dead letter must not use it.
      send("id ✗ with spaces", { request: { method: "PATCH" as "PUT", path: "/x" } }),
    ];
    const queue = new SqsFifoQueue(sqs, local.outboundQueueUrl);
    await queue.send(
      [...forbidden, send("allowed", {})].map((action) => ({
        groupId: ROOM,
        deduplicationId: sha256(action.id),
        body: queueJson(action),
      })),
    );
    await waitFor(() => homeserver.sent.length === 1, 20_000, "the allowed send");
    expect(homeserver.sent[0]?.content.body).toBe("allowed");
    // Nothing but that one send reached the homeserver, after the bot's display name (set before
    // the bot first acts).
    expect(
      new Set(homeserver.requests.map((r) => `${r.method} ${r.path} ${r.query.user_id ?? ""}`)),
    ).toEqual(
      new Set([
        `PUT /_matrix/client/v3/profile/%40bot%3Atest.local/displayname `,
        `PUT /_matrix/client/v3/rooms/!guarded%3Atest.local/send/m.room.message/allowed `,
      ]),
    );
    while (letters.length < forbidden.length) await receiveLetters();
    expect(letters.map((l) => l.action.id)).toEqual(forbidden.map((a) => a.id));
    expect(letters.map((l) => l.reason.error)).toEqual([
      "refused, not sent: the path is outside /_matrix/client/ and /_matrix/media/",
      "refused, not sent: the path has a dot segment (. or .., maybe escaped)",
      "refused, not sent: the path is outside /_matrix/client/ and /_matrix/media/",
      `refused, not sent: acting as "@admin:test.local", outside the registration's user namespaces`,
      "refused, not sent: the query sets user_id, which only the client may",
      'refused, not sent: method "PATCH" is not GET, PUT, POST or DELETE',
    ]);
    const errors = logged.filter((l) => l.level === "error");
    for (const reason of letters.map((l) => l.reason.error)) {
      expect(errors.some((l) => l.line.includes(JSON.stringify(reason).slice(1, -1)))).toBe(true);
    }
    for (const { line } of logged) {
      expect(line).not.toContain(registration.as_token);
      expect(line).not.toContain(registration.hs_token);
    }
    letters.length = 0;
  });

  it("messages that are no action, each in a group of its own → dead-lettered at once with the reason, one ERROR line each; none left to SQS's redrive", async () => {
    const { local } = started;
    // Before, these threw before any decision: back after each visibility timeout until the
    // redrive set them aside at the receive limit, "never decided on", without an ERROR line.
    const bodies = ["not json {", "null", "42", '"a string"', "[1,2]"];
    const queue = new SqsFifoQueue(sqs, local.outboundQueueUrl);
    await queue.send(
      bodies.map((body, i) => ({
        groupId: `injected-${i}`,
        deduplicationId: sha256(`injected ${body}`),
        body,
      })),
    );
    const deadline = Date.now() + 15_000;
    while (letters.length < bodies.length && Date.now() < deadline) await receiveLetters();
    const unreadable = letters as unknown as { body: string; reason: { error: string } }[];
    expect(unreadable.map((l) => l.body).sort()).toEqual([...bodies].sort());
    for (const letter of unreadable) {
      expect(letter.reason.error).toBe("refused, not sent: the message is not a JSON object");
    }
    const deadLines = logged.filter(
      (l) => l.level === "error" && l.line.includes("the message is not a JSON object"),
    );
    expect(deadLines).toHaveLength(bodies.length);
    expect(deadLines.every((l) => l.line.startsWith("outbound call failed for good"))).toBe(true);
    letters.length = 0;
  });

  it(`a webhook message the homeserver keeps refusing with 5xx → dead-lettered at the ${WEBHOOK_MAX_SERVER_ERRORS}th (a 429 not counted); the room's next message goes through`, async () => {
    const { homeserver } = started;
    const { url } = await newWebhook(started, "ci", MODERATOR, ROOM);

    homeserver.cue((r) => isSend(r) && byHook(r), {
      status: 429,
      body: { errcode: "M_LIMIT_EXCEEDED", error: "Too many requests" },
      headers: { "retry-after": "1" },
    });
    homeserver.cue(
      (r) => isSend(r) && byHook(r),
      { status: 500, body: { errcode: "M_UNKNOWN", error: "Internal server error" } },
      1000,
    );
    const post = (text: string) =>
      fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ text }),
      });
    expect((await post("poison")).status).toBe(202);
    const deadline = Date.now() + 90_000;
    while (letters.length === 0 && Date.now() < deadline) await receiveLetters();
    const hookSends = homeserver.requests.filter((r) => isSend(r) && byHook(r));
    expect(hookSends.map((r) => r.status)).toEqual([
      429,
      ...Array(WEBHOOK_MAX_SERVER_ERRORS).fill(500),
    ]);
    expect(letters).toHaveLength(1);
    expect(letters[0]?.action).toMatchObject({
      kind: "send",
      roomId: ROOM,
      maxServerErrors: WEBHOOK_MAX_SERVER_ERRORS,
      request: { body: { body: "poison" } },
    });
    expect(letters[0]?.reason).toEqual({
      status: 500,
      errcode: "M_UNKNOWN",
      error: `gave up at server error ${WEBHOOK_MAX_SERVER_ERRORS} of ${WEBHOOK_MAX_SERVER_ERRORS}: Internal server error`,
    });

    homeserver.clearCues();
    expect((await post("after the poison")).status).toBe(202);
    await waitFor(
      () => homeserver.sent.some((e) => e.content.body === "after the poison"),
      20_000,
      "the room's next message",
    );
  }, 120_000);
});

describe("the HTTP client", () => {
  it("does not follow a redirect: a 3xx is the answer, and the other host sees nothing", async () => {
    let elsewhere = 0;
    const other = createServer((_req, res) => {
      elsewhere++;
      res.end("{}");
    });
    await new Promise<void>((resolve) => other.listen(0, "127.0.0.1", resolve));
    onTestFinished(() => new Promise<void>((resolve) => other.close(() => resolve())));
    const bot = `@bot:${SERVER}`;
    const homeserver = new ScriptedHomeserver("as-token", SERVER, bot);
    await homeserver.start();
    onTestFinished(() => homeserver.stop());
    const location = `http://127.0.0.1:${(other.address() as AddressInfo).port}/steal`;
    for (const status of [301, 302, 307, 308]) {
      homeserver.cue(() => true, { status, body: {}, headers: { location } });
    }
    const client = new HttpHomeserverClient(homeserver.url, "as-token", bot, 2000);
    for (const status of [301, 302, 307, 308]) {
      const response = await client.call(bot, {
        method: "PUT",
        path: "/_matrix/client/v3/rooms/!r%3Atest.local/send/m.room.message/1",
        body: {},
      });
      expect(response.status).toBe(status);
    }
    expect(homeserver.requests).toHaveLength(4);
    expect(elsewhere).toBe(0);
  });
});
