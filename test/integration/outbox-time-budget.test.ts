import { randomUUID } from "node:crypto";
import { type Message, ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import type { Context, SQSEvent } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { createOutboxHandler } from "../../functions/handlers/outbox.ts";
import { localDynamoDb, localSqs } from "../../functions/local/aws-clients.ts";
import { ensureFifoQueue } from "../../functions/local/queues.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import { createActions } from "../../functions/matrix/actions.ts";
import { BotProfileKeeper, botProfile } from "../../functions/matrix/bot-profile.ts";
import { HttpHomeserverClient } from "../../functions/matrix/http-client.ts";
import { MAX_CALLS_PER_ACTION, performAction } from "../../functions/matrix/outbox.ts";
import type { OutboundAction } from "../../functions/matrix/request.ts";
import type { OutboundDeps } from "../../functions/outbox/decide.ts";
import { SqsMessageControl } from "../../functions/queue/sqs/message-control.ts";
import { SqsFifoQueue } from "../../functions/queue/sqs/queue.ts";
import { addressPolicy } from "../../functions/remote/address-policy.ts";
import { HttpRemoteClient } from "../../functions/remote/remote-http.ts";
import type { BackoffPolicy } from "../../functions/shared/backoff.ts";
import { CountingMetrics } from "../../functions/shared/metrics.ts";
import { DynamoDbIntentMemory } from "../../functions/store/dynamodb/intent-memory.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import {
  actionBudgetMs,
  HOMESERVER_TIMEOUT_MS,
  OUTBOX_TIMEOUT_MS,
} from "../../functions/wiring/timeouts.ts";
import { noServices } from "../support/appservice.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

const SERVER = "test.local";
const bot = `@bot:${SERVER}`;

