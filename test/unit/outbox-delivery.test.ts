import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createActions, MAX_DELIVERY_BYTES } from "../../functions/matrix/actions.ts";
import { decideOutboundAction, type OutboundDeps } from "../../functions/outbox/decide.ts";
import type { ServerErrorCounter } from "../../functions/queue/outbound.ts";
import type { FifoMessage } from "../../functions/queue/queue.ts";
import { addressPolicy, LOOPBACK_RANGES } from "../../functions/remote/address-policy.ts";
import { performDelivery } from "../../functions/remote/delivery.ts";
import type { OutboundDelivery } from "../../functions/remote/outbound-delivery.ts";
import { HttpRemoteClient } from "../../functions/remote/remote-http.ts";
import { signatureValid } from "../../functions/remote/signature.ts";
import { OUTBOUND_MAX_RECEIVE_COUNT } from "../../functions/shared/backoff.ts";
import { sha256 } from "../../functions/shared/hash.ts";
import type { DeliveryOutcome } from "../../functions/store/delivery-outcomes.ts";
import { recordingLog } from "../support/appservice.ts";

// Deliveries through the outbox's decision, sent by the real HTTP client to a real server on
// 127.0.0.1 that answers as each test scripts. The server error count is kept in memory here
// (DynamoDB's is tested in dynamodb-store.test.ts); the queue end to end is in
// test/integration/deliveries.test.ts.

type Answer = { status: number; body?: string; headers?: Record<string, string> } | "hang";

const servers: ReturnType<typeof createServer>[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) server.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** A remote service answering with `answers` in turn (200 once they run out). */
async function remoteService(answers: Answer[]) {
  const requests: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[] =
    [];
  let connections = 0;
  const server = createServer((request, response: ServerResponse) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      requests.push({
        method: request.method ?? "",
        url: request.url ?? "",
        headers: request.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      });
      const answer = answers.shift() ?? { status: 200 };
      if (answer === "hang") return;
      response.writeHead(answer.status, answer.headers).end(answer.body ?? "");
    });
  });
  server.on("connection", () => connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(server);
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, requests, connections: () => connections };
}

class MemoryServerErrors implements ServerErrorCounter {
  readonly counts = new Map<string, number>();
  async countServerError(actionId: string) {
    const count = (this.counts.get(actionId) ?? 0) + 1;
    this.counts.set(actionId, count);
    return count;
  }
}

const unexpected = () => Promise.reject(new Error("no homeserver call expected"));
const silent = { debug() {}, info() {}, warn() {}, error() {} };

const deps = (allowLoopback = true, serverErrors = new MemoryServerErrors()): OutboundDeps => ({
  homeserver: { call: unexpected },
  remote: new HttpRemoteClient({ policy: addressPolicy(allowLoopback ? LOOPBACK_RANGES : []) }),
  intentMemory: {
    user: unexpected,
    markRegistered: unexpected,
    markProfileSet: unexpected,
    member: unexpected,
    markJoined: unexpected,
    markLeft: unexpected,
  },
  serverErrors,
  sentEvents: { recordEventId: unexpected },
  messages: { linkMessage: unexpected },
  botUserId: "@bot:test.local",
  isOurUser: () => false,
  backoff: { baseSeconds: 1, capSeconds: 300 },
  log: silent,
  botProfile: { ensure: unexpected } as unknown as OutboundDeps["botProfile"],
  deliveryOutcomes: { record: unexpected, last: unexpected },
});

const delivery = (url: string, overrides: Partial<OutboundDelivery> = {}): OutboundDelivery => ({
  id: "d1",
  kind: "delivery",
  roomId: "!portal:test.local",
  delivery: {
    method: "POST",
    url: `${url}/channels/general/messages`,
    headers: { "content-type": "application/json" },
    body: '{"text":"hi"}',
  },
  ...overrides,
});

/** Each attempt in turn, as SQS hands the message out again after each retry. */
async function attempts(action: OutboundDelivery, count: number, outboxDeps = deps()) {
  const outcomes = [];
  for (let attempt = 0; attempt < count; attempt++) {
    outcomes.push(await performDelivery(action, attempt, outboxDeps));
  }
  return outcomes;
}

