import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { webhookRoute } from "../../functions/applications/webhooks/webhooks/post.ts";
import {
  takeToken,
  WEBHOOK_RATE,
} from "../../functions/applications/webhooks/webhooks/rate-limit.ts";
import { createWebhook, webhookKey } from "../../functions/applications/webhooks/webhooks/store.ts";
import { serviceContext } from "../../functions/appservice/service-context.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import type { OutboundAction } from "../../functions/matrix/request.ts";
import { APP_DATA_KEY_PREFIX, DynamoDbAppData } from "../../functions/store/dynamodb/app-data.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { countingStore, noServices } from "../support/appservice.ts";

describe("the per-webhook token bucket, in the app's data (DynamoDB Local)", () => {
  const endpoint = inject("dynamodbEndpoint");
  // Two clients: two Lambda instances sharing the table.
  const clients = [localDynamoDb(endpoint), localDynamoDb(endpoint)];
  const tableName = `rate-${randomUUID().slice(0, 8)}`;
  const [first, second] = clients.map((client) => new DynamoDbAppData(client, tableName)) as [
    DynamoDbAppData,
    DynamoDbAppData,
  ];
  beforeAll(() => ensureTable(clients[0] as (typeof clients)[0], tableName));
  afterAll(() => {
    for (const client of clients) client.destroy();
  });

  it("ifEquals writes only over the value read", async () => {
    await first.write([{ collection: "c", key: "k", value: { n: 1 } }]);
    const read = await first.get("c", "k");
    expect(
      await second.write([{ collection: "c", key: "k", value: { n: 2 }, ifEquals: read }]),
    ).toBe(true);
    // The value has moved on: the same compare-and-set is refused, and changes nothing.
    expect(
      await first.write([{ collection: "c", key: "k", value: { n: 3 }, ifEquals: read }]),
    ).toBe(false);
    expect(await first.get("c", "k")).toEqual({ n: 2 });
  });

  it("an entry past its expiresAt is gone for get and list, and a write ifAbsent takes its place", async () => {
    let now = 5_000_000;
    const data = new DynamoDbAppData(
      clients[0] as (typeof clients)[0],
      tableName,
      APP_DATA_KEY_PREFIX,
      () => now,
    );
    const collection = `ttl-${randomUUID()}`;
    await data.write([{ collection, key: "k", value: { n: 1 }, expiresAt: now + 60_000 }]);
    expect(await data.get(collection, "k")).toEqual({ n: 1 });
    expect(await data.write([{ collection, key: "k", value: { n: 2 }, ifAbsent: true }])).toBe(
      false,
    );
    now += 60_000;
    expect(await data.get(collection, "k")).toBeUndefined();
    expect(await data.list(collection)).toEqual([]);
    expect(await data.write([{ collection, key: "k", value: { n: 3 }, ifAbsent: true }])).toBe(
      true,
    );
    expect(await data.get(collection, "k")).toEqual({ n: 3 });
  });

  it("1 a second, 20 at once: the 21st waits its second, and a token comes back each second", async () => {
    let now = 1_000_000;
    const clock = () => now;
    const key = randomUUID();
    for (let i = 0; i < WEBHOOK_RATE.burst; i++) {
      expect(await takeToken(first, key, WEBHOOK_RATE, clock), `token ${i}`).toBeUndefined();
    }
    expect(await takeToken(first, key, WEBHOOK_RATE, clock)).toBe(1000);
    now += 400;
    expect(await takeToken(second, key, WEBHOOK_RATE, clock)).toBe(600);
    now += 600;
    expect(await takeToken(second, key, WEBHOOK_RATE, clock)).toBeUndefined();
    expect(await takeToken(first, key, WEBHOOK_RATE, clock)).toBe(1000);
    // Another webhook's bucket is its own.
    expect(await takeToken(first, randomUUID(), WEBHOOK_RATE, clock)).toBeUndefined();
    // A long pause fills the bucket to its burst, no further.
    now += 3_600_000;
    const granted = [];
    for (let i = 0; i < 25; i++) granted.push(await takeToken(first, key, WEBHOOK_RATE, clock));
    expect(granted.filter((wait) => wait === undefined)).toHaveLength(WEBHOOK_RATE.burst);
  });

  it("40 concurrent requests from two instances: exactly the burst is granted, never more", async () => {
    const clock = () => 5_000_000;
    const key = randomUUID();
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        takeToken(i % 2 ? first : second, key, WEBHOOK_RATE, clock),
      ),
    );
    expect(outcomes.filter((wait) => wait === undefined)).toHaveLength(WEBHOOK_RATE.burst);
    expect(outcomes.filter((wait) => wait === 1000)).toHaveLength(40 - WEBHOOK_RATE.burst);
  });

  it("a webhook POST sets its user's name once; refused (429), it writes nothing, queues nothing and calls no homeserver", async () => {
    const id = randomUUID();
    const roomId = "!hooks:test.local";
    await createWebhook(first, id, {
      roomId,
      name: "ci",
      createdAt: 0,
      createdBy: "@mod:test.local",
      commandEventId: `$${id}`,
    });
    const { store, writes } = countingStore(first);
    const queued: OutboundAction[] = [];
    // No homeserver: `noServices` throws at any call to it.
    const services = {
      ...noServices,
      data: store,
      outboundQueue: {
        send: async (messages: { body: string }[]) =>
          void queued.push(...messages.map((m) => JSON.parse(m.body) as OutboundAction)),
      },
    };
    const post = (text: string) => {
      const body = JSON.stringify({ text });
      return webhookRoute.handle(
        {
          method: "POST",
          pathParameters: { id },
          query: {},
          headers: { "content-type": "application/json" },
          body,
          bytes: Buffer.from(body),
        },
        serviceContext(services, `REQUEST#${randomUUID()}`),
      );
    };
    expect((await post("one")).status).toBe(202);
    // The name read is the name set: the second message does not set it again.
    expect((await post("two")).status).toBe(202);
    expect(queued.map((a) => a.kind)).toEqual(["state", "send", "send"]);
    // Its bucket emptied at a later time: the next request finds no token.
    const later = () => Date.now() + 3_600_000;
    while ((await takeToken(first, webhookKey(id), WEBHOOK_RATE, later)) === undefined);
    writes.length = 0;
    const refused = await post("three");
    expect(refused.status).toBe(429);
    expect(refused.body).toMatchObject({ errcode: "M_LIMIT_EXCEEDED" });
    expect(writes).toEqual([]);
    expect(queued).toHaveLength(3);
  });
});
