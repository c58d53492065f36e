// `npm run bench:soak`: SOAK_TRANSACTIONS (default 10,000) transactions of 1–100 events each,
// at concurrency 1 (as a homeserver sends) and 16 (as retries pile up), through a fresh local
// mode each time: ack latency, events handled, duplicates and losses, the process's memory.
import { randomInt, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { GetQueueUrlCommand } from "@aws-sdk/client-sqs";
import { localDynamoDb, localSqs } from "../functions/local/aws-clients.ts";
import {
  countDoneEvents,
  makeEvents,
  measure,
  put,
  startLocalMode,
  stopServer,
  waitForDrain,
} from "./support.ts";

const transactions = Number(process.env.SOAK_TRANSACTIONS ?? 10_000);
const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

console.log(`Soak: ${transactions} transactions of 1–100 events, local mode in its own process\n`);
for (const concurrency of [1, 16]) {
  const local = await startLocalMode();
  const { url, token, endpoint } = local;
  const pid = local.child.pid as number;
  const memoryBefore = rssMb(pid);

  let queued = 0;
  const result = await measure(transactions, concurrency, async () => {
    const events = makeEvents(randomInt(1, 101));
    await put(url, token, randomUUID(), events);
    queued += events.length;
  });
  const memoryAfterLoad = rssMb(pid);
  const sqs = localSqs(endpoint("SQS (fauxqs)"));
  const { QueueUrl } = await sqs.send(
    new GetQueueUrlCommand({ QueueName: "appservice-inbound.fifo" }),
  );
  const drainSeconds = await waitForDrain(sqs, QueueUrl as string);
  const dynamodb = localDynamoDb(endpoint("DynamoDB Local"));
  const done = await countDoneEvents(dynamodb);
  const memoryEnd = rssMb(pid);
  sqs.destroy();
  dynamodb.destroy();
  await stopServer(local.child);
  // Deliveries the application completed, as the local mode counted them at its stop (its last
  // metrics line: it also prints them every minute).
  const handled = Number(
    [...local.output().matchAll(/ItemsHandled=(\d+)/g)].at(-1)?.[1] ?? Number.NaN,
  );
  console.log(
    [
      `concurrency ${concurrency}: ${queued} events in ${transactions} transactions`,
      `  ack p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms, ${result.perSecond.toFixed(0)} txn/s`,
      `  handled ${handled} (events marked done ${done}): duplicates ${handled - queued}, lost ${queued - done}`,
      `  queue drained ${drainSeconds.toFixed(0)} s after the load`,
      `  memory (local mode's Node process, RSS): ${memoryBefore.toFixed(0)} MB at start, ` +
        `${memoryAfterLoad.toFixed(0)} MB after the load, ${memoryEnd.toFixed(0)} MB at the end`,
    ].join("\n"),
  );
}