describe("performDelivery: the homeserver's rules for a remote service", () => {
  it("500, then 429 with Retry-After, then 200 → retry, retry after the wait asked, done: one request per attempt, the same Idempotency-Key on each", async () => {
    const remote = await remoteService([
      { status: 500, body: "oops" },
      { status: 429, headers: { "retry-after": "7" } },
      { status: 202 },
    ]);
    const outcomes = await attempts(delivery(remote.url), 3);
    expect(outcomes[0]).toMatchObject({ kind: "retry", reason: "remote service error 500" });
    expect(outcomes[0]).toMatchObject({ status: 500 });
    expect(outcomes[1]).toEqual({
      kind: "retry",
      delaySeconds: 7,
      reason: "rate limited (429)",
      status: 429,
    });
    expect(outcomes[2]).toEqual({ kind: "done", status: 202 });
    expect(remote.requests).toHaveLength(3);
    expect(remote.requests.map((r) => r.headers["idempotency-key"])).toEqual(["d1", "d1", "d1"]);
    expect(remote.requests.map((r) => r.body)).toEqual(Array(3).fill('{"text":"hi"}'));
    expect(remote.requests[0]?.url).toBe("/channels/general/messages");
  });

  it("a 4xx other than 429 → dead at once with the status and the start of the body; a redirect loop → dead with why", async () => {
    const remote = await remoteService([
      { status: 400, body: "x".repeat(600) },
      ...Array(6).fill({ status: 302, headers: { location: "/again" } }),
    ]);
    expect(await performDelivery(delivery(remote.url), 0, deps())).toEqual({
      kind: "dead",
      reason: { status: 400, error: "x".repeat(500) },
    });
    expect(await performDelivery(delivery(remote.url), 0, deps())).toEqual({
      kind: "dead",
      reason: {
        status: 302,
        error: "redirected more than the client follows, or without a Location (to /again)",
      },
    });
  });

  it("a target on a refused address → dead, never connected", async () => {
    const remote = await remoteService([]);
    expect(await performDelivery(delivery(remote.url), 0, deps(false))).toEqual({
      kind: "dead",
      reason: { error: "refused, not sent: 127.0.0.1 is a loopback address" },
    });
    expect(remote.connections()).toBe(0);
  });

  it("retryForMs: a retry that would end past it after the delivery was queued → dead with the last failure; within it → retried", async () => {
    const remote = await remoteService([{ status: 503, body: "down" }, { status: 503 }]);
    const action = delivery(remote.url, { retryForMs: 60_000 });
    const within = await performDelivery(action, 0, deps(), Date.now());
    expect(within).toMatchObject({ kind: "retry", status: 503 });
    const past = await performDelivery(action, 1, deps(), Date.now() - 60_000);
    expect(past).toEqual({
      kind: "dead",
      reason: {
        status: 503,
        error: "gave up after retrying for 1 minutes: remote service error 503",
      },
    });
  });

  it("the last attempt SQS's redrive allows → dead with the reason, not set aside without one", async () => {
    const remote = await remoteService([{ status: 429, headers: { "retry-after": "1" } }]);
    const last = OUTBOUND_MAX_RECEIVE_COUNT - 1;
    expect(await decideOutboundAction(delivery(remote.url), last, deps())).toMatchObject({
      kind: "dead",
      deadLetter: {
        reason: {
          status: 429,
          error: `gave up after ${OUTBOUND_MAX_RECEIVE_COUNT} attempts: rate limited (429)`,
        },
      },
    });
  });

  it("a timeout counts as a server error (dead at maxServerErrors); a refused connection is retried without counting", async () => {
    const remote = await remoteService(["hang", "hang"]);
    const serverErrors = new MemoryServerErrors();
    const action = delivery(remote.url, {
      maxServerErrors: 2,
      delivery: { method: "POST", url: remote.url, timeoutMs: 200 },
    });
    const [first, second] = await attempts(action, 2, deps(true, serverErrors));
    expect(first).toMatchObject({ kind: "retry", reason: expect.stringContaining("unreachable") });
    expect(second).toMatchObject({
      kind: "dead",
      reason: {
        error: expect.stringMatching(/^gave up at server error 2 of 2: remote service unreachable/),
      },
    });
    // Port 1 on 127.0.0.1: nothing listens, the connection is refused.
    const closed = delivery("http://127.0.0.1:1", { id: "d2", maxServerErrors: 1 });
    expect(await performDelivery(closed, 0, deps(true, serverErrors))).toMatchObject({
      kind: "retry",
      reason: expect.stringContaining("ECONNREFUSED"),
    });
    expect(serverErrors.counts.get("d2")).toBeUndefined();
  });

  it.each([
    [{ url: "ftp://127.0.0.1/x" }, 'the url\'s scheme "ftp:" is not http: or https:'],
    [{ url: "http://user:pw@127.0.0.1/" }, "the url has a user name or password"],
    [{ method: "CONNECT" }, 'method "CONNECT" is not GET, POST, PUT, PATCH or DELETE'],
    [
      { headers: { "x-a": "1\r\nx-b: 2" } },
      'the header "x-a" is not a string without control characters',
    ],
    [
      { headers: { "Idempotency-Key": "mine" } },
      'the header "Idempotency-Key" is set by the client',
    ],
    [{ headers: { host: "elsewhere" } }, 'the header "host" is set by the client'],
    [{ timeoutMs: 60_000 }, "timeoutMs is not an integer from 1 to 30000"],
  ])("a delivery of the wrong shape (%j) → dead unsent", async (change, problem) => {
    const remote = await remoteService([]);
    const bad = delivery(remote.url);
    const action = { ...bad, delivery: { ...bad.delivery, ...change } } as OutboundDelivery;
    const outcome = await performDelivery(action, 0, deps());
    expect(outcome).toMatchObject({
      kind: "dead",
      reason: { error: expect.stringContaining(`refused, not sent: ${problem}`) },
    });
    expect(remote.connections()).toBe(0);
  });
});