describe("the outbox within its time", () => {
  const dynamodb = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `outbox-time-${randomUUID().slice(0, 8)}`;
  const store = new DynamoDbStore(dynamodb, tableName);
  const memory = new DynamoDbIntentMemory(dynamodb, tableName);
  let sqsLocal: Awaited<ReturnType<typeof startSqsLocal>>;
  let sqs: ReturnType<typeof localSqs>;
  const homeserver = new ScriptedHomeserver("as-token", SERVER, bot);

  beforeAll(async () => {
    sqsLocal = await startSqsLocal();
    sqs = localSqs(sqsLocal.endpoint);
    await Promise.all([ensureTable(dynamodb, tableName), homeserver.start()]);
  });
  afterAll(async () => {
    await homeserver.stop();
    sqs.destroy();
    dynamodb.destroy();
    await sqsLocal.stop();
  });

  /** The outbox's dependencies against the scripted homeserver and DynamoDB Local. */
  const outboxDeps = (timeoutMs: number, backoff: BackoffPolicy): OutboundDeps => ({
    homeserver: new HttpHomeserverClient(homeserver.url, "as-token", bot, timeoutMs),
    remote: new HttpRemoteClient({ policy: addressPolicy() }),
    intentMemory: memory,
    serverErrors: store,
    sentEvents: store,
    // Its sends name no remote message.
    messages: { linkMessage: () => Promise.reject(new Error("no message link expected")) },
    botUserId: bot,
    isOurUser: (userId) => userId.startsWith("@_as_"),
    backoff,
    log: noServices.log,
    deliveryOutcomes: noServices.deliveryOutcomes,
    botProfile: new BotProfileKeeper(bot, botProfile("Bot"), memory, noServices.log),
    // As the stack wires it: every call of an action within the action's budget.
    actionBudget: { callTimeoutMs: timeoutMs, budgetMs: actionBudgetMs(timeoutMs) },
  });

  it("an action's worst path makes MAX_CALLS_PER_ACTION calls, which the function's timeout covers twice", async () => {
    const ghost = `@_as_ghost${randomUUID().slice(0, 8)}:${SERVER}`;
    const room = `!invite-only-${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.createRoom(room, [bot], { inviteOnly: true });
    // Registered by an earlier life whose memory is gone (M_USER_IN_USE): a user registered just
    // now would be invited and joined first, in fewer calls.
    homeserver.registered.add(ghost);
    const queued: OutboundAction[] = [];
    const actions = createActions({
      botUserId: bot,
      outboundQueue: {
        send: async (messages) => void queued.push(...messages.map((m) => JSON.parse(m.body))),
      },
      origin: "worst-path",
    });
    await actions.sendMessage(room, "as a user not remembered, in an invite-only room", {
      as: ghost,
    });
    const before = homeserver.requests.length;
    const outcome = await performAction(
      queued[0] as OutboundAction,
      0,
      outboxDeps(HOMESERVER_TIMEOUT_MS, { baseSeconds: 1, capSeconds: 1 }),
    );
    expect(outcome).toEqual({ kind: "done", status: 200 });
    // The send, register (in use), the send, invite, join, the send.
    expect(homeserver.requests.length - before).toBe(MAX_CALLS_PER_ACTION);
    expect(actionBudgetMs(HOMESERVER_TIMEOUT_MS)).toBe(MAX_CALLS_PER_ACTION * 20_000 + 5_000);
    expect(OUTBOX_TIMEOUT_MS).toBeGreaterThanOrEqual(2 * actionBudgetMs(HOMESERVER_TIMEOUT_MS));
  });

  it("stops taking messages when the time left cannot cover one more action: those not run come back at once, and none that completed runs again", async () => {
    const rooms = ["w", "x", "y", "z"].map((r) => `!${r}-${randomUUID().slice(0, 8)}:${SERVER}`);
    for (const room of rooms) homeserver.createRoom(room, [bot]);
    const [w, x, y, z] = rooms as [string, string, string, string];
    const queue = await ensureFifoQueue(sqs, `outbox-${randomUUID().slice(0, 8)}`, {
      visibilityTimeoutSeconds: 600,
      maxReceiveCount: 1000,
    });
    const actions = createActions({
      botUserId: bot,
      outboundQueue: new SqsFifoQueue(sqs, queue.url),
      origin: "time-budget",
    });
    for (const room of rooms) await actions.sendMessage(room, `to ${room}`);
    const receivedAt = Date.now();
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queue.url,
        MaxNumberOfMessages: 10,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    const roomOf = (m: Message) => (JSON.parse(m.Body as string) as OutboundAction).roomId;
    expect(Messages.map(roomOf)).toEqual(rooms);
    const event: SQSEvent = {
      Records: Messages.map((m) => ({
        messageId: m.MessageId as string,
        receiptHandle: m.ReceiptHandle as string,
        body: m.Body as string,
        attributes: m.Attributes as unknown as SQSEvent["Records"][number]["attributes"],
        messageAttributes: {},
        md5OfBody: m.MD5OfBody as string,
        eventSource: "aws:sqs",
        eventSourceARN: queue.arn,
        awsRegion: "us-east-1",
      })),
    };
    const messageIn = (room: string) => Messages.find((m) => roomOf(m) === room)?.MessageId;

    // x's send hangs: the call takes the whole timeout, and then the time left is short of one
    // more action's budget.
    const timeoutMs = 3_000;
    const budgetMs = actionBudgetMs(timeoutMs);
    homeserver.cue((r) => r.path.includes(encodeURIComponent(x)), { hang: true });
    const deadline = Date.now() + budgetMs + timeoutMs / 2;
    const context = { getRemainingTimeInMillis: () => deadline - Date.now() } as Context;
    const handler = createOutboxHandler({
      ...outboxDeps(timeoutMs, { baseSeconds: 300, capSeconds: 300 }),
      metrics: new CountingMetrics(),
      control: new SqsMessageControl(sqs, queue.url, queue.deadLetterUrl),
      recordBudgetMs: budgetMs,
    });
    const response = await handler(event, context);

    expect(response.batchItemFailures.map((f) => f.itemIdentifier)).toEqual(
      [x, y, z].map(messageIn),
    );
    // w was performed (and is deleted by the event source); y and z were never started.
    const sentTo = homeserver.requests.map((r) =>
      rooms.find((room) => r.path.includes(encodeURIComponent(room))),
    );
    expect(sentTo.filter((room) => room && room !== x)).toEqual([w]);
    const { messages } = (await (
      await fetch(`${sqsLocal.endpoint}/_fauxqs/queues/${queue.url.split("/").pop()}`)
    ).json()) as {
      messages: {
        ready: { messageId: string }[];
        inflight: { message: { messageId: string }; visibilityDeadline: number }[];
      };
    };
    // y and z visible again at once; x after its backoff (at most 300 s, where the queue's
    // visibility timeout is 600 s); w in flight until the event source deletes it.
    expect(messages.ready.map((m) => m.messageId).sort()).toEqual([y, z].map(messageIn).sort());
    const inflight = new Map(
      messages.inflight.map((m) => [m.message.messageId, m.visibilityDeadline]),
    );
    expect(inflight.get(messageIn(x) as string)).toBeLessThan(receivedAt + 400_000);
    expect(inflight.has(messageIn(w) as string)).toBe(true);
  });
});
