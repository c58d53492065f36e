import { randomUUID } from "node:crypto";
import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
} from "@aws-sdk/client-sqs";
import type { Context, SQSEvent, SQSRecord } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Application } from "../../functions/appservice/application.ts";
import { inboundMessages } from "../../functions/appservice/pipeline/inbound.ts";
import {
  INBOUND_MAX_RECEIVE_COUNT,
  type InboundRetryPolicy,
} from "../../functions/appservice/pipeline/process-inbound.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { createEventsHandler } from "../../functions/handlers/events.ts";
import { localDynamoDb, localSqs } from "../../functions/local/aws-clients.ts";
import { ensureFifoQueue } from "../../functions/local/queues.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import { SqsMessageControl } from "../../functions/queue/sqs/message-control.ts";
import { SqsFifoQueue } from "../../functions/queue/sqs/queue.ts";
import type { Log } from "../../functions/shared/log.ts";
import { CountingMetrics } from "../../functions/shared/metrics.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { EVENTS_RECORD_BUDGET_MS, EVENTS_TIMEOUT_MS } from "../../functions/wiring/timeouts.ts";
import { makeEvent, noServices, recordingLog } from "../support/appservice.ts";

/** What the handler was given in one invocation: each record's event IDs, group and receive count. */
const shapeOf = (event: SQSEvent) =>
  event.Records.map((record) => ({
    groupId: record.attributes.MessageGroupId,
    eventIds: (JSON.parse(record.body).items as { id: string }[]).map((item) => item.id),
    receiveCount: Number(record.attributes.ApproximateReceiveCount),
  }));

/**
 * fauxqs hands out one message of a group per receive; SQS hands out as many as it can, in order.
 * So each message goes to fauxqs under a group of its own (`<room>~<sequence>`), and the tests
 * give the handler the batch SQS would: the room's messages together, in order, the room as their
 * group, each with its real receipt handle and receive count. What the handler does to the queue
 * (visibility, dead letters) happens in fauxqs.
 */
