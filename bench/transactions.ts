// `npm run bench`: transaction ack latency and throughput of the local mode, beside the
// reference `matrix-appservice` package (in-memory dedupe, no durability) and beside the floor:
// one bare SendMessageBatch of the same messages to the same local queue.
import { randomUUID } from "node:crypto";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SendMessageBatchCommand } from "@aws-sdk/client-sqs";
import { AppService } from "matrix-appservice";
import { inboundMessages } from "../functions/appservice/inbound.ts";
import type { Log } from "../functions/appservice/log.ts";
import type { ClientEvent } from "../functions/appservice/transaction.ts";
import { localSqs } from "../functions/local/aws-clients.ts";
import { freePort } from "../functions/local/free-port.ts";
import { startLocal } from "../functions/local/local.ts";

const quiet: Log = { debug() {}, info() {}, warn() {}, error: (m, ...a) => console.error(m, ...a) };

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;

interface Result {
  p50: number;
  p99: number;
  perSecond: number;
}

/** Runs `count` operations, `concurrency` at a time, timing each. */
async function measure(
  count: number,
  concurrency: number,
  operation: (i: number) => Promise<void>,
): Promise<Result> {
  const latencies: number[] = [];
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const t0 = performance.now();
        await operation(i);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    perSecond: count / seconds,
  };
}

let sequence = 0;
const makeEvents = (n: number): ClientEvent[] =>
  Array.from({ length: n }, (_, i) => ({
    event_id: `$bench${++sequence}-${randomUUID()}`,
    room_id: `!room${i % 5}:bench.local`,
    type: "m.room.message",
    sender: "@alice:bench.local",
    origin_server_ts: Date.now(),
    content: { msgtype: "m.text", body: `benchmark message ${sequence}` },
  }));

async function put(url: string, token: string, txnId: string, events: ClientEvent[]) {
  const response = await fetch(`${url}/_matrix/app/v1/transactions/${txnId}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ events }),
  });
  if (response.status !== 200)
    throw new Error(`${url}: ${response.status} ${await response.text()}`);
  await response.arrayBuffer();
}

const dir = await mkdtemp(join(tmpdir(), "appservice-bench-"));
let handled = 0;
const local = await startLocal({
  port: 0,
  registrationPath: join(dir, "registration.yaml"),
  homeserverUrl: "http://127.0.0.1:1",
  serverName: "bench.local",
  log: quiet,
  application: {
    onEvent() {
      handled++;
    },
  },
});
const token = local.registration.hs_token;

const reference = new AppService({ homeserverToken: token });
let referenceEvents = 0;
reference.on("event", () => void referenceEvents++);
const referencePort = await freePort();
await reference.listen(referencePort, "127.0.0.1", 511);
const referenceUrl = `http://127.0.0.1:${referencePort}`;

const sqs = localSqs(local.sqsEndpoint);
const floorSend = async (events: ClientEvent[]) => {
  const messages = inboundMessages(randomUUID(), { events, ephemeral: [], toDevice: [] });
  await sqs.send(
    new SendMessageBatchCommand({
      QueueUrl: local.inboundQueueUrl,
      Entries: messages.map((m, i) => ({
        Id: String(i),
        MessageBody: m.body,
        MessageGroupId: m.groupId,
        MessageDeduplicationId: m.deduplicationId,
      })),
    }),
  );
};

// Events sent to the inbound queue, by us or by the floor (our consumer handles both).
let queuedEvents = 0;
const count = (concurrency: number, events: number) =>
  (events === 1 ? 600 : 200) * (concurrency === 1 ? 1 : 2);
const targets = {
  ours: async (events: ClientEvent[]) => {
    await put(local.url, token, randomUUID(), events);
    queuedEvents += events.length;
  },
  "matrix-appservice": (events: ClientEvent[]) => put(referenceUrl, token, randomUUID(), events),
  floor: async (events: ClientEvent[]) => {
    await floorSend(events);
    queuedEvents += events.length;
  },
};

// Warm up every path (JIT, connections, DynamoDB Local's first writes).
for (const send of Object.values(targets)) await measure(100, 4, () => send(makeEvents(5)));

const format = (r: Result) =>
  `p50 ${r.p50.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(6)} ms  ${r.perSecond.toFixed(0).padStart(5)} txn/s`;
console.log("Transaction ack (PUT /_matrix/app/v1/transactions), local mode on this machine\n");
for (const concurrency of [1, 16]) {
  for (const events of [1, 50]) {
    const n = count(concurrency, events);
    const results: Record<string, Result> = {};
    for (const [name, send] of Object.entries(targets)) {
      // Each run builds its events up front so that only the send is timed.
      const batches = Array.from({ length: n }, () => makeEvents(events));
      results[name] = await measure(n, concurrency, (i) => send(batches[i] as ClientEvent[]));
    }
    const ours = results.ours as Result;
    const ref = results["matrix-appservice"] as Result;
    const floor = results.floor as Result;
    console.log(`concurrency ${concurrency}, ${events} event(s)/txn, ${n} txns`);
    for (const [name, r] of Object.entries(results))
      console.log(`  ${name.padEnd(18)} ${format(r)}`);
    const line =
      `  ratios: ours/floor p50 ${(ours.p50 / floor.p50).toFixed(2)}x (target <= 2.2x), ` +
      `ours/matrix-appservice p50 ${(ours.p50 / ref.p50).toFixed(2)}x, ` +
      `throughput ours/matrix-appservice ${(ours.perSecond / ref.perSecond).toFixed(2)}x`;
    console.log(line);
  }
}

// Every queued event must reach the application, once.
const deadline = Date.now() + 120_000;
while (handled < queuedEvents && Date.now() < deadline)
  await new Promise((r) => setTimeout(r, 100));
await new Promise((r) => setTimeout(r, 1000));
console.log(
  `\nevents queued: ${queuedEvents}; handled by our application: ${handled} ` +
    `(duplicates ${Math.max(0, handled - queuedEvents)}, lost ${Math.max(0, queuedEvents - handled)}); ` +
    `matrix-appservice emitted ${referenceEvents}`,
);

sqs.destroy();
await reference.close();
await local.stop();
process.exit(0);
