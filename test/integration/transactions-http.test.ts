import { readFile } from "node:fs/promises";
import { GetItemCommand } from "@aws-sdk/client-dynamodb";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import { routes } from "../../functions/appservice/protocol/routes.ts";
import { MAX_BODY_BYTES } from "../../functions/handlers/http.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import type { LocalAppservice } from "../../functions/local/local.ts";
import type { Log } from "../../functions/shared/log.ts";
import {
  makeEvent,
  putTransaction,
  recordingApplication,
  startTestAppservice,
  waitFor,
} from "../support/appservice.ts";

describe("transactions endpoint: auth and errors", () => {
  let local: LocalAppservice;
  let token: string;
  const recorder = recordingApplication();

  beforeAll(async () => {
    local = await startTestAppservice({ application: recorder.application });
    token = local.registration.hs_token;
  });
  afterAll(() => local?.stop());

  const expectError = async (response: Response, status: number, errcode: string) => {
    expect(response.status).toBe(status);
    expect(response.headers.get("content-type")).toContain("application/json");
    const body = (await response.json()) as Record<string, unknown>;
    expect(body.errcode).toBe(errcode);
    expect(typeof body.error).toBe("string");
  };

  const valid = () => ({ events: [makeEvent("!room:test.local", "hello")] });

  it("accepts the Bearer hs_token and answers 200 {}", async () => {
    const response = await putTransaction(local.url, "auth-ok", valid(), { token });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({});
  });

  it("accepts the legacy access_token query parameter", async () => {
    const response = await fetch(
      `${local.url}/_matrix/app/v1/transactions/legacy-q?access_token=${encodeURIComponent(token)}`,
      { method: "PUT", body: JSON.stringify(valid()) },
    );
    expect(response.status).toBe(200);
  });

  it("serves the legacy unprefixed path", async () => {
    const event = makeEvent("!legacy:test.local", "via legacy path");
    const response = await putTransaction(
      local.url,
      "x",
      { events: [event] },
      {
        token,
        path: "/transactions/legacy-path",
      },
    );
    expect(response.status).toBe(200);
    await waitFor(() => recorder.events.some((e) => e.event_id === event.event_id));
  });

  it("/_matrix/app/unstable serves the third-party lookups only, as docs/api.md says: a transaction there is 404 M_UNRECOGNIZED, nothing queued", async () => {
    const event = makeEvent("!unstable:test.local", "via the unstable prefix");
    const response = await putTransaction(
      local.url,
      "x",
      { events: [event] },
      { token, path: "/_matrix/app/unstable/transactions/unstable-path" },
    );
    await expectError(response, 404, "M_UNRECOGNIZED");
    // docs/api.md names each old path the route table serves, and no other.
    const readme = await readFile(new URL("../../docs/api.md", import.meta.url), "utf8");
    const header = /^\| route \(old homeservers' paths too: (.*)\| \|$/m.exec(readme)?.[1] ?? "";
    const old = routes.map((r) => r.path).filter((path) => !path.startsWith("/_matrix/app/v1/"));
    expect(old.filter((path) => path.startsWith("/_matrix/app/unstable/"))).toEqual(
      old.filter((path) => path.startsWith("/_matrix/app/unstable/thirdparty/")),
    );
    for (const path of old.filter((path) => !path.startsWith("/_matrix/"))) {
      expect(header).toContain(`\`${path}\``);
    }
    expect(header).toContain("`/thirdparty/…` lookups under `/_matrix/app/unstable`; no other");
    // A fresh transaction afterwards reaches the application; the refused one never did.
    const after = makeEvent("!unstable:test.local", "after");
    expect(
      (await putTransaction(local.url, "unstable-after", { events: [after] }, { token })).status,
    ).toBe(200);
    await waitFor(() => recorder.events.some((e) => e.event_id === after.event_id));
    expect(recorder.events.some((e) => e.event_id === event.event_id)).toBe(false);
  });

  it("401 M_UNAUTHORIZED without a token", async () => {
    await expectError(await putTransaction(local.url, "no-token", valid()), 401, "M_UNAUTHORIZED");
  });

  it("403 M_FORBIDDEN for a wrong token, in the header or the query", async () => {
    await expectError(
      await putTransaction(local.url, "bad-token", valid(), { token: `${token}x` }),
      403,
      "M_FORBIDDEN",
    );
    const response = await fetch(
      `${local.url}/_matrix/app/v1/transactions/bad-q?access_token=nope`,
      {
        method: "PUT",
        body: JSON.stringify(valid()),
      },
    );
    await expectError(response, 403, "M_FORBIDDEN");
  });

  it("403 M_FORBIDDEN when header and query disagree, even if one is right", async () => {
    const response = await fetch(
      `${local.url}/_matrix/app/v1/transactions/disagree?access_token=wrong`,
      {
        method: "PUT",
        headers: { authorization: `Bearer ${token}` },
        body: JSON.stringify(valid()),
      },
    );
    await expectError(response, 403, "M_FORBIDDEN");
  });

  it("400 M_NOT_JSON for a body that is not JSON", async () => {
    await expectError(
      await putTransaction(local.url, "not-json", "{nope", { token }),
      400,
      "M_NOT_JSON",
    );
  });

  it("400 M_BAD_JSON when events is missing or not an array, or an event lacks its ID", async () => {
    await expectError(
      await putTransaction(local.url, "no-events", {}, { token }),
      400,
      "M_BAD_JSON",
    );
    await expectError(
      await putTransaction(local.url, "events-object", { events: {} }, { token }),
      400,
      "M_BAD_JSON",
    );
    await expectError(
      await putTransaction(local.url, "array-body", [], { token }),
      400,
      "M_BAD_JSON",
    );
    const { event_id: _, ...withoutId } = makeEvent("!r:test.local", "x");
    await expectError(
      await putTransaction(local.url, "no-event-id", { events: [withoutId] }, { token }),
      400,
      "M_BAD_JSON",
    );
  });

  it("413 M_TOO_LARGE past the body limit", async () => {
    const huge = JSON.stringify({ events: [], padding: "x".repeat(MAX_BODY_BYTES) });
    await expectError(await putTransaction(local.url, "huge", huge, { token }), 413, "M_TOO_LARGE");
  });

  it("404 M_UNRECOGNIZED for an unknown path, 405 M_UNRECOGNIZED for a known path's wrong method", async () => {
    await expectError(await fetch(`${local.url}/_matrix/app/v1/nothing`), 404, "M_UNRECOGNIZED");
    await expectError(
      await fetch(`${local.url}/_matrix/app/v1/transactions/1`, { method: "POST", body: "{}" }),
      405,
      "M_UNRECOGNIZED",
    );
    await expectError(await fetch(`${local.url}/transactions/1`), 405, "M_UNRECOGNIZED");
  });

  it("decodes a percent-encoded txnId", async () => {
    const txnId = "txn/with ünicode&?";
    const response = await putTransaction(local.url, txnId, valid(), { token });
    expect(response.status).toBe(200);
    const dynamodb = localDynamoDb(local.dynamodbEndpoint);
    const { Item } = await dynamodb.send(
      new GetItemCommand({
        TableName: local.tableName,
        Key: { pk: { S: `TXN#${txnId}` }, sk: { S: "-" } },
      }),
    );
    dynamodb.destroy();
    expect(Item?.bodyHash?.S).toMatch(/^[0-9a-f]{64}$/);
  });

  it("never echoes a token in an error body", async () => {
    const response = await putTransaction(local.url, "leak", valid(), { token: "secret-guess" });
    const text = await response.text();
    expect(text).not.toContain("secret-guess");
    expect(text).not.toContain(token);
  });
});

describe("a homeserver whose txnId counter was reset (a Synapse restart)", () => {
  it("logs the reset once at WARN with the txnIds before and after it, the reuses at debug, and counts them", async () => {
    const lines: { level: keyof Log; message: string; attributes: unknown[] }[] = [];
    const log = Object.fromEntries(
      (["debug", "info", "warn", "error"] as const).map((level) => [
        level,
        (message: string, ...attributes: unknown[]) => lines.push({ level, message, attributes }),
      ]),
    ) as unknown as Log;
    const recorder = recordingApplication();
    const start = (tableName?: string) =>
      startTestAppservice({
        application: recorder.application,
        log,
        ...(tableName && { tableName }),
      }).then((local) => {
        onTestFinished(local.stop);
        return local;
      });
    const local = await start();
    let sent = 0;
    const put = async (target: LocalAppservice, txnId: string) => {
      sent++;
      const events = [makeEvent("!reset:test.local", `message ${sent}`)];
      const response = await putTransaction(
        target.url,
        txnId,
        { events },
        {
          token: target.registration.hs_token,
        },
      );
      expect(response.status).toBe(200);
    };
    const aboutTxnIds = () =>
      lines
        .filter((line) => line.level !== "info" && /txnId/.test(line.message))
        .map(({ level, message, attributes }) => ({
          level,
          reset: /went back/.test(message),
          attributes,
        }));

    for (const txnId of ["1", "2", "3", "4", "5"]) await put(local, txnId);
    expect(aboutTxnIds()).toEqual([]);
    // The homeserver restarts: its counter starts at 1 again, with other events.
    for (const txnId of ["1", "2", "3"]) await put(local, txnId);
    // And again.
    await put(local, "1");
    expect(aboutTxnIds()).toEqual([
      { level: "warn", reset: true, attributes: [{ txnId: "1", previousTxnId: "5" }] },
      { level: "debug", reset: false, attributes: [{ txnId: "1" }] },
      { level: "debug", reset: false, attributes: [{ txnId: "2" }] },
      { level: "debug", reset: false, attributes: [{ txnId: "3" }] },
      { level: "warn", reset: true, attributes: [{ txnId: "1", previousTxnId: "3" }] },
      { level: "debug", reset: false, attributes: [{ txnId: "1" }] },
    ]);
    expect(local.metrics.counts.get("TransactionsReused")).toBe(4);
    expect(local.metrics.counts.get("TransactionsAccepted")).toBe(9);

    // A process that saw no txnId before (another Lambda instance) warns at its first reuse.
    lines.length = 0;
    const fresh = await start(local.tableName);
    await put(fresh, "2");
    await put(fresh, "3");
    expect(aboutTxnIds()).toEqual([
      { level: "warn", reset: false, attributes: [{ txnId: "2" }] },
      { level: "debug", reset: false, attributes: [{ txnId: "3" }] },
    ]);
    expect(lines.find((line) => line.level === "warn")?.message).toMatch(
      /txnId reused with different events/,
    );
    expect(fresh.metrics.counts.get("TransactionsReused")).toBe(2);
    // Every transaction's events were handled, the reused ones included.
    await waitFor(() => recorder.events.length === sent, 20_000, "every event");
  });
});
