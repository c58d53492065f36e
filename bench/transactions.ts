// `npm run bench`: transaction ack latency and throughput of the local mode (`npm start`, in a
// process of its own), beside the reference `matrix-appservice` server (in-memory dedupe, no
// durability) and beside the floor: one bare SendMessageBatch of the same messages to the same
// local queue. The load generator runs in this process.
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ScanCommand } from "@aws-sdk/client-dynamodb";
import {
  GetQueueAttributesCommand,
  GetQueueUrlCommand,
  SendMessageBatchCommand,
} from "@aws-sdk/client-sqs";
import { parse } from "yaml";
import { inboundMessages } from "../functions/appservice/inbound.ts";
import type { ClientEvent } from "../functions/appservice/transaction.ts";
import { localDynamoDb, localSqs } from "../functions/local/aws-clients.ts";
import { freePort } from "../functions/local/free-port.ts";

const root = join(import.meta.dirname, "..");

/** Starts a server process and resolves with its output once it says it is listening. */
async function startServer(script: string, env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", script], {
    cwd: root,
    env: { ...process.env, POWERTOOLS_LOG_LEVEL: "WARN", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  await new Promise<void>((resolve, reject) => {
    child.once("exit", () => reject(new Error(`${script} exited: ${output}`)));
    const timer = setInterval(() => {
      if (output.includes("listening on")) {
        clearInterval(timer);
        resolve();
      }
    }, 50);
  });
  return { child, output: () => output };
}

const stopServer = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.removeAllListeners("exit");
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });

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
const registrationPath = join(dir, "registration.yaml");
const ours = await startServer("functions/local/main.ts", {
  PORT: String(await freePort()),
  REGISTRATION: registrationPath,
  SERVER_NAME: "bench.local",
});
const endpoint = (label: string) =>
  new RegExp(`${label}:? (http://127\\.0\\.0\\.1:\\d+)`).exec(ours.output())?.[1] as string;
const oursUrl = endpoint("listening on");
const token = (parse(await readFile(registrationPath, "utf8")) as { hs_token: string }).hs_token;

const referencePort = await freePort();
const reference = await startServer("bench/reference-appservice.ts", {
  PORT: String(referencePort),
  HS_TOKEN: token,
});
const referenceUrl = `http://127.0.0.1:${referencePort}`;

const sqs = localSqs(endpoint("SQS \\(fauxqs\\)"));
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
const drainStart = performance.now();
for (;;) {
  const { Attributes = {} } = await sqs.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    }),
  );
  const left =
    Number(Attributes.ApproximateNumberOfMessages) +
    Number(Attributes.ApproximateNumberOfMessagesNotVisible);
  if (left === 0 || performance.now() - drainStart > 600_000) break;
  await new Promise((resolve) => setTimeout(resolve, 500));
}
const drainSeconds = (performance.now() - drainStart) / 1000;
const dynamodb = localDynamoDb(endpoint("DynamoDB Local"));
let done = 0;
let startKey: Record<string, never> | undefined;
do {
  const page = await dynamodb.send(
    new ScanCommand({
      TableName: "appservice",
      Select: "COUNT",
      FilterExpression: "begins_with(pk, :event) AND #status = :done",
      ExpressionAttributeNames: { "#status": "status" },
      ExpressionAttributeValues: { ":event": { S: "EVENT#" }, ":done": { S: "DONE" } },
      ...(startKey && { ExclusiveStartKey: startKey }),
    }),
  );
  done += page.Count ?? 0;
  startKey = page.LastEvaluatedKey as typeof startKey;
} while (startKey);
console.log(
  `\nEvents queued ${queuedEvents}, handled (marked done) ${done}, missing ${queuedEvents - done}; ` +
    `the consumer drained its backlog ${drainSeconds.toFixed(1)} s after the load ended`,
);

sqs.destroy();
dynamodb.destroy();
await Promise.all([stopServer(ours.child), stopServer(reference.child)]);