describe("decideOutboundAction with a delivery", () => {
  it("logs the target's origin, never its path or query; dead-letters the delivery whole", async () => {
    const { log, lines } = recordingLog();
    const remote = await remoteService([{ status: 404, body: "no such channel" }]);
    const action = delivery(remote.url, {
      delivery: { method: "POST", url: `${remote.url}/hook/secret-token?sig=abc` },
    });
    const decision = await decideOutboundAction(action, 0, { ...deps(), log });
    expect(decision).toMatchObject({
      kind: "dead",
      deadLetter: { action, reason: { status: 404, error: "no such channel" } },
      metric: "OutboundCallsDeadLettered",
    });
    expect(lines).toHaveLength(1);
    expect(lines[0]?.attributes).toEqual({
      actionId: "d1",
      attempt: 0,
      kind: "delivery",
      target: remote.url,
      roomId: "!portal:test.local",
      reason: { status: 404, error: "no such channel" },
    });
    expect(JSON.stringify(lines)).not.toContain("secret-token");
  });
});

describe("decideOutboundAction records a delivery's outcomes under its outcomeKey", () => {
  it("each attempt's outcome, the last one kept: retry 500, then done 200, with the delivery's ID", async () => {
    const remote = await remoteService([{ status: 500, body: "oops" }, { status: 200 }]);
    const kept = new Map<string, DeliveryOutcome>();
    const outboxDeps = {
      ...deps(),
      deliveryOutcomes: {
        record: async (key: string, outcome: DeliveryOutcome) => void kept.set(key, outcome),
        last: async (key: string) => kept.get(key),
      },
    };
    const action = delivery(remote.url, { outcomeKey: "hook-1" });
    await decideOutboundAction(action, 0, outboxDeps);
    expect(kept.get("hook-1")).toMatchObject({
      outcome: "retry",
      status: 500,
      error: "remote service error 500",
      attempt: 0,
      deliveryId: "d1",
    });
    await decideOutboundAction(action, 1, outboxDeps);
    expect(kept.get("hook-1")).toEqual({
      outcome: "done",
      status: 200,
      attempt: 1,
      at: expect.any(String),
      deliveryId: "d1",
    });
  });
});

describe("actions.deliver", () => {
  const queued = () => {
    const sent: FifoMessage[] = [];
    const actions = createActions({
      botUserId: "@bot:test.local",
      outboundQueue: { send: async (messages) => void sent.push(...messages) },
      origin: "EVENT#$e1",
    });
    return { actions, sent };
  };

  it("queues a delivery under an ID from the origin and position, in a group of its own per room (or per target origin)", async () => {
    const { actions, sent } = queued();
    await actions.sendNotice("!portal:test.local", "first");
    const request = {
      method: "POST" as const,
      url: "https://remote.example/channels/a",
      body: "{}",
    };
    const key = await actions.deliver(request, { orderedWith: "!portal:test.local" });
    const unordered = await actions.withServerErrorLimit(4).deliver(request);
    expect(key).toBe(sha256("EVENT#$e1\n1"));
    expect(sent.map((m) => m.groupId)).toEqual([
      "!portal:test.local",
      "delivery !portal:test.local https://remote.example",
      "delivery https://remote.example",
    ]);
    expect(JSON.parse(sent[1]?.body ?? "")).toEqual({
      id: key,
      kind: "delivery",
      roomId: "!portal:test.local",
      delivery: request,
    });
    expect(sent[1]?.deduplicationId).toBe(key);
    expect(JSON.parse(sent[2]?.body ?? "")).toMatchObject({ id: unordered, maxServerErrors: 4 });
  });

  it("refuses a request of the wrong shape, or too large to queue, before queuing anything", async () => {
    const { actions, sent } = queued();
    expect(() => actions.deliver({ method: "POST", url: "file:///etc/passwd" })).toThrow(
      RangeError,
    );
    expect(() =>
      actions.deliver({
        method: "POST",
        url: "https://remote.example/",
        body: "x".repeat(MAX_DELIVERY_BYTES),
      }),
    ).toThrow(/bytes queued, over/);
    expect(sent).toHaveLength(0);
  });
});

