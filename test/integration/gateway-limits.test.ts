import { connect, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { WEBHOOK_MAX_BODY_BYTES } from "../../functions/applications/webhooks/webhooks/post.ts";
import { routeTable } from "../../functions/appservice/protocol/routes.ts";
import { createFallbackHandler } from "../../functions/handlers/fallback.ts";
import { MAX_BODY_BYTES } from "../../functions/handlers/http.ts";
import { createLogger } from "../../functions/handlers/shared/logger.ts";
import {
  createGateway,
  type GatewayOptions,
  HEADERS_TIMEOUT_MS,
  MAX_CONNECTIONS,
  MAX_CONNECTIONS_PER_ADDRESS,
  REQUEST_TIMEOUT_MS,
  RESERVED_CONNECTIONS,
} from "../../functions/local/gateway.ts";
import { makeEvent, waitFor } from "../support/appservice.ts";
import { startAppserviceAndHomeserver } from "../support/with-homeserver.ts";

interface Exchange {
  socket: Socket;
  /** Everything the server sent so far. */
  received: () => string;
  /** Resolves once the server has closed the connection. */
  closed: Promise<void>;
}

/**
 * Opens a connection (from `localAddress`, another loopback address, when given) and sends
 * `data` (headers, maybe part of a body), and nothing more.
 */
function open(port: number, data = "", localAddress?: string): Exchange {
  const socket = connect({ port, host: "127.0.0.1", ...(localAddress && { localAddress }) });
  let received = "";
  socket.on("data", (chunk) => (received += chunk));
  // The server may reset a connection it refused; what it sent before is what counts.
  socket.on("error", () => undefined);
  const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
  if (data) socket.write(data);
  return { socket, received: () => received, closed };
}

/** The final (not `100 Continue`) status and JSON body of what the server sent. */
function answer(received: string): { status: number; body: Record<string, unknown> } {
  const final = received.split(/(?=HTTP\/1\.1 )/).filter((part) => !/^HTTP\/1\.1 100/.test(part));
  const [head = "", ...rest] = (final.at(-1) ?? "").split("\r\n\r\n");
  let body = rest.join("\r\n\r\n");
  if (/^transfer-encoding: chunked$/im.test(head)) {
    let decoded = "";
    let size = Number.parseInt(body, 16);
    while (size > 0) {
      const start = body.indexOf("\r\n") + 2;
      decoded += body.slice(start, start + size);
      body = body.slice(start + size + 2);
      size = Number.parseInt(body, 16);
    }
    body = decoded;
  }
  return { status: Number(head.split(" ")[1]), body: body ? JSON.parse(body) : {} };
}

/** What the server sends back to `GET /nothing` (404 if served, nothing if refused). */
async function getNothing(port: number, localAddress?: string) {
  const exchange = open(port, head("GET /nothing", { connection: "close" }), localAddress);
  await exchange.closed;
  return exchange.received();
}

const head = (requestLine: string, headers: Record<string, string | number>) =>
  `${requestLine} HTTP/1.1\r\nhost: 127.0.0.1\r\n${Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("")}\r\n`;

describe("the local gateway refuses a body unread: routed, sized and authenticated first", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  let port: number;
  beforeAll(async () => {
    started = await startAppserviceAndHomeserver();
    port = started.local.port;
  });
  afterAll(() => started?.stop());

  /**
   * Sends the head and `sent`, holds back the rest of the body, and waits for the server to
   * answer and close: an answer here was given without the body.
   */
  async function held(requestLine: string, headers: Record<string, string | number>, sent = "") {
    const exchange = open(port, head(requestLine, headers) + sent);
    await exchange.closed;
    return answer(exchange.received());
  }

  it("a webhook POST declaring more than its limit (4 MiB) → 413 M_TOO_LARGE before its body is sent", async () => {
    for (const length of [WEBHOOK_MAX_BODY_BYTES + 1, MAX_BODY_BYTES]) {
      const { status, body } = await held(
        "POST /webhook/whatever",
        { "content-type": "application/json", "content-length": length },
        "x".repeat(1024),
      );
      expect(status).toBe(413);
      expect(body).toEqual({
        errcode: "M_TOO_LARGE",
        error: `The request body is over ${WEBHOOK_MAX_BODY_BYTES} bytes`,
      });
    }
  });

  it("a chunked webhook POST is cut off once past its limit, its end never awaited", async () => {
    const chunk = "x".repeat(1024);
    const chunks = Array.from(
      { length: WEBHOOK_MAX_BODY_BYTES / 1024 + 1 },
      () => `400\r\n${chunk}\r\n`,
    ).join("");
    const { status, body } = await held(
      "POST /webhook/whatever",
      { "content-type": "text/plain", "transfer-encoding": "chunked" },
      `${chunks}400\r\n${chunk}`,
    );
    expect(status).toBe(413);
    expect(body.errcode).toBe("M_TOO_LARGE");
  });

  it("a webhook body of exactly its limit is read and handed to the handler", async () => {
    const response = await fetch(`${started.local.url}/webhook/no-such-id`, {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body: "x".repeat(WEBHOOK_MAX_BODY_BYTES),
    });
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({ errcode: "M_NOT_FOUND", error: "No such webhook" });
  });

  it("a PUT of a transaction without a valid hs_token → 401/403 before its 5 MB body is sent", async () => {
    const length = { "content-type": "application/json", "content-length": 5_000_000 };
    const missing = await held("PUT /_matrix/app/v1/transactions/t1", length, '{"events":[');
    expect(missing).toEqual({
      status: 401,
      body: { errcode: "M_UNAUTHORIZED", error: "Missing hs_token" },
    });
    const wrong = await held(
      "PUT /_matrix/app/v1/transactions/t2",
      { ...length, authorization: `Bearer ${"w".repeat(64)}` },
      '{"events":[',
    );
    expect(wrong).toEqual({
      status: 403,
      body: { errcode: "M_FORBIDDEN", error: "Invalid hs_token" },
    });
    const legacy = await held("PUT /transactions/t3?access_token=wrong", length, '{"events":[');
    expect(legacy.status).toBe(403);
  });

  it("an authenticated PUT declaring more than 6 MB → 413 before its body is sent", async () => {
    const { status, body } = await held(
      "PUT /_matrix/app/v1/transactions/big",
      {
        authorization: `Bearer ${started.registration.hs_token}`,
        "content-type": "application/json",
        "content-length": MAX_BODY_BYTES + 1,
      },
      '{"events":[',
    );
    expect(status).toBe(413);
    expect(body).toEqual({
      errcode: "M_TOO_LARGE",
      error: `The request body is over ${MAX_BODY_BYTES} bytes`,
    });
  });

  it("the transactions route keeps its 6 MB limit: a 300 KB transaction is taken", async () => {
    const events = Array.from({ length: 10 }, () =>
      makeEvent("!big:test.local", "y".repeat(30_000)),
    );
    const response = await started.send("large", events);
    expect(response.status).toBe(200);
  });

  it("Expect: 100-continue gets the go-ahead only when the body is wanted", async () => {
    const unauthenticated = open(
      port,
      head("PUT /_matrix/app/v1/transactions/c1", {
        "content-type": "application/json",
        "content-length": 13,
        expect: "100-continue",
      }),
    );
    await unauthenticated.closed;
    expect(unauthenticated.received()).not.toContain("100 Continue");
    expect(answer(unauthenticated.received()).status).toBe(401);

    const authenticated = open(
      port,
      head("PUT /_matrix/app/v1/transactions/c2", {
        authorization: `Bearer ${started.registration.hs_token}`,
        "content-type": "application/json",
        "content-length": 13,
        expect: "100-continue",
        connection: "close",
      }),
    );
    await waitFor(() => authenticated.received().includes("100 Continue"), 10_000, "100 Continue");
    authenticated.socket.write('{"events":[]}');
    await authenticated.closed;
    expect(answer(authenticated.received())).toEqual({ status: 200, body: {} });
  });

  it("100 held bodies, each declaring megabytes, are all refused and closed; the homeserver still gets through", async () => {
    const requests = Array.from({ length: 100 }, (_, i) =>
      i % 2 === 0
        ? open(
            port,
            `${head(`POST /webhook/held${i}`, {
              "content-type": "application/json",
              "content-length": MAX_BODY_BYTES,
            })}${"x".repeat(1024)}`,
          )
        : open(
            port,
            `${head(`PUT /_matrix/app/v1/transactions/held${i}`, {
              "content-type": "application/json",
              "content-length": MAX_BODY_BYTES,
            })}{"events":[`,
          ),
    );
    // None of them sends more: each ends because the server closed it.
    await Promise.all(requests.map((request) => request.closed));
    const statuses = requests.map((request) => answer(request.received()).status);
    expect(statuses.filter((status) => status === 413)).toHaveLength(50);
    expect(statuses.filter((status) => status === 401)).toHaveLength(50);
    expect((await started.send("after-held", [makeEvent("!r:test.local", "hi")])).status).toBe(200);
  });

  it("300 half-sent connections from the homeserver's own address: its transaction and /health still get 200 at once", async () => {
    // Every other one sends half a request to a public route, the rest nothing at all.
    const attack = Array.from({ length: 300 }, (_, i) =>
      open(port, i % 2 === 0 ? "POST /webhook/flood HTTP/1.1\r\nhost: 127.0.0.1\r\n" : ""),
    );
    let refused = 0;
    for (const connection of attack) connection.closed.then(() => refused++);
    onTestFinished(async () => {
      for (const connection of attack) connection.socket.destroy();
      await Promise.all(attack.map((connection) => connection.closed));
    });
    // 128 for the address, at most 64 waiting in the homeserver's share: at least 108 refused.
    await waitFor(() => refused >= 300 - 128 - 64, 10_000, "the excess refused");
    expect(attack.filter((connection) => connection.received() !== "")).toEqual([]);

    const begun = Date.now();
    expect((await started.send("under-flood", [makeEvent("!r:test.local", "hi")])).status).toBe(
      200,
    );
    const health = await fetch(`${started.local.url}/health`);
    expect(health.status).toBe(200);
    expect(Date.now() - begun).toBeLessThan(5_000);

    // One more public request from that address is refused unanswered; from another it is served.
    expect(await getNothing(port)).toBe("");
    expect(answer(await getNothing(port, "127.0.0.2")).status).toBe(404);
    expect(refused).toBeLessThan(300);
  }, 30_000);
});

