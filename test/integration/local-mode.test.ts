import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, inject, it, onTestFinished } from "vitest";
import { parse } from "yaml";
import { sha256 } from "../../functions/appservice/hash.ts";
import { claimKey } from "../../functions/appservice/process-inbound.ts";
import { newRegistration, registrationYaml } from "../../functions/appservice/registration.ts";
import type { ClientEvent } from "../../functions/appservice/transaction.ts";
import { freePort } from "../../functions/local/free-port.ts";
import { startLocal } from "../../functions/local/local.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import {
  isAlive,
  makeEvent,
  putTransaction,
  sleep,
  tempDir,
  waitFor,
} from "../support/appservice.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

const children: ChildProcess[] = [];
const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;
afterEach(() => {
  for (const child of children.splice(0)) {
    if (child.pid && !exited(child)) process.kill(-child.pid, "SIGKILL");
  }
});

/** The PID of the Java process serving DynamoDB Local on `port`. */
function javaPidOnPort(port: string): number | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
      const portIndex = args.indexOf("-port");
      if (args[0]?.endsWith("java") && portIndex >= 0 && args[portIndex + 1] === port)
        return Number(entry);
    } catch {
      // The process ended while we looked.
    }
  }
  return undefined;
}

/** Runs a command as the README says, in its own process group (as a terminal would). */
async function startProcess(command: string, args: string[], env: Record<string, string>) {
  const child = spawn(command, args, {
    cwd: join(import.meta.dirname, "../.."),
    env: { ...process.env, ...env },
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let output = "";
  child.stdout?.on("data", (chunk) => (output += chunk));
  child.stderr?.on("data", (chunk) => (output += chunk));
  await waitFor(
    () => /listening on http:\/\/127\.0\.0\.1:\d+/.test(output) || exited(child),
    60_000,
    "listening",
  );
  if (exited(child)) throw new Error(`exited early: ${output}`);
  const dynamoPort = /DynamoDB Local: http:\/\/127\.0\.0\.1:(\d+)/.exec(output)?.[1] as string;
  return { child, output: () => output, javaPid: javaPidOnPort(dynamoPort) };
}

describe("npm start", () => {
  it("serves /health, acks a transaction as the README shows, and stops every child on SIGTERM", async () => {
    const dir = await tempDir();
    const port = await freePort();
    const registrationPath = join(dir, "registration.yaml");
    const { child, output, javaPid } = await startProcess("npm", ["start"], {
      PORT: String(port),
      REGISTRATION: registrationPath,
      SERVER_NAME: "example.org",
    });
    expect(output()).toContain(`listening on http://127.0.0.1:${port}`);
    expect(output()).toContain(`Application route: POST http://127.0.0.1:${port}/webhook/{id}`);
    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);

    const registration = parse(readFileSync(registrationPath, "utf8")) as Record<string, string>;
    expect(registration.hs_token).toHaveLength(64);
    expect(registration.as_token).toHaveLength(64);
    expect(registration.url).toBe(`http://127.0.0.1:${port}`);
    expect(JSON.stringify(registration.namespaces)).toContain("example\\\\.org");
    const response = await putTransaction(
      `http://127.0.0.1:${port}`,
      "1",
      { events: [makeEvent("!room:example.org", "hello")] },
      { token: registration.hs_token },
    );
    expect(response.status).toBe(200);

    // The README's curl examples, as written but for the port.
    const readme = readFileSync(join(import.meta.dirname, "../../README.md"), "utf8");
    const example = /<!-- readme-example:start -->\n```sh\n([\s\S]*?)```/.exec(
      readme,
    )?.[1] as string;
    const { stdout } = await promisify(execFile)(
      "bash",
      ["-ec", example.replaceAll("9000", String(port))],
      {
        cwd: dir,
        env: { ...process.env, NODE_PATH: join(import.meta.dirname, "../../node_modules") },
      },
    );
    expect(stdout).toBe('{"status":"ok"}{}{"errcode":"M_UNAUTHORIZED","error":"Missing hs_token"}');

    expect(javaPid).toBeDefined();
    // To npm alone, not the group: npm passes it on, and our shutdown must stop Java itself.
    process.kill(child.pid as number, "SIGTERM");
    await waitFor(() => exited(child), 20_000, "npm start to exit");
    await waitFor(() => !isAlive(javaPid as number), 10_000, "DynamoDB Local to stop");
  });

  it("leaves no Java process behind even when it is killed with SIGKILL", async () => {
    const dir = await tempDir();
    const { child, javaPid } = await startProcess(
      process.execPath,
      ["--import", "tsx", "functions/local/main.ts"],
      { PORT: String(await freePort()), REGISTRATION: join(dir, "registration.yaml") },
    );
    expect(javaPid).toBeDefined();
    expect(isAlive(javaPid as number)).toBe(true);
    process.kill(child.pid as number, "SIGKILL");
    await waitFor(() => !isAlive(javaPid as number), 15_000, "the watchdog to stop DynamoDB Local");
  });

  it("fails at start with a message naming the bad registration field", async () => {
    const dir = await tempDir();
    const path = join(dir, "registration.yaml");
    writeFileSync(path, "id: x\nurl: null\nas_token: a\nsender_localpart: bot\nnamespaces: {}\n");
    const child = spawn(process.execPath, ["--import", "tsx", "functions/local/main.ts"], {
      cwd: join(import.meta.dirname, "../.."),
      env: { ...process.env, PORT: "0", REGISTRATION: path },
    });
    let output = "";
    child.stderr.on("data", (chunk) => (output += chunk));
    const code = await new Promise((resolve) => child.on("exit", resolve));
    expect(code).toBe(1);
    expect(output).toContain("hs_token");
  });
});

describe("npm start killed mid-batch", () => {
  it("SIGKILL while pings stream in and pongs go out → after a restart, one pong per ping, in order per room", async () => {
    // The queues and the table outlive the killed process, as SQS and DynamoDB do in AWS.
    const sqs = await startSqsLocal();
    onTestFinished(sqs.stop);
    const dir = await tempDir();
    const registrationPath = join(dir, "registration.yaml");
    const registration = newRegistration({
      id: "killed",
      url: null,
      senderLocalpart: "bot",
      serverName: "test.local",
      prefix: "_as_",
    });
    writeFileSync(registrationPath, registrationYaml(registration));
    const homeserver = new ScriptedHomeserver(
      registration.as_token,
      "test.local",
      "@bot:test.local",
    );
    await homeserver.start();
    onTestFinished(() => homeserver.stop());
    const rooms = Array.from({ length: 10 }, (_, i) => `!kill${i}:test.local`);
    for (const room of rooms) homeserver.createRoom(room, ["@bot:test.local"]);
    const port = await freePort();
    const start = () =>
      startProcess(process.execPath, ["--import", "tsx", "functions/local/main.ts"], {
        PORT: String(port),
        REGISTRATION: registrationPath,
        HOMESERVER_URL: homeserver.url,
        SERVER_NAME: "test.local",
        DYNAMODB_ENDPOINT: inject("dynamodbEndpoint"),
        SQS_ENDPOINT: sqs.endpoint,
      });

    const transactions = Array.from({ length: 60 }, (_, n) => ({
      txnId: `kill-${n}`,
      events: rooms.map((room) => makeEvent(room, "!ping")),
    }));
    const pings = transactions.flatMap((t) => t.events);
    // The default application answers each ping with one notice, whose txnId derives from
    // the ping's claim: map each pong back to its ping.
    const pingByPongTxnId = new Map(
      pings.map((event) => [
        sha256(`${claimKey({ kind: "event", id: event.event_id, event })}\n0`),
        event.event_id,
      ]),
    );
    let { child } = await start();
    // As Synapse does: one transaction at a time, each retried until acked.
    const pushing = (async () => {
      for (const { txnId, events } of transactions) {
        while (
          !(await putTransaction(
            `http://127.0.0.1:${port}`,
            txnId,
            { events },
            {
              token: registration.hs_token,
            },
          ).then(
            (response) => response.ok,
            () => false,
          ))
        ) {
          await sleep(200);
        }
        await sleep(30);
      }
    })();
    await waitFor(() => homeserver.sent.length >= 100, 30_000, "the first 100 pongs");
    process.kill(-(child.pid as number), "SIGKILL");
    await waitFor(() => exited(child), 5_000, "the kill");
    const pongsAtKill = homeserver.sent.length;
    ({ child } = await start());
    await pushing;
    // In-flight messages come back once their visibility timeout (30 s) has run out.
    await waitFor(() => homeserver.sent.length >= pings.length, 90_000, "every pong");
    await sleep(2000);

    const sends = homeserver.requests.filter(
      (r) => r.method === "PUT" && r.path.includes("/send/"),
    );
    console.log(
      `killed after ${pongsAtKill} of ${pings.length} pongs; ${sends.length} send requests for ${homeserver.sent.length} messages`,
    );
    expect(pongsAtKill).toBeLessThan(pings.length);
    expect(homeserver.sent.map((e) => e.content.body)).toEqual(pings.map(() => "pong"));
    expect(new Set(homeserver.sent.map((e) => pingByPongTxnId.get(e.txnId))).size).toBe(
      pings.length,
    );
    for (const room of rooms) {
      expect(
        homeserver.sent.filter((e) => e.roomId === room).map((e) => pingByPongTxnId.get(e.txnId)),
      ).toEqual(pings.filter((e) => e.room_id === room).map((e) => e.event_id));
    }
  }, 180_000);
});

describe("DATA_DIR", () => {
  it("keeps the dedupe state across a restart: a replayed transaction is a no-op", async () => {
    const dir = await tempDir();
    const handled: ClientEvent[] = [];
    const options = {
      port: 0,
      registrationPath: join(dir, "registration.yaml"),
      homeserverUrl: "http://127.0.0.1:1",
      serverName: "test.local",
      dataDir: dir,
      visibilityTimeoutSeconds: 2,
      application: { onEvent: (event: ClientEvent) => void handled.push(event) },
    };
    const events = [makeEvent("!r:test.local", "one"), makeEvent("!r:test.local", "two")];

    const first = await startLocal(options);
    const token = first.registration.hs_token;
    expect((await putTransaction(first.url, "persisted", { events }, { token })).status).toBe(200);
    await waitFor(() => handled.length >= 2);
    await first.stop();

    const second = await startLocal(options);
    try {
      expect(second.registrationCreated).toBe(false);
      expect((await putTransaction(second.url, "persisted", { events }, { token })).status).toBe(
        200,
      );
      // The queue is new (fauxqs keeps nothing), so the replay was enqueued again: give the
      // consumer time to see it, then check that the application was not called again.
      await sleep(2500);
      expect(handled.map((e) => e.event_id)).toEqual(events.map((e) => e.event_id));
    } finally {
      await second.stop();
    }
  });
});