describe("events handler (the inbound queue's consumer) on SQS's batch shape", () => {
  const dynamodb = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `events-${randomUUID().slice(0, 8)}`;
  let sqsLocal: Awaited<ReturnType<typeof startSqsLocal>>;
  let sqs: ReturnType<typeof localSqs>;

  beforeAll(async () => {
    sqsLocal = await startSqsLocal();
    sqs = localSqs(sqsLocal.endpoint);
    await ensureTable(dynamodb, tableName);
  });
  afterAll(async () => {
    sqs.destroy();
    dynamodb.destroy();
    await sqsLocal.stop();
  });

  type Queue = Awaited<ReturnType<typeof ensureFifoQueue>>;

  /** A fresh inbound queue with its dead-letter queue, configured as the stack configures it. */
  const inboundQueue = () =>
    ensureFifoQueue(sqs, `events-${randomUUID().slice(0, 8)}`, {
      visibilityTimeoutSeconds: 30,
      maxReceiveCount: INBOUND_MAX_RECEIVE_COUNT,
    });

  /** Each transaction as the transaction handler enqueues it (a message per room), in order. */
  async function enqueue(queue: Queue, transactions: ClientEvent[][]) {
    let sequence = 0;
    for (const events of transactions) {
      const { messages } = inboundMessages(randomUUID(), { events, ephemeral: [], toDevice: [] });
      for (const message of messages) {
        sequence++;
        await new SqsFifoQueue(sqs, queue.url).send([
          { ...message, groupId: `${message.groupId}~${String(sequence).padStart(4, "0")}` },
        ]);
      }
    }
  }

  /**
   * fauxqs's view of a queue: ready messages, and those in flight until their deadline (fauxqs
   * moves them back to ready at its next receive).
   */
  const inspect = async (queue: Queue) =>
    (await (
      await fetch(`${sqsLocal.endpoint}/_fauxqs/queues/${queue.url.split("/").pop()}`)
    ).json()) as {
      messages: {
        ready: { messageId: string }[];
        inflight: { message: { messageId: string }; visibilityDeadline: number }[];
      };
    };

  /** What SQS would hand the event source now: every ready message, each room's in order. */
  async function sqsBatch(queue: Queue): Promise<SQSEvent> {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queue.url,
        MaxNumberOfMessages: 10,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    const records = Messages.map((m: Message): SQSRecord & { sequence: string } => {
      const attributes = m.Attributes as Record<string, string>;
      const [room, sequence] = (attributes.MessageGroupId as string).split("~") as [string, string];
      return {
        messageId: m.MessageId as string,
        receiptHandle: m.ReceiptHandle as string,
        body: m.Body as string,
        attributes: {
          ...(attributes as unknown as SQSRecord["attributes"]),
          MessageGroupId: room,
        },
        messageAttributes: {},
        md5OfBody: m.MD5OfBody as string,
        eventSource: "aws:sqs",
        eventSourceARN: queue.arn,
        awsRegion: "us-east-1",
        sequence,
      };
    });
    records.sort((a, b) => a.sequence.localeCompare(b.sequence));
    return { Records: records.map(({ sequence: _, ...record }) => record) };
  }

  /** What Lambda's event source mapping then does: delete the messages that succeeded. */
  async function deleteSucceeded(queue: Queue, event: SQSEvent, failed: string[]) {
    const done = event.Records.filter((r) => !failed.includes(r.messageId));
    if (done.length === 0) return;
    await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queue.url,
        Entries: done.map((r, i) => ({ Id: String(i), ReceiptHandle: r.receiptHandle })),
      }),
    );
  }

  const handlerFor = (
    queue: Queue,
    application: Application,
    log: Log,
    retry: InboundRetryPolicy,
  ) =>
    createEventsHandler({
      ...noServices,
      setAsideItems: { get: () => Promise.reject(new Error("no reference expected")) },
      log,
      claims: new DynamoDbStore(dynamodb, tableName),
      leaseMs: 60_000,
      metrics: new CountingMetrics(),
      application,
      control: new SqsMessageControl(sqs, queue.url, queue.deadLetterUrl),
      retry,
      recordBudgetMs: EVENTS_RECORD_BUDGET_MS,
      intentMemory: { markLeft: () => Promise.reject(new Error("no membership expected")) },
    });

  const context = { getRemainingTimeInMillis: () => EVENTS_TIMEOUT_MS } as Context;
  const firstEventIds = (event: SQSEvent) => shapeOf(event).map((r) => r.eventIds[0]);

  it("a failing event holds back its room only: the messages behind it are visible again at once, the failed one after its backoff", async () => {
    const queue = await inboundQueue();
    const a1 = makeEvent("!a:test.local", "a1 fails");
    const a2 = makeEvent("!a:test.local", "a2 must wait for a1");
    const b1 = makeEvent("!b:test.local", "b1 is unaffected");
    await enqueue(queue, [[a1], [a2], [b1]]);
    const handled: string[] = [];
    const handler = handlerFor(
      queue,
      {
        onEvent(event) {
          if (event.event_id === a1.event_id) throw new Error("injected failure");
          handled.push(event.event_id);
        },
      },
      recordingLog().log,
      // The first retry waits far longer than this test: a1 stays in flight. Its wait is drawn
      // from 1 s to SQS's longest visibility, 12 h (full jitter): over the queue's 30 s visibility
      // timeout but once in about 1,400 runs.
      { backoff: { baseSeconds: 43_200, capSeconds: 43_200 }, maxAttempts: 5 },
    );
    const event = await sqsBatch(queue);
    expect(firstEventIds(event)).toEqual([a1.event_id, a2.event_id, b1.event_id]);
    const [a1Id, a2Id] = event.Records.map((r) => r.messageId);
    const response = await handler(event, context);
    expect(response.batchItemFailures.map((f) => f.itemIdentifier)).toEqual([a1Id, a2Id]);
    expect(handled).toEqual([b1.event_id]);
    // a2 visible again at once (SQS still holds it behind a1, its room's head); a1 in flight for
    // its backoff, not the visibility timeout.
    const { messages } = await inspect(queue);
    expect(messages.ready.map((m) => m.messageId)).toEqual([a2Id]);
    const a1Deadline = messages.inflight.find((m) => m.message.messageId === a1Id);
    expect(a1Deadline?.visibilityDeadline).toBeGreaterThan(Date.now() + 31_000);
  });

  it("an event that always fails is dead-lettered alone after its attempts; the events batched behind it, received as often, run once each, in order", async () => {
    const queue = await inboundQueue();
    const roomA = "!a:test.local";
    const poison = makeEvent(roomA, "always fails");
    const a2 = makeEvent(roomA, "a2");
    const a3 = makeEvent(roomA, "a3");
    const b1 = makeEvent("!b:test.local", "b1");
    // Three transactions, as a homeserver sends them: room a's events in three messages.
    await enqueue(queue, [[poison], [a2, b1], [a3]]);

    const handled: string[] = [];
    let poisonRuns = 0;
    const { log, lines } = recordingLog();
    const maxAttempts = 6;
    const handler = handlerFor(
      queue,
      {
        onEvent(event) {
          if (event.event_id === poison.event_id) {
            poisonRuns++;
            throw new Error("poison");
          }
          handled.push(event.event_id);
        },
      },
      log,
      { backoff: { baseSeconds: 1, capSeconds: 1 }, maxAttempts },
    );
    const batches: ReturnType<typeof shapeOf>[] = [];
    const deadline = Date.now() + 30_000;
    while (handled.length < 3) {
      expect(Date.now(), "the events behind the poison to run").toBeLessThan(deadline);
      // SQS hands out room a again once its head, the poison, is visible after its backoff.
      const { inflight } = (await inspect(queue)).messages;
      if (inflight.some((m) => m.visibilityDeadline > Date.now())) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      const event = await sqsBatch(queue);
      batches.push(shapeOf(event));
      const response = await handler(event, context);
      await deleteSucceeded(
        queue,
        event,
        response.batchItemFailures.map((f) => f.itemIdentifier),
      );
    }

    expect(handled).toEqual([b1.event_id, a2.event_id, a3.event_id]);
    expect(poisonRuns).toBe(maxAttempts);
    // Room a's three messages came together every time the poison came back: the innocent ones
    // were received as often as it was, past the 5 receives that used to dead-letter them.
    const roomA3 = batches.map((batch) => batch.filter((r) => r.groupId === roomA));
    expect(roomA3.map((b) => b.map((r) => r.eventIds[0]))).toEqual(
      Array.from({ length: maxAttempts }, () => [poison.event_id, a2.event_id, a3.event_id]),
    );
    expect(roomA3.at(-1)?.map((r) => r.receiveCount)).toEqual([6, 6, 6]);

    // One ERROR line per attempt, saying which event of which room, and nothing else at ERROR.
    const errors = lines.filter((line) => line.level === "error");
    expect(errors.map((line) => line.attributes.attempt)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const line of errors) {
      expect(line.attributes).toMatchObject({ kind: "event", id: poison.event_id, roomId: roomA });
    }
    expect(errors.at(-1)?.message).toMatch(/dead-letter/);

    // The poison alone, in an envelope with its reason.
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queue.deadLetterUrl, MaxNumberOfMessages: 10 }),
    );
    expect(Messages.map((m) => JSON.parse(m.Body as string))).toEqual([
      {
        txnId: expect.any(String),
        item: { kind: "event", id: poison.event_id, event: poison },
        reason: { error: "Error: poison" },
        attempts: maxAttempts,
        failedAt: expect.any(String),
      },
    ]);
    const { Attributes } = await sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: queue.url,
        AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
      }),
    );
    expect(Attributes).toEqual({
      ApproximateNumberOfMessages: "0",
      ApproximateNumberOfMessagesNotVisible: "0",
    });
  }, 60_000);
});
