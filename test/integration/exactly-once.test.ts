import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { afterEach, describe, expect, inject, it } from "vitest";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { localSqs } from "../../functions/local/aws-clients.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import type { Log } from "../../functions/shared/log.ts";
import {
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  recordingApplication,
  startTestAppservice,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { startTcpProxy } from "../support/tcp-proxy.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function start(options: Parameters<typeof startTestAppservice>[0] = {}) {
  const local = await startTestAppservice(options);
  cleanups.push(() => local.stop());
  return local;
}

const countById = (events: ClientEvent[]) => {
  const counts = new Map<string, number>();
  for (const event of events) counts.set(event.event_id, (counts.get(event.event_id) ?? 0) + 1);
  return counts;
};

const expectEachOnce = (handled: ClientEvent[], sent: ClientEvent[]) => {
  const counts = countById(handled);
  for (const event of sent) expect(counts.get(event.event_id), event.event_id).toBe(1);
  expect(handled).toHaveLength(sent.length);
};

/** 50 events over 5 rooms, interleaved as a homeserver's stream would be. */
const fiftyEvents = () =>
  Array.from({ length: 50 }, (_, i) => makeEvent(`!room${i % 5}:test.local`, `message ${i}`));

describe("exactly-once delivery", () => {
  it("a transaction of 50 events → 50 handler calls, in order within each room", async () => {
    const recorder = recordingApplication();
    const local = await start({ application: recorder.application });
    const events = fiftyEvents();
    const response = await putTransaction(
      local.url,
      "fifty",
      { events },
      { token: local.registration.hs_token },
    );
    expect(response.status).toBe(200);
    await waitFor(() => recorder.events.length >= 50, 20_000, "50 events");
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, events);
    for (let room = 0; room < 5; room++) {
      const roomId = `!room${room}:test.local`;
      expect(recorder.events.filter((e) => e.room_id === roomId).map((e) => e.event_id)).toEqual(
        events.filter((e) => e.room_id === roomId).map((e) => e.event_id),
      );
    }
  });

  it("emoji and every other character outside the BMP reach the application unchanged", async () => {
    const recorder = recordingApplication();
    const local = await start({ application: recorder.application });
    const events = ["👋 hello 🎉", "𐀀 \u{10FFFF} é \uFFFD", "\uFFFF and \uFFFE"].map((body) =>
      makeEvent("!emoji:test.local", body),
    );
    const response = await putTransaction(
      local.url,
      "emoji",
      { events },
      { token: local.registration.hs_token },
    );
    expect(response.status).toBe(200);
    await waitFor(() => recorder.events.length >= 3, 20_000, "3 events");
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(recorder.events).toEqual(events);
  });

  it("the same transaction twice in a row → each event handled once, the retry a no-op 200", async () => {
    const recorder = recordingApplication();
    const local = await start({ application: recorder.application });
    const events = fiftyEvents();
    const token = local.registration.hs_token;
    for (let i = 0; i < 2; i++) {
      const response = await putTransaction(local.url, "twice", { events }, { token });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
    }
    await waitFor(() => recorder.events.length >= 50);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, events);
  });

  it("the same transaction 16 times concurrently → all 200, each event handled once", async () => {
    const recorder = recordingApplication();
    const local = await start({ application: recorder.application });
    const events = fiftyEvents();
    const token = local.registration.hs_token;
    const responses = await Promise.all(
      Array.from({ length: 16 }, () => putTransaction(local.url, "sixteen", { events }, { token })),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(16).fill(200));
    await waitFor(() => recorder.events.length >= 50);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, events);
    // The counters CloudWatch shows in AWS.
    expect(local.metrics.counts.get("TransactionsAccepted")).toBe(1);
    expect(local.metrics.counts.get("TransactionsDuplicate")).toBe(15);
    expect(local.metrics.counts.get("ItemsHandled")).toBe(50);
  });

  it("a retry long after the queue's deduplication window is still absorbed by the event claims", async () => {
    const recorder = recordingApplication();
    const local = await start({ application: recorder.application });
    const events = fiftyEvents();
    const token = local.registration.hs_token;
    await putTransaction(local.url, "late", { events }, { token });
    await waitFor(() => recorder.events.length >= 50);
    // A homeserver whose counter was reset reuses the txnId for a body that repeats these
    // events: nothing matches the transaction record, so only the claims can stop doubles.
    const extra = makeEvent("!room0:test.local", "new one");
    const response = await putTransaction(
      local.url,
      "late",
      { events: [...events, extra] },
      { token },
    );
    expect(response.status).toBe(200);
    await waitFor(() => recorder.events.length >= 51);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, [...events, extra]);
  });

  it("the same txnId with a different body is processed as new and logged as a warning", async () => {
    const recorder = recordingApplication();
    const warnings: string[] = [];
    const log: Log = {
      debug() {},
      info() {},
      error() {},
      warn: (message) => warnings.push(message),
    };
    const local = await start({ application: recorder.application, log });
    const token = local.registration.hs_token;
    const first = [makeEvent("!r:test.local", "first")];
    const second = [makeEvent("!r:test.local", "second")];
    expect((await putTransaction(local.url, "reused", { events: first }, { token })).status).toBe(
      200,
    );
    expect((await putTransaction(local.url, "reused", { events: second }, { token })).status).toBe(
      200,
    );
    await waitFor(() => recorder.events.length >= 2);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, [...first, ...second]);
    expect(warnings.some((w) => w.includes("txnId reused"))).toBe(true);
  });

  it("the enqueue done and the record failed (a crash) → 5xx, nothing recorded; the retry yields exactly once", async () => {
    const recorder = recordingApplication();
    let crashes = 1;
    const local = await start({
      application: recorder.application,
      // The record fails once, as if the process died with the enqueue done.
      wrapStore: (store) =>
        Object.assign(Object.create(store), {
          recordTransaction: async (...args: Parameters<typeof store.recordTransaction>) => {
            if (crashes-- > 0) throw new Error("injected crash before the record");
            return store.recordTransaction(...args);
          },
        }),
    });
    const events = fiftyEvents();
    const token = local.registration.hs_token;
    const failed = await putTransaction(local.url, "crash", { events }, { token });
    expect(failed.status).toBeGreaterThanOrEqual(500);
    expect(((await failed.json()) as { errcode: string }).errcode).toBe("M_UNKNOWN");
    // The events were queued before the crash: they are handled even before the retry.
    await waitFor(() => recorder.events.length >= 50);
    const retry = await putTransaction(local.url, "crash", { events }, { token });
    expect(retry.status).toBe(200);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, events);
  });

  it("an application handler that throws → the event is retried and handled once; earlier events are not redone", async () => {
    const handled: ClientEvent[] = [];
    let failuresLeft = 1;
    const events = Array.from({ length: 5 }, (_, i) => makeEvent("!flaky:test.local", `m${i}`));
    const local = await start({
      // Redelivered after 2 s.
      visibilityTimeoutSeconds: 2,
      application: {
        onEvent(event) {
          if (event.event_id === events[2]?.event_id && failuresLeft-- > 0) {
            throw new Error("injected application failure");
          }
          handled.push(event);
        },
      },
    });
    const response = await putTransaction(
      local.url,
      "flaky",
      { events },
      { token: local.registration.hs_token },
    );
    expect(response.status).toBe(200);
    await waitFor(() => handled.length >= 5, 20_000, "all five after the redelivery");
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(handled.map((e) => e.event_id)).toEqual(events.map((e) => e.event_id));
    expect(failuresLeft).toBe(-1);
  });

  it("DynamoDB unreachable → 5xx; once it is back, the retry succeeds and each event is handled once", async () => {
    const proxy = await startTcpProxy(inject("dynamodbEndpoint"));
    cleanups.push(() => proxy.close());
    const recorder = recordingApplication();
    const local = await start({
      application: recorder.application,
      dynamodbEndpoint: proxy.endpoint,
      // The events' claims failed while DynamoDB was down: handed out again after 2 s.
      visibilityTimeoutSeconds: 2,
    });
    const events = fiftyEvents();
    const token = local.registration.hs_token;
    proxy.setDown(true);
    const failed = await putTransaction(local.url, "ddb-down", { events }, { token });
    expect(failed.status).toBe(503);
    expect(((await failed.json()) as { errcode: string }).errcode).toBe("M_UNKNOWN");
    proxy.setDown(false);
    const retry = await putTransaction(local.url, "ddb-down", { events }, { token });
    expect(retry.status).toBe(200);
    await waitFor(() => recorder.events.length >= 50, 30_000);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, events);
  });

  it("SQS unreachable → 5xx, though the txnId is recorded at once; once SQS is back, the retry enqueues again and each event is handled once", async () => {
    const sqsLocal = await startSqsLocal();
    cleanups.push(() => sqsLocal.stop());
    const proxy = await startTcpProxy(sqsLocal.endpoint);
    cleanups.push(() => proxy.close());
    const recorder = recordingApplication();
    const local = await start({ application: recorder.application, sqsEndpoint: proxy.endpoint });
    const events = fiftyEvents();
    const token = local.registration.hs_token;
    proxy.setDown(true);
    const failed = await putTransaction(local.url, "sqs-down", { events }, { token });
    expect(failed.status).toBe(503);
    proxy.setDown(false);
    // The record was written beside the failed enqueue: the retry counts as a duplicate, and
    // still enqueues (had the record gated the enqueue, the events would be lost).
    const retry = await putTransaction(local.url, "sqs-down", { events }, { token });
    expect(retry.status).toBe(200);
    expect(local.metrics.counts.get("TransactionsDuplicate")).toBe(1);
    expect(local.metrics.counts.get("TransactionsAccepted")).toBeUndefined();
    await waitFor(() => recorder.events.length >= 50, 30_000);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expectEachOnce(recorder.events, events);
  });

  it("passes ephemeral, to-device and device data on, under their stable or unstable names", async () => {
    const seen: { kind: string; value: unknown }[] = [];
    const local = await start({
      application: {
        onEphemeral: (event) => void seen.push({ kind: "ephemeral", value: event }),
        onToDevice: (message) => void seen.push({ kind: "to_device", value: message }),
        onDeviceData: (data) => void seen.push({ kind: "devices", value: data }),
      },
    });
    const typing = {
      type: "m.typing",
      room_id: "!r:test.local",
      content: { user_ids: ["@a:test.local"] },
    };
    const toDevice = {
      type: "m.room_key_request",
      sender: "@a:test.local",
      to_user_id: "@_as_bot:test.local",
      to_device_id: "DEV",
      content: {},
    };
    const response = await putTransaction(
      local.url,
      "ephemeral",
      {
        events: [],
        "de.sorunome.msc2409.ephemeral": [typing],
        "de.sorunome.msc2409.to_device": [toDevice],
        "org.matrix.msc3202.device_lists": { changed: ["@a:test.local"], left: [] },
        "org.matrix.msc3202.device_one_time_keys_count": {
          "@_as_bot:test.local": { DEV: { signed_curve25519: 5 } },
        },
        device_unused_fallback_key_types: { "@_as_bot:test.local": { DEV: ["signed_curve25519"] } },
      },
      { token: local.registration.hs_token },
    );
    expect(response.status).toBe(200);
    await waitFor(() => seen.length >= 3);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(seen).toHaveLength(3);
    expect(seen).toContainEqual({ kind: "ephemeral", value: typing });
    expect(seen).toContainEqual({ kind: "to_device", value: toDevice });
    expect(seen).toContainEqual({
      kind: "devices",
      value: {
        deviceLists: { changed: ["@a:test.local"], left: [] },
        oneTimeKeysCount: { "@_as_bot:test.local": { DEV: { signed_curve25519: 5 } } },
        unusedFallbackKeyTypes: { "@_as_bot:test.local": { DEV: ["signed_curve25519"] } },
      },
    });
  });

  it("groups inbound messages by room in the FIFO queue", async () => {
    // No pollers would race us for the messages: a queue nobody consumes.
    const local = await start({ pollers: 0 });
    const events = fiftyEvents();
    await putTransaction(local.url, "grouping", { events }, { token: local.registration.hs_token });
    const sqs = localSqs(local.sqsEndpoint);
    cleanups.push(async () => sqs.destroy());
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: local.inboundQueueUrl,
        MaxNumberOfMessages: 10,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    const groups = Messages.map((m) => m.Attributes?.MessageGroupId).sort();
    expect(groups).toEqual(Array.from({ length: 5 }, (_, i) => `!room${i}:test.local`));
    for (const message of Messages) {
      expect(message.Attributes?.MessageDeduplicationId).toMatch(/^[0-9a-f]{64}$/);
      const body = JSON.parse(message.Body as string) as { items: { event: ClientEvent }[] };
      expect(body.items).toHaveLength(10);
    }
  });
});
