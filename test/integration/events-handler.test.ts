import { randomUUID } from "node:crypto";
import type { Context, SQSEvent, SQSRecord } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { InboundMessage } from "../../functions/appservice/pipeline/inbound.ts";
import { createEventsHandler } from "../../functions/handlers/events.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { CountingMetrics } from "../../functions/shared/metrics.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { makeEvent, noServices } from "../support/appservice.ts";

const record = (groupId: string, message: InboundMessage): SQSRecord => ({
  messageId: randomUUID(),
  receiptHandle: randomUUID(),
  body: JSON.stringify(message),
  attributes: {
    ApproximateReceiveCount: "1",
    SentTimestamp: String(Date.now()),
    SenderId: "local",
    ApproximateFirstReceiveTimestamp: String(Date.now()),
    MessageGroupId: groupId,
    MessageDeduplicationId: randomUUID(),
    SequenceNumber: "1",
  },
  messageAttributes: {},
  md5OfBody: "",
  eventSource: "aws:sqs",
  eventSourceARN: "arn:aws:sqs:us-east-1:000000000000:appservice-inbound.fifo",
  awsRegion: "us-east-1",
});

const eventMessage = (roomId: string, body: string) => {
  const event = makeEvent(roomId, body);
  return {
    event,
    message: { txnId: "1", items: [{ kind: "event" as const, id: event.event_id, event }] },
  };
};

describe("events handler (the inbound queue's consumer)", () => {
  const dynamodb = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `events-${randomUUID().slice(0, 8)}`;
  beforeAll(() => ensureTable(dynamodb, tableName));
  afterAll(() => dynamodb.destroy());

  it("fails the rest of a failed message's group in the batch, and lets other groups through", async () => {
    const a1 = eventMessage("!a:test.local", "a1 fails");
    const a2 = eventMessage("!a:test.local", "a2 must wait for a1");
    const b1 = eventMessage("!b:test.local", "b1 is unaffected");
    const handled: string[] = [];
    const metrics = new CountingMetrics();
    const handler = createEventsHandler({
      ...noServices,
      claims: new DynamoDbStore(dynamodb, tableName),
      leaseMs: 60_000,
      metrics,
      application: {
        onEvent(event) {
          if (event.event_id === a1.event.event_id) throw new Error("injected failure");
          handled.push(event.event_id);
        },
      },
    });
    const records = [
      record("!a:test.local", a1.message),
      record("!a:test.local", a2.message),
      record("!b:test.local", b1.message),
    ];
    const event: SQSEvent = { Records: records };
    const response = await handler(event, {} as Context);
    expect(response.batchItemFailures.map((f) => f.itemIdentifier)).toEqual([
      records[0]?.messageId,
      records[1]?.messageId,
    ]);
    expect(handled).toEqual([b1.event.event_id]);
    expect(metrics.counts.get("ItemsHandled")).toBe(1);
  });
});
