// Part of `npm run bench`: the transaction ack (PUT /_matrix/app/v1/transactions) of the local
// mode (`npm start`, in a process of its own) against the floor measured in the same run, on the
// same DynamoDB Local and fauxqs: the I/O of a one-round-trip ack (the conditional PutItem of the
// txn record and the SendMessageBatch of the same messages, at once) and a bare SendMessageBatch;
// beside the reference `matrix-appservice` server (in-memory dedupe, no durability). The load
// generator runs in this process. Prints a table of the figures against issue 14's targets.
import { randomUUID } from "node:crypto";
import { GetQueueUrlCommand } from "@aws-sdk/client-sqs";
import { inboundMessages, transactionHash } from "../functions/appservice/pipeline/inbound.ts";
import {
  type ClientEvent,
  parseTransaction,
  type Transaction,
} from "../functions/appservice/protocol/transaction.ts";
import { jsonBody } from "../functions/handlers/http.ts";
import { localDynamoDb, localSqs } from "../functions/local/aws-clients.ts";
import { freePort } from "../functions/local/free-port.ts";
import type { FifoMessage } from "../functions/queue/queue.ts";
import { SqsFifoQueue } from "../functions/queue/sqs/queue.ts";
import { DynamoDbStore } from "../functions/store/dynamodb/store.ts";
import {
  countDoneEvents,
  makeEvents,
  measure,
  put,
  type Result,
  request,
  startLocalMode,
  startServer,
  stopServer,
  summarize,
  waitForDrain,
} from "./support.ts";

/** Each scenario runs in this many rounds, the targets taking turns, so that all share the load. */
const ROUNDS = 5;

const ours = await startLocalMode();
const { endpoint, token } = ours;
const referencePort = await freePort();
const reference = await startServer("bench/reference-appservice.ts", {
  PORT: String(referencePort),
  HS_TOKEN: token,
});
const referenceUrl = `http://127.0.0.1:${referencePort}`;

const sqs = localSqs(endpoint("SQS (fauxqs)"));
const dynamodb = localDynamoDb(endpoint("DynamoDB Local"));
const { QueueUrl: queueUrl } = await sqs.send(
  new GetQueueUrlCommand({ QueueName: "appservice-inbound.fifo" }),
);
// The appservice's own adapters: the requests the ack makes, and nothing else.
const inboundQueue = new SqsFifoQueue(sqs, queueUrl as string);
const transactions = new DynamoDbStore(dynamodb, "appservice");

/** A transaction with what the floor sends built up front, so that only I/O is timed. */
interface Prepared {
  txnId: string;
  events: ClientEvent[];
  messages: FifoMessage[];
  bodyHash: string;
}
const prepare = (eventsPerTxn: number): Prepared => {
  const txnId = randomUUID();
  const transaction: Transaction = {
    events: makeEvents(eventsPerTxn),
    ephemeral: [],
    toDevice: [],
  };
  return {
    txnId,
    events: transaction.events,
    messages: inboundMessages(txnId, transaction).messages,
    bodyHash: transactionHash(transaction),
  };
};

// What goes on the inbound queue, through us or by the floor: our consumer handles it all.
const targets = {
  ours: (t: Prepared) => put(ours.url, token, t.txnId, t.events),
  floor: async (t: Prepared) => {
    await Promise.all([
      inboundQueue.send(t.messages),
      transactions.recordTransaction(t.txnId, { bodyHash: t.bodyHash }),
    ]);
  },
  bare: (t: Prepared) => inboundQueue.send(t.messages),
  record: async (t: Prepared) => {
    await transactions.recordTransaction(t.txnId, { bodyHash: t.bodyHash });
  },
  "matrix-appservice": (t: Prepared) => put(referenceUrl, token, t.txnId, t.events),
};
type Target = keyof typeof targets;
const queuesEvents: Target[] = ["ours", "floor", "bare"];
let queuedEvents = 0;

/** `count` transactions per target at `concurrency`, in rounds, after a drained queue. */
async function scenario(concurrency: number, eventsPerTxn: number, count: number) {
  await waitForDrain(sqs, queueUrl as string, 600_000);
  const latencies = new Map<Target, number[]>();
  const seconds = new Map<Target, number>();
  const perRound = Math.ceil(count / ROUNDS);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, send] of Object.entries(targets) as [
      Target,
      (t: Prepared) => Promise<void>,
    ][]) {
      const batch = Array.from({ length: perRound }, () => prepare(eventsPerTxn));
      const result = await measure(perRound, concurrency, (i) => send(batch[i] as Prepared));
      latencies.set(name, [...(latencies.get(name) ?? []), ...result.latencies]);
      seconds.set(name, (seconds.get(name) ?? 0) + result.seconds);
      if (queuesEvents.includes(name)) queuedEvents += perRound * eventsPerTxn;
    }
  }
  const results = new Map<Target, Result>();
  for (const [name, all] of latencies)
    results.set(name, summarize(all, all.length, seconds.get(name) as number));
  console.log(
    `concurrency ${concurrency}, ${eventsPerTxn} event(s) per transaction, ${perRound * ROUNDS} transactions per target`,
  );
  for (const [name, r] of results)
    console.log(
      `  ${name.padEnd(18)} p50 ${r.p50.toFixed(2).padStart(6)} ms  p95 ${r.p95.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(6)} ms  ${r.perSecond.toFixed(0).padStart(5)} txn/s`,
    );
  return { concurrency, eventsPerTxn, results };
}

console.log("Transaction ack (PUT /_matrix/app/v1/transactions) on this machine\n");
// Warm-up: JIT, connections, DynamoDB Local's first writes.
await scenario(4, 5, 100);
console.log("(warm-up above)\n");
const scenarios = [
  await scenario(1, 1, 400),
  await scenario(1, 50, 50),
  await scenario(16, 1, 800),
  await scenario(16, 50, 80),
];

