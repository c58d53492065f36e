// `npm run bench:soak`: SOAK_TRANSACTIONS (default 10,000) transactions of 1–100 events each,
// at concurrency 1 (as a homeserver sends) and 16 (as retries pile up), through a fresh local
// mode each time: ack latency, events handled, duplicates and losses, the process's memory.
import { randomInt, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetQueueUrlCommand } from "@aws-sdk/client-sqs";
import { parse } from "yaml";
import { localDynamoDb, localSqs } from "../functions/local/aws-clients.ts";
import { freePort } from "../functions/local/free-port.ts";
import {
  countDoneEvents,
  makeEvents,
  measure,
  put,
  startServer,
  stopServer,
  waitForDrain,
} from "./support.ts";

const transactions = Number(process.env.SOAK_TRANSACTIONS ?? 10_000);
const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

console.log(`Soak: ${transactions} transactions of 1–100 events, local mode in its own process\n`);
for (const concurrency of [1, 16]) {
  const dir = await mkdtemp(join(tmpdir(), "appservice-soak-"));
  const registrationPath = join(dir, "registration.yaml");
  const local = await startServer("functions/local/main.ts", {
    PORT: String(await freePort()),
    REGISTRATION: registrationPath,
    SERVER_NAME: "bench.local",
  });
  const endpoint = (label: string) =>
    new RegExp(`${label}:? (http://127\\.0\\.0\\.1:\\d+)`).exec(local.output())?.[1] as string;
  const url = endpoint("listening on");
  const token = (parse(await readFile(registrationPath, "utf8")) as { hs_token: string }).hs_token;
  const pid = local.child.pid as number;
  const memoryBefore = rssMb(pid);

  let queued = 0;
  const result = await measure(transactions, concurrency, async () => {
    const events = makeEvents(randomInt(1, 101));
    await put(url, token, randomUUID(), events);
    queued += events.length;
  });
  const memoryAfterLoad = rssMb(pid);
  const sqs = localSqs(endpoint("SQS \\(fauxqs\\)"));
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
