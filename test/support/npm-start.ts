import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { inject, onTestFinished } from "vitest";
import {
  newRegistration,
  registrationYaml,
} from "../../functions/appservice/protocol/registration.ts";
import { freePort } from "../../functions/local/free-port.ts";
import { isAlive } from "./appservice.ts";
import { ScriptedHomeserver } from "./homeserver.ts";
import { processTree } from "./listening-sockets.ts";
import { tempDir } from "./temp-dirs.ts";
import { waitFor } from "./wait.ts";
import type { homeserverWithRegistration } from "./with-homeserver.ts";

export interface NpmStartOptions {
  /** What to run instead of `npm start` (e.g. `node --import tsx functions/local/main.ts`). */
  command?: readonly [string, ...string[]];
  /** How long to wait for its "listening on" line. */
  timeoutMs?: number;
}

/** A running `npm start`, from its "listening on" line to its `stop()`. */
export interface NpmStart {
  child: ChildProcess;
  /** npm's PID, which is also its process group's ID. */
  pid: number;
  /** Its "listening on" URL, and that URL's port. */
  url: string;
  port: number;
  /** The admin token it made and printed (ADMIN_TOKEN unset), else undefined. */
  adminToken: string | undefined;
  dynamodbEndpoint: string;
  sqsEndpoint: string;
  /** DynamoDB Local's Java process, when it started one (no DYNAMODB_ENDPOINT given). */
  javaPid: number | undefined;
  /** npm and every process below it when it printed "listening on". */
  processes: number[];
  /** Its lines so far, per stream and both in arrival order; they grow while it runs. */
  stdout: string[];
  stderr: string[];
  lines: string[];
  /** `lines` joined by newlines. */
  output(): string;
  exited(): boolean;
  /**
   * Sends `signal` to its whole process group (nothing if it has ended) and resolves once every
   * process in `processes` (and any started since) has ended; after `timeoutMs`, SIGKILLs the
   * group and throws, naming what was left.
   */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
}

const started = new Set<NpmStart>();

const commandLine = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return [];
  }
};

/**
 * Runs `npm start` in the repository as the README says, in its own process group (as a terminal
 * would), with `env` over this process's environment; resolves once it prints "listening on",
 * throws with its output if it exits before.
 */
export async function startNpm(
  env: Record<string, string>,
  options: NpmStartOptions = {},
): Promise<NpmStart> {
  const [command, ...args] = options.command ?? ["npm", "start"];
  const child = spawn(command, args, {
    cwd: join(import.meta.dirname, "../.."),
    env: { ...process.env, ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const pid = child.pid as number;
  const closed = new Promise((resolve) => child.once("close", resolve));
  const lines: string[] = [];
  const collect = (stream: Readable, into: string[]) => {
    createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) => {
      into.push(line);
      lines.push(line);
    });
    return into;
  };
  const stdout = collect(child.stdout as Readable, []);
  const stderr = collect(child.stderr as Readable, []);
  const output = () => lines.join("\n");
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const printed = (pattern: RegExp) => {
    for (const line of lines) {
      const match = pattern.exec(line);
      if (match) return match[1];
    }
    return undefined;
  };
  let processes: number[] = [pid];
  const stop = async (signal: NodeJS.Signals = "SIGTERM", timeoutMs = 20_000) => {
    started.delete(running);
    const pids = new Set([...processes, ...(exited() ? [] : processTree(pid))]);
    const signalGroup = (s: NodeJS.Signals) => {
      try {
        process.kill(-pid, s);
      } catch {
        // The group is empty: every process in it has ended.
      }
    };
    signalGroup(signal);
    const left = () => [...pids].filter(isAlive);
    try {
      await waitFor(() => exited() && left().length === 0, timeoutMs, "npm start to stop");
    } catch {
      const remaining = left().map((p) => commandLine(p).join(" "));
      signalGroup("SIGKILL");
      throw new Error(`npm start did not stop on ${signal}: ${remaining.join("; ")}`);
    }
  };
  const running: NpmStart = {
    child,
    pid,
    url: "",
    port: 0,
    adminToken: undefined,
    dynamodbEndpoint: "",
    sqsEndpoint: "",
    javaPid: undefined,
    processes,
    stdout,
    stderr,
    lines,
    output,
    exited,
    stop,
  };
  started.add(running);

  await waitFor(
    () => printed(/listening on (http:\/\/\S+)/) !== undefined || exited(),
    options.timeoutMs ?? 60_000,
    "npm start's listening line",
  );
  if (exited()) {
    started.delete(running);
    // Its last lines may still be in the pipes.
    await closed;
    throw new Error(`npm start exited before listening:\n${output()}`);
  }
  processes = processTree(pid);
  running.processes = processes;
  running.url = printed(/listening on (http:\/\/\S+)/) as string;
  running.port = Number(new URL(running.url).port);
  running.adminToken = printed(/with the admin token (\S+)/);
  running.dynamodbEndpoint = printed(/DynamoDB Local: (http:\/\/\S+)/) as string;
  running.sqsEndpoint = printed(/SQS \(fauxqs\): (http:\/\/\S+)/) as string;
  running.javaPid = processes.find((p) => commandLine(p)[0]?.endsWith("java"));
  return running;
}

/** Stops every `npm start` still running (for an afterAll or afterEach), with SIGKILL by default. */
export async function stopAllNpmStarts(signal: NodeJS.Signals = "SIGKILL") {
  await Promise.all([...started].map((running) => running.stop(signal)));
}

/**
 * `npm start` on the registration the scripted homeserver knows, with the run's DynamoDB Local
 * and `env` besides; the homeserver then knows where the appservice listens.
 */
export async function startNpmFor(
  {
    homeserver,
    registration,
    registrationPath,
  }: Awaited<ReturnType<typeof homeserverWithRegistration>>,
  env: Record<string, string> = {},
): Promise<NpmStart> {
  const npm = await startNpm({
    PORT: String(await freePort()),
    REGISTRATION: registrationPath,
    HOMESERVER_URL: homeserver.url,
    SERVER_NAME: homeserver.serverName,
    DYNAMODB_ENDPOINT: inject("dynamodbEndpoint"),
    ...env,
  });
  homeserver.appservice = { id: registration.id, url: npm.url, hsToken: registration.hs_token };
  return npm;
}

/**
 * The visibility timeout of the cases that wait for a message a stopped or killed process had
 * received (30 s by default): long enough that no handler on a loaded machine outlives its claim.
 */
export const VISIBILITY_TIMEOUT_SECONDS = 10;

/**
 * A registration file (bot `@bot:test.local`) in a new folder, and a scripted homeserver for it
 * that takes every user as the appservice's, stopped when the test finishes.
 */
export async function registrationWithHomeserver(id: string) {
  const dir = await tempDir();
  const registrationPath = join(dir, "registration.yaml");
  const registration = newRegistration({
    id,
    url: null,
    senderLocalpart: "bot",
    serverName: "test.local",
    prefix: "_as_",
  });
  writeFileSync(registrationPath, registrationYaml(registration));
  const homeserver = new ScriptedHomeserver(registration.as_token, "test.local", "@bot:test.local");
  await homeserver.start();
  onTestFinished(() => homeserver.stop());
  return { dir, registrationPath, registration, homeserver };
}
