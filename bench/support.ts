// Helpers shared by the benchmarks: servers in processes of their own, timing, and checking
// that every queued event was handled.
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { Agent, request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DynamoDBClient, ScanCommand } from "@aws-sdk/client-dynamodb";
import { GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { parse } from "yaml";
import {
  type NewRegistrationOptions,
  newRegistration,
  registrationYaml,
} from "../functions/appservice/protocol/registration.ts";
import type { ClientEvent } from "../functions/appservice/protocol/transaction.ts";
import { freePort } from "../functions/local/free-port.ts";
import { ScriptedHomeserver } from "../test/support/homeserver.ts";

const root = join(import.meta.dirname, "..");

/** Starts a server process and resolves with its output once it says it is listening. */
export async function startServer(script: string, env: Record<string, string>) {
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

export const stopServer = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    child.removeAllListeners("exit");
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
  });

export const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;

export interface Result {
  p50: number;
  p95: number;
  p99: number;
  perSecond: number;
  /** Each operation's time, in ms, sorted. */
  latencies: number[];
  seconds: number;
}

/** The figures of `latencies` (any order) over `count` operations in `seconds`. */
export const summarize = (latencies: number[], count: number, seconds: number): Result => {
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
    perSecond: count / seconds,
    latencies: sorted,
    seconds,
  };
};

/** Runs `count` operations, `concurrency` at a time, timing each. */
export async function measure(
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
  return summarize(latencies, count, (performance.now() - started) / 1000);
}

let sequence = 0;
export const makeEvents = (n: number): ClientEvent[] =>
  Array.from({ length: n }, (_, i) => ({
    event_id: `$bench${++sequence}-${randomUUID()}`,
    room_id: `!room${i % 5}:bench.local`,
    type: "m.room.message",
    sender: "@alice:bench.local",
    origin_server_ts: Date.now(),
    content: { msgtype: "m.text", body: `benchmark message ${sequence}` },
  }));

/**
 * The load generator's HTTP client: node:http over kept-alive connections, as the SDK's clients
 * of the floor are. undici's `fetch` cost about 2.6 ms of CPU a request in this process (1.8 ms
 * for `GET /health`), on the ack's path and not on the floor's.
 */
const agent = new Agent({ keepAlive: true });

/** A request to one of the servers under test: its status and body. */
export function request(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { agent, method: options.method ?? "GET", headers: options.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", (error: NodeJS.ErrnoException) => {
      // A kept-alive connection the server closed as it was reused: sent again on a new one, as
      // Node's documentation advises (the requests sent here are idempotent).
      if (req.reusedSocket && error.code === "ECONNRESET")
        request(url, options).then(resolve, reject);
      else reject(error);
    });
    req.end(options.body);
  });
}

export async function put(url: string, token: string, txnId: string, events: ClientEvent[]) {
  const body = JSON.stringify({ events });
  const response = await request(`${url}/_matrix/app/v1/transactions/${txnId}`, {
    method: "PUT",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      "content-length": String(Buffer.byteLength(body)),
    },
    body,
  });
  if (response.status !== 200) throw new Error(`${url}: ${response.status} ${response.body}`);
}

/**
 * `npm start`'s local mode in a process of its own, with a fresh registration: its URL, the
 * hs_token, and the endpoints it printed (`DynamoDB Local`, `SQS (fauxqs)`).
 */
export async function startLocalMode() {
  const registrationPath = join(
    await mkdtemp(join(tmpdir(), "appservice-bench-")),
    "registration.yaml",
  );
  const server = await startServer("functions/local/main.ts", {
    PORT: String(await freePort()),
    REGISTRATION: registrationPath,
    SERVER_NAME: "bench.local",
  });
  const endpoint = (label: "listening on" | "DynamoDB Local" | "SQS (fauxqs)") =>
    new RegExp(`${label.replace(/[()]/g, "\\$&")}:? (http://127\\.0\\.0\\.1:\\d+)`).exec(
      server.output(),
    )?.[1] as string;
  const token = (parse(await readFile(registrationPath, "utf8")) as { hs_token: string }).hs_token;
  return { ...server, url: endpoint("listening on"), token, endpoint };
}

/** Waits until the queue has nothing left, visible or in flight; the seconds it took. */
export async function waitForDrain(
  sqs: SQSClient,
  queueUrl: string,
  timeoutMs = 3_600_000,
): Promise<number> {
  const started = performance.now();
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
    if (left === 0 || performance.now() - started > timeoutMs)
      return (performance.now() - started) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

/** Events marked done in the table: each handled at least once. */
export async function countDoneEvents(
  dynamodb: DynamoDBClient,
  tableName = "appservice",
): Promise<number> {
  let done = 0;
  let startKey: Record<string, never> | undefined;
  do {
    const page = await dynamodb.send(
      new ScanCommand({
        TableName: tableName,
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
  return done;
}

/**
 * A fresh registration (bot `@bot:bench.local`, users `_b_…` and `userPrefixes`) written to a
 * folder of its own, and a scripted homeserver that knows its tokens, started.
 */
export async function benchHomeserver(
  id: string,
  userPrefixes?: NewRegistrationOptions["userPrefixes"],
) {
  const serverName = "bench.local";
  const registrationPath = join(
    await mkdtemp(join(tmpdir(), `appservice-${id}-`)),
    "registration.yaml",
  );
  const registration = newRegistration({
    id,
    url: null,
    senderLocalpart: "bot",
    serverName,
    prefix: "_b_",
    ...(userPrefixes && { userPrefixes }),
  });
  await writeFile(registrationPath, registrationYaml(registration));
  const bot = `@bot:${serverName}`;
  const homeserver = new ScriptedHomeserver(registration.as_token, serverName, bot);
  await homeserver.start();
  return { registration, registrationPath, homeserver, bot, serverName };
}
