import { connect } from "node:net";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MAX_BODY_BYTES, MAX_JSON_DEPTH } from "../../functions/handlers/http.ts";
import type { Log } from "../../functions/shared/log.ts";
import { makeEvent, NO_DEAD_LETTERS, waitUntilDrained } from "../support/appservice.ts";
import { startAppserviceAndHomeserver } from "../support/with-homeserver.ts";

/** The test's log lines, as text, to check that none carries a token or reports an unexpected error. */
const lines: { level: string; text: string }[] = [];
const recordingLog: Log = Object.fromEntries(
  (["debug", "info", "warn", "error"] as const).map((level) => [
    level,
    (message: string, ...attributes: Record<string, unknown>[]) =>
      lines.push({ level, text: `${message} ${JSON.stringify(attributes)}` }),
  ]),
) as unknown as Log;

/** A raw HTTP/1.0 request, so that nothing between us and the server tidies it up. */
function rawRequest(
  port: number,
  head: string,
  body = "",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1");
    let data = "";
    socket.on("data", (chunk) => (data += chunk));
    socket.on("error", reject);
    socket.on("end", () => {
      const [headers = "", ...rest] = data.split("\r\n\r\n");
      resolve({ status: Number(headers.split(" ")[1]), body: rest.join("\r\n\r\n") });
    });
    socket.write(
      `${head}\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  });
}

/** `.` and `..` are dot segments that every HTTP client resolves away before sending. */
const txnIds = (strings: fc.Arbitrary<string>) => strings.filter((s) => s !== "." && s !== "..");

describe("hostile input over the HTTP surface", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  let secrets: string[];

  beforeAll(async () => {
    started = await startAppserviceAndHomeserver({ log: recordingLog });
    secrets = [started.registration.hs_token, started.registration.as_token];
  });
  afterAll(() => started?.stop());
  // Once what the test queued has been handled: none of its log lines carries a token or an
  // unexpected error.
  afterEach(async () => {
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    const logged = lines.splice(0);
    for (const line of logged)
      for (const secret of secrets) expect(line.text).not.toContain(secret);
    expect(logged.filter((l) => l.level === "error")).toEqual([]);
  });

  /** A spec-shaped 4xx (or a success): never a 5xx, a token or a stack trace in the body. */
  const expectSafe = (status: number, body: string) => {
    expect(status).toBeLessThan(500);
    for (const secret of secrets) expect(body).not.toContain(secret);
    expect(body).not.toMatch(/\bat .*\.(ts|js):\d+/);
    if (status >= 400) {
      const parsed = JSON.parse(body) as { errcode: unknown; error: unknown };
      expect(typeof parsed.errcode).toBe("string");
      expect(typeof parsed.error).toBe("string");
    }
  };
  const request = async (
    method: string,
    path: string,
    init: { body?: string; token?: string } = {},
  ) => {
    const response = await fetch(`${started.local.url}${path}`, {
      method,
      headers: init.token ? { authorization: `Bearer ${init.token}` } : {},
      ...(init.body !== undefined && { body: init.body }),
    });
    const text = await response.text();
    expectSafe(response.status, text);
    return { status: response.status, text };
  };

  it("random and malformed paths, with and without the token, any method", async () => {
    const segment = fc.oneof(
      fc.string(),
      fc.constantFrom(
        "_matrix",
        "app",
        "v1",
        "unstable",
        "transactions",
        "users",
        "rooms",
        "thirdparty",
        "ping",
        "%",
        "%E0%A4%A",
        "..",
        "%2F",
      ),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(segment, { maxLength: 6 }),
        fc.constantFrom("GET", "PUT", "POST", "DELETE", "PATCH"),
        fc.boolean(),
        async (segments, method, withToken) => {
          const path = `/${segments.map((s) => (/^[\w%.-]*$/.test(s) ? s : encodeURIComponent(s))).join("/")}`;
          await request(method, path, {
            ...(withToken && { token: started.registration.hs_token }),
            ...(method === "PUT" || method === "POST" ? { body: '{"events":[]}' } : {}),
          });
        },
      ),
      { numRuns: 150 },
    );
  });

  it("random JSON and wrong types for every transaction field", async () => {
    const event = makeEvent("!r:test.local", "x");
    const wrong = fc.oneof(
      fc.string(),
      fc.integer(),
      fc.boolean(),
      fc.constant(null),
      fc.array(fc.integer()),
      fc.object(),
    );
    const body = fc.oneof(
      fc.jsonValue(),
      fc.record({ events: wrong }),
      fc.record({
        events: fc.array(
          fc.record({ ...Object.fromEntries(Object.keys(event).map((k) => [k, wrong])) }),
        ),
      }),
      fc.record({
        events: fc.constant([]),
        ephemeral: wrong,
        to_device: wrong,
        device_lists: wrong,
        device_one_time_keys_count: wrong,
        "de.sorunome.msc2409.ephemeral": wrong,
      }),
    );
    await fc.assert(
      fc.asyncProperty(
        body,
        txnIds(fc.string({ minLength: 1, maxLength: 40 })),
        async (value, txnId) => {
          const { status } = await request(
            "PUT",
            `/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`,
            {
              token: started.registration.hs_token,
              body: JSON.stringify(value),
            },
          );
          expect([200, 400]).toContain(status);
        },
      ),
      { numRuns: 150 },
    );
  });

  it("deeply nested JSON → 400 M_BAD_JSON, however deep", async () => {
    for (const depth of [MAX_JSON_DEPTH + 1, 5_000, 200_000]) {
      const content = `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
      const body = `{"events":[{"event_id":"$deep","room_id":"!r:x","type":"t","sender":"@a:x","content":${content}}]}`;
      const { status, text } = await request("PUT", `/_matrix/app/v1/transactions/deep${depth}`, {
        token: started.registration.hs_token,
        body,
      });
      expect(status).toBe(depth * 6 > MAX_BODY_BYTES ? 413 : 400);
      expect(JSON.parse(text).errcode).toBe(
        depth * 6 > MAX_BODY_BYTES ? "M_TOO_LARGE" : "M_BAD_JSON",
      );
    }
    // Nesting inside strings does not count.
    const fine = JSON.stringify({ events: [makeEvent("!r:test.local", "[".repeat(10_000))] });
    expect(
      (
        await request("PUT", "/_matrix/app/v1/transactions/brackets", {
          token: started.registration.hs_token,
          body: fine,
        })
      ).status,
    ).toBe(200);
  });

  it("a huge body → 413 M_TOO_LARGE", async () => {
    const { status, text } = await request("PUT", "/_matrix/app/v1/transactions/huge", {
      token: started.registration.hs_token,
      body: JSON.stringify({ events: [], pad: "x".repeat(MAX_BODY_BYTES + 1) }),
    });
    expect(status).toBe(413);
    expect(JSON.parse(text).errcode).toBe("M_TOO_LARGE");
  });

  it("a txnId of 10 KB, and percent-encoded unicode, are accepted", async () => {
    const token = started.registration.hs_token;
    const body = JSON.stringify({ events: [makeEvent("!r:test.local", "long")] });
    expect(
      (await request("PUT", `/_matrix/app/v1/transactions/${"9".repeat(10_240)}`, { token, body }))
        .status,
    ).toBe(200);
    await fc.assert(
      fc.asyncProperty(
        txnIds(fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 })),
        async (txnId) => {
          const { status } = await request(
            "PUT",
            `/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`,
            {
              token,
              body: '{"events":[]}',
            },
          );
          expect(status).toBe(200);
        },
      ),
      { numRuns: 50 },
    );
  });

  it("invalid user IDs and aliases in queries → 404, never a homeserver call", async () => {
    const before = started.homeserver.requests.length;
    await fc.assert(
      fc.asyncProperty(fc.string(), fc.constantFrom("users", "rooms"), async (id, kind) => {
        const { status } = await request(
          "GET",
          `/_matrix/app/v1/${kind}/${encodeURIComponent(id)}`,
          {
            token: started.registration.hs_token,
          },
        );
        expect(status).toBe(404);
      }),
      { numRuns: 100 },
    );
    expect(started.homeserver.requests.length).toBe(before);
  });

  it("header tricks: two Authorization headers, a token in both places disagreeing, odd schemes", async () => {
    const token = started.registration.hs_token;
    const put = "PUT /_matrix/app/v1/transactions/tricks HTTP/1.0";
    const cases = [
      [`${put}\r\nauthorization: Bearer ${token}\r\nauthorization: Bearer wrong`, [401, 403]],
      [`${put}\r\nauthorization: Bearer wrong\r\nauthorization: Bearer ${token}`, [401, 403]],
      [
        `PUT /_matrix/app/v1/transactions/tricks?access_token=wrong HTTP/1.0\r\nauthorization: Bearer ${token}`,
        [403],
      ],
      [
        `PUT /_matrix/app/v1/transactions/tricks?access_token=${token}&access_token=${token} HTTP/1.0`,
        [403],
      ],
      [`${put}\r\nauthorization: Basic ${Buffer.from(`x:${token}`).toString("base64")}`, [401]],
      [`${put}\r\nauthorization: Bearer`, [401]],
      [`${put}\r\nauthorization: Bearer ${token} extra`, [401]],
    ] as const;
    for (const [head, statuses] of cases) {
      const { status, body } = await rawRequest(started.local.port, head, '{"events":[]}');
      expectSafe(status, body);
      expect(statuses, head).toContain(status);
    }
  });

  it("logs an accepted transaction and the handling of its events", async () => {
    const event = makeEvent("!r:test.local", "logged");
    expect((await started.send("logged", [event])).status).toBe(200);
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    const texts = lines.map((line) => line.text);
    expect(texts).toContainEqual(expect.stringContaining("transaction acknowledged"));
    expect(texts).toContainEqual(expect.stringContaining("inbound message processed"));
    // The afterEach checks these lines for tokens and errors.
  });
});