describe("performDelivery: signed deliveries (the relay's RELAY_SECRET)", () => {
  const SECRET = "the-relay-secret-shared-with-the-remote";

  it("signed with the secret at each attempt, over the bytes sent (base64 bodies decoded); never signed unless asked", async () => {
    const remote = await remoteService([{ status: 500 }]);
    const signedDeps = { ...deps(), remoteSecret: SECRET, remoteOrigin: remote.url };
    const text = delivery(remote.url, { signed: true });
    const bytes = Buffer.from([0, 1, 2, 255]);
    const binary = delivery(remote.url, {
      id: "d2",
      signed: true,
      delivery: { ...text.delivery, body: bytes.toString("base64"), bodyEncoding: "base64" },
    });
    await attempts(text, 2, signedDeps);
    expect(await performDelivery(binary, 0, signedDeps)).toEqual({ kind: "done", status: 200 });
    expect(await performDelivery(delivery(remote.url, { id: "d3" }), 0, signedDeps)).toEqual({
      kind: "done",
      status: 200,
    });
    const [first, retry, sentBinary, unsigned] = remote.requests;
    for (const request of [first, retry]) {
      expect(signatureValid(SECRET, request?.headers ?? {}, '{"text":"hi"}')).toBe(true);
    }
    expect(signatureValid(SECRET, sentBinary?.headers ?? {}, bytes)).toBe(true);
    expect(signatureValid(`${SECRET}x`, first?.headers ?? {}, '{"text":"hi"}')).toBe(false);
    // The standard's message ID is the delivery's, as its Idempotency-Key: the same each attempt.
    expect([first, retry].map((r) => r?.headers["webhook-id"])).toEqual([text.id, text.id]);
    expect(unsigned?.headers["x-relay-signature"]).toBeUndefined();
    expect(unsigned?.headers["webhook-signature"]).toBeUndefined();
  });

  it("signed, but the outbox has no secret → dead at once with the reason, never connected to", async () => {
    const remote = await remoteService([]);
    expect(await performDelivery(delivery(remote.url, { signed: true }), 0, deps())).toEqual({
      kind: "dead",
      reason: { error: "refused, not sent: no secret to sign it with" },
    });
    expect(remote.connections()).toBe(0);
  });

  it("signed, to an origin other than the remote service's (or with none configured) → dead with the reason, never connected to", async () => {
    const remote = await remoteService([]);
    const other = await remoteService([]);
    const signed = delivery(other.url, { signed: true });
    const withSecret = { ...deps(), remoteSecret: SECRET };
    expect(await performDelivery(signed, 0, { ...withSecret, remoteOrigin: remote.url })).toEqual({
      kind: "dead",
      reason: {
        error: `refused, not sent: signed deliveries go only to the remote service (${remote.url}), not ${other.url}`,
      },
    });
    expect(await performDelivery(signed, 0, withSecret)).toEqual({
      kind: "dead",
      reason: {
        error: `refused, not sent: signed deliveries go only to the remote service (none configured), not ${other.url}`,
      },
    });
    expect(other.connections()).toBe(0);
    expect(remote.connections()).toBe(0);
  });
  it("signed, and the remote service redirects to another origin → dead with the reason, the other origin never connected to", async () => {
    const other = await remoteService([]);
    for (const status of [307, 308, 302]) {
      const remote = await remoteService([
        { status, headers: { location: `${other.url}/elsewhere` } },
      ]);
      const signedDeps = { ...deps(), remoteSecret: SECRET, remoteOrigin: remote.url };
      expect(await performDelivery(delivery(remote.url, { signed: true }), 0, signedDeps)).toEqual({
        kind: "dead",
        reason: {
          error: `refused, not sent: redirected from ${remote.url} to another origin (${other.url}), not followed`,
        },
      });
      expect(remote.requests).toHaveLength(1);
    }
    expect(other.connections()).toBe(0);
  });
});