describe("the local gateway's connection limits", () => {
  const startGateway = async (limits: Partial<GatewayOptions> = {}) => {
    const routes = routeTable([]);
    const server = createGateway({
      routes,
      handlers: () => undefined,
      hsToken: () => undefined,
      fallback: createFallbackHandler(routes, createLogger()),
      ...limits,
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    onTestFinished(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    // The connections open at the server, and those it has seen.
    let served = 0;
    let seen = 0;
    server.on("connection", (socket) => {
      served++;
      seen++;
      socket.once("close", () => served--);
    });
    return {
      server,
      port: (server.address() as { port: number }).port,
      served: () => served,
      seen: () => seen,
    };
  };
  /** Half a request to a public route: it holds its connection until the headers timeout. */
  const halfPublic = "POST /webhook/x HTTP/1.1\r\nhost: 127.0.0.1\r\n";
  /** Still starting (no handlers here): the gateway's own answer to `/health`. */
  const starting = { status: 503, body: { errcode: "M_UNKNOWN", error: "Starting" } };

  it("serves 256 connections, 64 kept for the homeserver, 128 from one address; 10 s for the headers and 30 s for the request", async () => {
    const { server } = await startGateway();
    expect([MAX_CONNECTIONS, RESERVED_CONNECTIONS, MAX_CONNECTIONS_PER_ADDRESS]).toEqual([
      256, 64, 128,
    ]);
    expect(server.headersTimeout).toBe(HEADERS_TIMEOUT_MS);
    expect(HEADERS_TIMEOUT_MS).toBe(10_000);
    expect(server.requestTimeout).toBe(REQUEST_TIMEOUT_MS);
    expect(REQUEST_TIMEOUT_MS).toBe(30_000);
  });

  it("closes a public connection past the public share unanswered, and serves again once one ends", async () => {
    const { port, served } = await startGateway({ maxConnections: 3, reservedConnections: 1 });
    const holding = [open(port, halfPublic), open(port, halfPublic)];
    await waitFor(() => served() === 2, 10_000, "two connections");
    expect(await getNothing(port)).toBe("");

    holding[0]?.socket.destroy();
    await waitFor(() => served() === 1, 10_000, "one connection");
    expect(answer(await getNothing(port)).status).toBe(404);
    holding[1]?.socket.destroy();
  });

  it("caps the public connections of one address; another address is still served", async () => {
    const { port, served } = await startGateway({
      maxConnections: 10,
      reservedConnections: 2,
      maxConnectionsPerAddress: 2,
    });
    const holding = [open(port, halfPublic), open(port, halfPublic)];
    onTestFinished(() => {
      for (const connection of holding) connection.socket.destroy();
    });
    await waitFor(() => served() === 2, 10_000, "two connections");
    expect(await getNothing(port)).toBe("");
    expect(answer(await getNothing(port, "127.0.0.2")).status).toBe(404);
  });

  it("with the public share full, the homeserver's routes are served; the longest silent waiter makes room", async () => {
    const { port, served, seen } = await startGateway({
      maxConnections: 4,
      reservedConnections: 2,
    });
    const holding = [open(port, halfPublic), open(port, halfPublic)];
    await waitFor(() => served() === 2, 10_000, "the public share full");
    // Silent: they may be the homeserver's, so they wait in its share.
    const silent = [open(port), open(port)];
    onTestFinished(() => {
      for (const connection of [...holding, ...silent]) connection.socket.destroy();
    });
    await waitFor(() => seen() === 4, 10_000, "two waiting");
    const health = open(port, head("GET /health", { connection: "close" }));
    await silent[0]?.closed;
    await health.closed;
    expect(answer(health.received())).toEqual(starting);
    // A transaction's line takes the reserved share too (refused here: no token yet).
    const transaction = open(
      port,
      head("PUT /_matrix/app/v1/transactions/1", { "content-length": 0, connection: "close" }),
    );
    await transaction.closed;
    expect(answer(transaction.received()).status).toBe(503);
    // A public line over the public share is closed unanswered; those held are still open.
    expect(await getNothing(port)).toBe("");
    expect(holding.map((connection) => connection.socket.destroyed)).toEqual([false, false]);
  });

  it("closes a connection whose headers take longer than the headers timeout", async () => {
    const { port } = await startGateway({ headersTimeoutMs: 1_000 });
    const begun = Date.now();
    const slow = open(port, "GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    await slow.closed;
    expect(slow.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect(Date.now() - begun).toBeLessThan(5_000);
  });
});
