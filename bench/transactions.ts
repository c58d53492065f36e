// `npm run bench`: transaction ack latency and throughput of the local mode (`npm start`, in a
// process of its own), beside the reference `matrix-appservice` server (in-memory dedupe, no
// durability) and beside the floor: one bare SendMessageBatch of the same messages to the same
// local queue. The load generator runs in this process.
import { randomUUID } from "node:crypto";
import { GetQueueUrlCommand, SendMessageBatchCommand } from "@aws-sdk/client-sqs";
import { inboundMessages } from "../functions/appservice/pipeline/inbound.ts";
import type { ClientEvent } from "../functions/appservice/protocol/transaction.ts";
import { localDynamoDb, localSqs } from "../functions/local/aws-clients.ts";
import { freePort } from "../functions/local/free-port.ts";
import {
  countDoneEvents,
  makeEvents,
  measure,
  put,
  type Result,
  startLocalMode,
  startServer,
  stopServer,
  waitForDrain,
} from "./support.ts";

const ours = await startLocalMode();
const { endpoint, token } = ours;
const oursUrl = ours.url;

const referencePort = await freePort();
const reference = await startServer("bench/reference-appservice.ts", {
  PORT: String(referencePort),
  HS_TOKEN: token,
});
const referenceUrl = `http://127.0.0.1:${referencePort}`;

const sqs = localSqs(endpoint("SQS (fauxqs)"));
const { QueueUrl: queueUrl } = await sqs.send(
  new GetQueueUrlCommand({ QueueName: "appservice-inbound.fifo" }),
);
const floorSend = async (events: ClientEvent[]) => {
  const messages = inboundMessages(randomUUID(), { events, ephemeral: [], toDevice: [] });
  await sqs.send(
    new SendMessageBatchCommand({
      QueueUrl: queueUrl,
      Entries: messages.map((m, i) => ({
        Id: String(i),
        MessageBody: m.body,
        MessageGroupId: m.groupId,
        MessageDeduplicationId: m.deduplicationId,
      })),
    }),
  );
};

// Events put on the inbound queue, through us or by the floor: our consumer handles both.
let queuedEvents = 0;
const targets: Record<string, (events: ClientEvent[]) => Promise<void>> = {
  ours: async (events) => {
    await put(oursUrl, token, randomUUID(), events);
    queuedEvents += events.length;
  },
  "matrix-appservice": (events) => put(referenceUrl, token, randomUUID(), events),
  floor: async (events) => {
    await floorSend(events);
    queuedEvents += events.length;
  },
};

// Warm up every path (JIT, connections, DynamoDB Local's first writes).
for (const send of Object.values(targets)) await measure(200, 4, () => send(makeEvents(5)));

const format = (r: Result) =>
  `p50 ${r.p50.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(6)} ms  ${r.perSecond.toFixed(0).padStart(5)} txn/s`;
console.log("Transaction ack (PUT /_matrix/app/v1/transactions) on this machine\n");
for (const concurrency of [1, 16]) {
  for (const eventsPerTxn of [1, 50]) {
    const count = (eventsPerTxn === 1 ? 500 : 150) * (concurrency === 1 ? 1 : 2);
    const results: Record<string, Result> = {};
    for (const [name, send] of Object.entries(targets)) {
      // Events are built up front so that only the send is timed.
      const batches = Array.from({ length: count }, () => makeEvents(eventsPerTxn));
      results[name] = await measure(count, concurrency, (i) => send(batches[i] as ClientEvent[]));
    }
    const [o, ref, floor] = [results.ours, results["matrix-appservice"], results.floor] as [
      Result,
      Result,
      Result,
    ];
    console.log(`concurrency ${concurrency}, ${eventsPerTxn} event(s)/txn, ${count} txns`);
    for (const [name, r] of Object.entries(results))
      console.log(`  ${name.padEnd(18)} ${format(r)}`);
    console.log(
      `  ours/floor p50 ${(o.p50 / floor.p50).toFixed(2)}x (target <= 2.2x); ` +
        `ours/matrix-appservice p50 ${(o.p50 / ref.p50).toFixed(2)}x, ` +
        `throughput ${(o.perSecond / ref.perSecond).toFixed(2)}x`,
    );
  }
}

// Every queued event must be handled once: wait for the queue to drain, then count the
// events marked done in DynamoDB.
const drainSeconds = await waitForDrain(sqs, queueUrl as string, 600_000);
const dynamodb = localDynamoDb(endpoint("DynamoDB Local"));
const done = await countDoneEvents(dynamodb);
console.log(
  `\nEvents queued ${queuedEvents}, handled (marked done) ${done}, missing ${queuedEvents - done}; ` +
    `the consumer drained its backlog ${drainSeconds.toFixed(1)} s after the load ended`,
);

sqs.destroy();
dynamodb.destroy();
await Promise.all([stopServer(ours.child), stopServer(reference.child)]);
