import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import {
  addressPolicy,
  LOOPBACK_RANGES,
  type Lookup,
  TargetRefused,
} from "../../functions/remote/address-policy.ts";
import { HttpRemoteClient, retryAfterSeconds } from "../../functions/remote/remote-http.ts";

// Real HTTP servers on 127.0.0.1. Names other than IP literals go through a lookup the test
// gives (the one place the system's resolver cannot serve: made-up names for other origins).

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
  bytes: Buffer;
}

const servers: ReturnType<typeof createServer>[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A server answering with `handle`; counts connections and records each request. */
async function target(handle: (seen: Seen, response: ServerResponse) => void) {
  const requests: Seen[] = [];
  let connections = 0;
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      const seen = {
        method: request.method ?? "",
        url: request.url ?? "",
        headers: request.headers,
        body: Buffer.concat(chunks).toString("utf8"),
        bytes: Buffer.concat(chunks),
      };
      requests.push(seen);
      handle(seen, response);
    });
  });
  server.on("connection", () => connections++);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  servers.push(server);
  const { port } = server.address() as AddressInfo;
  return { port, url: `http://127.0.0.1:${port}`, requests, connections: () => connections };
}

const loopback = addressPolicy(LOOPBACK_RANGES);

describe("HttpRemoteClient", () => {
  it("sends the method, headers and body, and reads the answer", async () => {
    const remote = await target((_seen, response) => {
      response.writeHead(201, { "content-type": "text/plain", "x-answer": "yes" }).end("created");
    });
    const client = new HttpRemoteClient({ policy: loopback });
    const response = await client.send({
      method: "POST",
      url: `${remote.url}/channels/general/messages?x=1`,
      headers: { "content-type": "application/json", "idempotency-key": "k1" },
      body: '{"text":"hi"}',
    });
    expect(response).toMatchObject({ status: 201, body: "created", truncated: false });
    expect(response.headers["x-answer"]).toBe("yes");
    expect(remote.requests).toHaveLength(1);
    expect(remote.requests[0]).toMatchObject({
      method: "POST",
      url: "/channels/general/messages?x=1",
      body: '{"text":"hi"}',
    });
    expect(remote.requests[0]?.headers["idempotency-key"]).toBe("k1");
    expect(remote.requests[0]?.headers["content-length"]).toBe("13");
  });

  it("a base64 body is sent as its bytes", async () => {
    const remote = await target((_seen, response) => response.end());
    const bytes = Buffer.from([0, 255, 1, 254]);
    await new HttpRemoteClient({ policy: loopback }).send({
      method: "PUT",
      url: remote.url,
      body: bytes.toString("base64"),
      bodyEncoding: "base64",
    });
    expect(remote.requests[0]?.bytes).toEqual(bytes);
    expect(remote.requests[0]?.headers["content-length"]).toBe("4");
  });

  it("refuses a loopback target unless allowed, without connecting", async () => {
    const remote = await target((_seen, response) => response.end());
    const client = new HttpRemoteClient({ policy: addressPolicy() });
    await expect(client.send({ method: "POST", url: remote.url })).rejects.toThrow(
      new TargetRefused("127.0.0.1 is a loopback address"),
    );
    expect(remote.connections()).toBe(0);
  });

  it("connects to the address it checked: a name that resolves elsewhere the second time (DNS rebinding) does not move the connection", async () => {
    const remote = await target((_seen, response) => response.end("ok"));
    const answers = ["127.0.0.1", "10.0.0.1"];
    const lookups: string[] = [];
    const rebinding: Lookup = async (hostname) => {
      lookups.push(hostname);
      return [{ address: answers.shift() ?? "10.0.0.1", family: 4 }];
    };
    const client = new HttpRemoteClient({ policy: loopback, lookup: rebinding });
    const response = await client.send({
      method: "GET",
      url: `http://rebind.example:${remote.port}/x`,
    });
    expect(response.status).toBe(200);
    expect(lookups).toEqual(["rebind.example"]);
    expect(remote.requests[0]?.headers.host).toBe(`rebind.example:${remote.port}`);
    // The name now resolves to a private address: refused before any connection.
    await expect(
      client.send({ method: "GET", url: `http://rebind.example:${remote.port}/x` }),
    ).rejects.toThrow(
      "rebind.example resolves to a refused address: 10.0.0.1 is a private address",
    );
    expect(remote.connections()).toBe(1);
  });

  it("follows redirects itself, checking each target: one to a metadata address is refused", async () => {
    const redirecting = await target((seen, response) => {
      const to = seen.url === "/meta" ? "http://169.254.169.254/latest/meta-data/" : "/meta";
      response.writeHead(307, { location: to }).end();
    });
    const client = new HttpRemoteClient({ policy: loopback });
    await expect(client.send({ method: "POST", url: `${redirecting.url}/start` })).rejects.toThrow(
      "169.254.169.254 is a link-local address",
    );
    expect(redirecting.requests.map((r) => r.url)).toEqual(["/start", "/meta"]);
  });

  it("307 keeps the method and body; another origin gets no credentials; 303 becomes a GET without body", async () => {
    const final = await target((_seen, response) => response.end("done"));
    const other = await target((seen, response) => {
      if (seen.url === "/see-other")
        response.writeHead(303, { location: `${final.url}/end` }).end();
      else response.writeHead(307, { location: "/see-other" }).end();
    });
    const first = await target((_seen, response) => {
      response.writeHead(307, { location: `http://other.example:${other.port}/moved` }).end();
    });
    const lookup: Lookup = async () => [{ address: "127.0.0.1", family: 4 }];
    const client = new HttpRemoteClient({ policy: loopback, lookup });
    const response = await client.send({
      method: "POST",
      url: first.url,
      headers: { authorization: "Bearer secret", "content-type": "application/json", "x-k": "v" },
      body: "{}",
    });
    expect(response).toMatchObject({ status: 200, body: "done", url: `${final.url}/end` });
    expect(other.requests[0]).toMatchObject({ method: "POST", url: "/moved", body: "{}" });
    expect(other.requests[0]?.headers.authorization).toBeUndefined();
    expect(other.requests[0]?.headers["x-k"]).toBe("v");
    expect(final.requests[0]).toMatchObject({ method: "GET", body: "" });
    expect(final.requests[0]?.headers["content-type"]).toBeUndefined();
  });

  it("another origin gets no signature headers; with sameOriginOnly, a redirect there is refused and it gets nothing", async () => {
    const other = await target((_seen, response) => response.end("elsewhere"));
    const first = await target((_seen, response) => {
      response.writeHead(307, { location: `http://other.example:${other.port}/moved` }).end();
    });
    const lookup: Lookup = async () => [{ address: "127.0.0.1", family: 4 }];
    const client = new HttpRemoteClient({ policy: loopback, lookup });
    const signed = {
      method: "POST" as const,
      url: first.url,
      headers: {
        "Webhook-Id": "d1",
        "Webhook-Timestamp": "1700000000",
        "Webhook-Signature": "v1,AA==",
        "X-Relay-Timestamp": "1700000000",
        "X-Relay-Signature": "sha256=00",
        "x-k": "v",
      },
      body: "{}",
    };
    await expect(client.send(signed, { sameOriginOnly: true })).rejects.toThrow(TargetRefused);
    expect(other.connections()).toBe(0);
    expect(first.requests[0]?.headers["x-relay-signature"]).toBe("sha256=00");
    expect(first.requests[0]?.headers["webhook-signature"]).toBe("v1,AA==");
    const response = await client.send(signed);
    expect(response).toMatchObject({ status: 200, body: "elsewhere" });
    expect(other.requests[0]?.headers["x-relay-signature"]).toBeUndefined();
    expect(other.requests[0]?.headers["x-relay-timestamp"]).toBeUndefined();
    expect(other.requests[0]?.headers["webhook-signature"]).toBeUndefined();
    expect(other.requests[0]?.headers["webhook-timestamp"]).toBeUndefined();
    expect(other.requests[0]?.headers["x-k"]).toBe("v");
  });

  it("stops after the redirect limit and returns the last redirect", async () => {
    const loop = await target((_seen, response) =>
      response.writeHead(302, { location: "/again" }).end(),
    );
    const response = await new HttpRemoteClient({ policy: loopback, maxRedirects: 3 }).send({
      method: "GET",
      url: loop.url,
    });
    expect(response.status).toBe(302);
    expect(loop.requests).toHaveLength(4);
  });

  it("cuts an answer over the size cap", async () => {
    const big = await target((_seen, response) => response.end("x".repeat(1_000_000)));
    const response = await new HttpRemoteClient({ policy: loopback, maxResponseBytes: 1000 }).send({
      method: "GET",
      url: big.url,
    });
    expect(response.truncated).toBe(true);
    expect(response.body).toHaveLength(1000);
  });

  it("a target that does not answer in time → TimeoutError", async () => {
    const hang = await target(() => {});
    const sending = new HttpRemoteClient({ policy: loopback }).send({
      method: "POST",
      url: hang.url,
      timeoutMs: 300,
    });
    await expect(sending).rejects.toMatchObject({ name: "TimeoutError" });
  });

  it("reads Retry-After as seconds or an HTTP date", async () => {
    const limited = await target((_seen, response) => {
      response.writeHead(429, { "retry-after": "7" }).end();
    });
    const response = await new HttpRemoteClient({ policy: loopback }).send({
      method: "GET",
      url: limited.url,
    });
    expect(response.retryAfterSeconds).toBe(7);
    const now = Date.parse("2026-11-29T12:00:00Z");
    expect(retryAfterSeconds("Sun, 29 Nov 2026 12:00:30 GMT", now)).toBe(30);
    expect(retryAfterSeconds("soon", now)).toBeUndefined();
    expect(retryAfterSeconds("-1", now)).toBeUndefined();
  });
});
