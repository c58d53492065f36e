import { randomUUID } from "node:crypto";
import { PutItemCommand } from "@aws-sdk/client-dynamodb";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  INBOUND_RETRY,
  processInboundMessage,
} from "../../functions/appservice/pipeline/process-inbound.ts";
import { serviceContext } from "../../functions/appservice/service-context.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { DynamoDbStore, RETENTION_SECONDS } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { makeEvent, noServices } from "../support/appservice.ts";

describe("DynamoDbStore against DynamoDB Local", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `store-${randomUUID().slice(0, 8)}`;
  let clock = 1_000_000;
  const store = new DynamoDbStore(client, tableName, () => clock);

  beforeAll(() => ensureTable(client, tableName));
  afterAll(() => client.destroy());

  it("records a transaction once; the same txnId with another hash replaces it", async () => {
    expect(await store.recordTransaction("t1", { bodyHash: "a" })).toBe("recorded");
    expect(await store.recordTransaction("t1", { bodyHash: "a" })).toBe("duplicate");
    expect(await store.recordTransaction("t1", { bodyHash: "b" })).toBe("replaced");
    expect(await store.recordTransaction("t1", { bodyHash: "b" })).toBe("duplicate");
  });

  it("finds the last transaction recorded, records older than recordedAt included", async () => {
    const table = `store-last-${randomUUID().slice(0, 8)}`;
    await ensureTable(client, table);
    // Near the real time: DynamoDB Local deletes items whose TTL has passed.
    const start = Math.floor(Date.now() / 1000) * 1000;
    let now = start;
    const history = new DynamoDbStore(client, table, () => now);
    expect(await history.lastTransaction()).toBeUndefined();
    await history.recordTransaction("7", { bodyHash: "a" });
    now += 1500;
    await history.recordTransaction("8", { bodyHash: "b" });
    now += 1500;
    await history.recordTransaction("7", { bodyHash: "a" });
    expect(await history.lastTransaction()).toEqual({
      txnId: "8",
      recordedAt: new Date(start + 1500),
    });
    // A record of the earlier format: no recordedAt, only its expiry, 30 days on.
    await client.send(
      new PutItemCommand({
        TableName: table,
        Item: {
          pk: { S: "TXN#legacy" },
          sk: { S: "-" },
          bodyHash: { S: "c" },
          expiresAt: { N: String(start / 1000 + 10 + RETENTION_SECONDS) },
        },
      }),
    );
    expect(await history.lastTransaction()).toEqual({
      txnId: "legacy",
      recordedAt: new Date(start + 10_000),
    });
  });

  it("records a txnId longer than a partition key may be", async () => {
    const long = "x".repeat(10_000);
    expect(await store.recordTransaction(long, { bodyHash: "a" })).toBe("recorded");
    expect(await store.recordTransaction(long, { bodyHash: "a" })).toBe("duplicate");
  });

  it("claims a mix of new, done and leased keys in one call, each with its outcome", async () => {
    const [fresh, done, leased] = ["k-fresh", "k-done", "k-leased"].map(
      (k) => `${k}-${randomUUID()}`,
    ) as [string, string, string];
    await store.claim([done], "other", 60_000);
    await store.complete(done);
    await store.claim([leased], "other", 60_000);
    const outcomes = await store.claim([fresh, done, leased], "me", 60_000);
    expect(Object.fromEntries(outcomes)).toEqual({
      [fresh]: "claimed",
      [done]: "done",
      [leased]: "busy",
    });
  });

  it("lets a claim be taken over once its lease has run out, and only its owner release it", async () => {
    const key = `k-${randomUUID()}`;
    expect((await store.claim([key], "first", 5_000)).get(key)).toBe("claimed");
    await store.release(key, "someone-else");
    expect((await store.claim([key], "second", 5_000)).get(key)).toBe("busy");
    clock += 6_000;
    expect((await store.claim([key], "second", 5_000)).get(key)).toBe("taken over");
    await store.release(key, "second");
    expect((await store.claim([key], "third", 5_000)).get(key)).toBe("claimed");
  });

  it("counts an item's failed runs across claims; a failed item is claimable at once", async () => {
    const key = `k-${randomUUID()}`;
    expect((await store.claim([key], "first", 60_000)).get(key)).toBe("claimed");
    expect(await store.fail(key, "first", "Error: boom")).toBe(1);
    // No lease left to wait for.
    expect((await store.claim([key], "second", 60_000)).get(key)).toBe("claimed");
    // Only the lease's owner counts a failure.
    expect(await store.fail(key, "someone-else", "Error: not mine")).toBe(0);
    expect(await store.fail(key, "second", "Error: boom again")).toBe(2);
    // A plain release (an item not run) keeps the count.
    expect((await store.claim([key], "third", 60_000)).get(key)).toBe("claimed");
    await store.release(key, "third");
    expect((await store.claim([key], "fourth", 60_000)).get(key)).toBe("claimed");
    expect(await store.fail(key, "fourth", "Error: and again")).toBe(3);
    expect((await store.claim([key], "fifth", 60_000)).get(key)).toBe("claimed");
    await store.complete(key);
    expect((await store.claim([key], "sixth", 60_000)).get(key)).toBe("done");
  });

  it("counts the run that ended unanswered on a key taken over, for its new owner only, keeping the lease", async () => {
    const key = `k-${randomUUID()}`;
    expect((await store.claim([key], "first", 5_000)).get(key)).toBe("claimed");
    expect(await store.fail(key, "first", "Error: boom")).toBe(1);
    expect((await store.claim([key], "second", 5_000)).get(key)).toBe("claimed");
    // The second run dies: its lease runs out.
    clock += 6_000;
    expect((await store.claim([key], "third", 5_000)).get(key)).toBe("taken over");
    expect(await store.countAbandonedRun(key, "second")).toBe(0);
    expect(await store.countAbandonedRun(key, "third")).toBe(2);
    // Still the third's lease.
    expect((await store.claim([key], "fourth", 5_000)).get(key)).toBe("busy");
    expect(await store.fail(key, "third", "Error: boom")).toBe(3);
  });

  it("claims 230 keys in one call, each by its own conditional write", async () => {
    const keys = Array.from({ length: 230 }, (_, i) => `bulk-${i}-${randomUUID()}`);
    await store.claim([keys[150] as string], "earlier", 60_000);
    await store.complete(keys[150] as string);
    const outcomes = await store.claim(keys, "me", 60_000);
    expect(outcomes.size).toBe(230);
    expect([...outcomes.values()].filter((o) => o === "claimed")).toHaveLength(229);
    expect(outcomes.get(keys[150] as string)).toBe("done");
  });

  it("hands an event repeated within one message to the application once", async () => {
    const event = makeEvent("!r:test.local", "twice in one message");
    const handled: string[] = [];
    const outcome = await processInboundMessage(
      {
        txnId: "dup",
        items: [
          { kind: "event", id: event.event_id, event },
          { kind: "event", id: event.event_id, event },
        ],
      },
      { owner: "owner", groupId: "!r:test.local" },
      {
        claims: store,
        application: { onEvent: (e) => void handled.push(e.event_id) },
        log: noServices.log,
        leaseMs: 60_000,
        contextFor: (origin) => serviceContext(noServices, origin),
        setAsideItems: { get: () => Promise.reject(new Error("no reference expected")) },
        retry: INBOUND_RETRY,
        deadLetters: { deadLetter: () => Promise.reject(new Error("no dead letter expected")) },
      },
    );
    expect(handled).toEqual([event.event_id]);
    expect(outcome).toEqual({ handled: 1, duplicates: 1, deadLettered: 0 });
  });

  it("starts no item with less time left than its budget: the rest come back at once and run once, on the next run", async () => {
    const events = ["one", "two", "three"].map((body) => makeEvent("!t:test.local", body));
    const message = {
      txnId: "slow",
      items: events.map((event) => ({ kind: "event" as const, id: event.event_id, event })),
    };
    const handled: string[] = [];
    const deps = (leftMs: () => number) => ({
      claims: store,
      application: { onEvent: (e: { event_id: string }) => void handled.push(e.event_id) },
      log: noServices.log,
      leaseMs: 60_000,
      contextFor: (origin: string) => serviceContext(noServices, origin),
      setAsideItems: { get: () => Promise.reject(new Error("no reference expected")) },
      retry: INBOUND_RETRY,
      deadLetters: { deadLetter: () => Promise.reject(new Error("no dead letter expected")) },
      time: { leftMs, itemBudgetMs: 10_000 },
    });
    // The first item starts with 20 s left; it takes 15.
    const left = [20_000, 5_000];
    const spent = processInboundMessage(
      message,
      { owner: "first run", groupId: "!t:test.local" },
      deps(() => left.shift() ?? 5_000),
    );
    await expect(spent).rejects.toMatchObject({ name: "RetryLater", delaySeconds: 0 });
    expect(handled).toEqual([events[0]?.event_id]);

    // The next run (another owner) takes the rest at once: their claims were given up, not held.
    const outcome = await processInboundMessage(
      message,
      { owner: "next run", groupId: "!t:test.local" },
      deps(() => 30_000),
    );
    expect(outcome).toEqual({ handled: 2, duplicates: 1, deadLettered: 0 });
    expect(handled).toEqual(events.map((event) => event.event_id));
  });
});