// The table: each figure of ours against the floor and issue 14's target.
const rows: string[][] = [];
const ms = (value: number) => `${value.toFixed(2)} ms`;
const times = (value: number) => `${value.toFixed(2)}×`;
let failures = 0;
const verdict = (pass: boolean) => {
  if (!pass) failures++;
  return pass ? "PASS" : "FAIL";
};
for (const { concurrency, eventsPerTxn, results } of scenarios) {
  const [o, floor, bare] = [results.get("ours"), results.get("floor"), results.get("bare")] as [
    Result,
    Result,
    Result,
  ];
  const label = `c=${concurrency}, ${eventsPerTxn} ev`;
  const limit = concurrency === 1 ? 1.3 : 1.5;
  const ratio = o.p50 / floor.p50;
  rows.push([
    `ack p50, ${label}`,
    ms(o.p50),
    ms(floor.p50),
    times(ratio),
    times(o.p50 / bare.p50),
    `≤ ${limit}× floor`,
    verdict(ratio <= limit),
  ]);
  rows.push([
    `ack p95, ${label}`,
    ms(o.p95),
    ms(floor.p95),
    times(o.p95 / floor.p95),
    times(o.p95 / bare.p95),
    "",
    "",
  ]);
  const txnTarget = concurrency === 1 && eventsPerTxn === 1 ? 210 : undefined;
  rows.push([
    `txn/s, ${label}`,
    o.perSecond.toFixed(0),
    floor.perSecond.toFixed(0),
    times(o.perSecond / floor.perSecond),
    times(o.perSecond / bare.perSecond),
    txnTarget ? `≥ ${txnTarget} txn/s` : "",
    txnTarget ? verdict(o.perSecond >= txnTarget) : "",
  ]);
  rows.push([
    `events/s, ${label}`,
    (o.perSecond * eventsPerTxn).toFixed(0),
    (floor.perSecond * eventsPerTxn).toFixed(0),
    "",
    "",
    "",
    "",
  ]);
}
const header = ["figure", "ours", "floor", "ours/floor", "ours/bare SMB", "target", "result"];
const widths = header.map((h, i) =>
  Math.max(h.length, ...rows.map((row) => (row[i] as string).length)),
);
const line = (cells: string[]) =>
  `| ${cells.map((cell, i) => cell.padEnd(widths[i] as number)).join(" | ")} |`;
console.log(
  "\nfloor: a conditional PutItem of the txn record and a SendMessageBatch of the same messages, at once; " +
    "bare SMB: the SendMessageBatch alone\n",
);
console.log(line(header));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const row of rows) console.log(line(row));
console.log(`\n${failures === 0 ? "all targets met" : `${failures} target(s) missed`}`);

// Where an ack's time goes: the CPU work of the handler, timed here (the same code as the
// functions run), beside the I/O measured above and an HTTP round trip to the gateway.
const health = await measure(200, 1, async () => {
  await request(`${ours.url}/health`);
});
/** Median time of `work` in ms, over runs of `RUNS` after as many to warm up. */
const cpuTime = (work: () => unknown) => {
  const RUNS = 500;
  const times: number[] = [];
  for (let i = 0; i < 2 * RUNS; i++) {
    const t0 = performance.now();
    work();
    if (i >= RUNS) times.push(performance.now() - t0);
  }
  return summarize(times, RUNS, 1).p50;
};
console.log("\nThe ack's parts (p50; CPU parts timed in this process)\n");
for (const { concurrency, eventsPerTxn, results } of scenarios.filter((s) => s.concurrency === 1)) {
  const { txnId, events } = prepare(eventsPerTxn);
  const body = JSON.stringify({ events });
  const event = {
    version: "2.0",
    rawPath: `/_matrix/app/v1/transactions/${txnId}`,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    pathParameters: { txnId },
    body,
    isBase64Encoded: false,
  } as unknown as Parameters<typeof jsonBody>[0];
  const transaction = parseTransaction(jsonBody(event));
  const part = (r: Result | undefined) => ms((r as Result).p50);
  console.log(
    [
      `c=${concurrency}, ${eventsPerTxn} event(s), body ${body.length} bytes:`,
      `  gateway (HTTP round trip to GET /health) ${ms(health.p50)}`,
      `  parse (size and depth checks, JSON.parse) ${ms(cpuTime(() => jsonBody(event)))}`,
      `  validate (parseTransaction) ${ms(cpuTime(() => parseTransaction(JSON.parse(body))) - cpuTime(() => JSON.parse(body)))}`,
      `  hash (transactionHash) ${ms(cpuTime(() => transactionHash(transaction)))}`,
      `  messages (inboundMessages) ${ms(cpuTime(() => inboundMessages(txnId, transaction).messages))}`,
      `  enqueue (SendMessageBatch) ${part(results.get("bare"))}, record (conditional PutItem) ${part(results.get("record"))}, both at once ${part(results.get("floor"))}`,
      `  the ack ${part(results.get("ours"))}`,
    ].join("\n"),
  );
}

// Every queued event must be handled once: wait for the queue to drain, then count the
// events marked done in DynamoDB.
const drainSeconds = await waitForDrain(sqs, queueUrl as string, 600_000);
const done = await countDoneEvents(dynamodb);
console.log(
  `\nEvents queued ${queuedEvents}, handled (marked done) ${done}, missing ${queuedEvents - done}; ` +
    `the consumer drained its backlog ${drainSeconds.toFixed(1)} s after the load ended`,
);

sqs.destroy();
dynamodb.destroy();
await Promise.all([stopServer(ours.child), stopServer(reference.child)]);
