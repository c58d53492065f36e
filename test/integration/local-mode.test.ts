import { execFile, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { GetQueueAttributesCommand, GetQueueUrlCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { afterEach, describe, expect, inject, it, onTestFinished, vi } from "vitest";
import { parse } from "yaml";
import { claimKey } from "../../functions/appservice/pipeline/process-inbound.ts";
import {
  newRegistration,
  registrationYaml,
} from "../../functions/appservice/protocol/registration.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { localSqs } from "../../functions/local/aws-clients.ts";
import { freePort } from "../../functions/local/free-port.ts";
import { startLocal } from "../../functions/local/local.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import { sha256 } from "../../functions/shared/hash.ts";
import {
  isAlive,
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  sleep,
  tempDir,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { type RecordedRequest, ScriptedHomeserver } from "../support/homeserver.ts";
import { isLoopback, listeningSockets, processTree } from "../support/listening-sockets.ts";
import { startNpm, stopAllNpmStarts } from "../support/npm-start.ts";

afterEach(() => stopAllNpmStarts());

/**
 * The visibility timeout of the cases that wait for a message a stopped or killed process had
 * received (30 s by default): long enough that no handler on a loaded machine outlives its claim.
 */
const VISIBILITY_TIMEOUT_SECONDS = 10;

/** A registration file (bot `@bot:test.local`) in a new folder, and a homeserver for it. */
async function withHomeserver(id: string) {
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

describe("npm start", () => {
  it("serves /health, acks a transaction as the README shows, prints no token, and stops every child on SIGTERM", async () => {
    const dir = await tempDir();
    const port = await freePort();
    const registrationPath = join(dir, "registration.yaml");
    const { pid, output, exited, javaPid, sqsEndpoint, dynamodbEndpoint } = await startNpm({
      PORT: String(port),
      REGISTRATION: registrationPath,
      SERVER_NAME: "example.org",
    });
    expect(output()).toContain(`listening on http://127.0.0.1:${port}`);
    expect(output()).toContain(`Application route: POST http://127.0.0.1:${port}/webhook/{id}`);
    expect(output()).toContain(
      "Deliveries to remote services may reach public addresses and 127.0.0.0/8, ::1/128 (DELIVERY_ALLOWED_ADDRESSES: loopback by default in local mode)",
    );
    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);

    const registration = parse(readFileSync(registrationPath, "utf8")) as Record<string, string>;
    expect(registration.hs_token).toHaveLength(64);
    expect(registration.as_token).toHaveLength(64);
    expect(registration.url).toBe(`http://127.0.0.1:${port}`);
    expect(JSON.stringify(registration.namespaces)).toContain("example\\\\.org");
    // The path and what to do with it, never the secrets.
    expect(output()).toContain(registrationPath);
    expect(output()).toContain("app_service_config_files");
    expect(output()).not.toContain(registration.hs_token);
    expect(output()).not.toContain(registration.as_token);
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
    // Nothing it started listens beyond loopback: the gateway, fauxqs and DynamoDB Local (Java)
    // are all found, and every address is 127.0.0.1 (or its IPv6-mapped form).
    const sockets = listeningSockets(processTree(pid));
    const sqsPort = Number(new URL(sqsEndpoint).port);
    const dynamoPort = Number(new URL(dynamodbEndpoint).port);
    expect(new Set(sockets.map((socket) => socket.port))).toEqual(
      new Set([port, sqsPort, dynamoPort]),
    );
    expect(sockets.filter((socket) => socket.pid === javaPid).map((s) => s.port)).toEqual([
      dynamoPort,
    ]);
    expect(sockets.filter((socket) => !isLoopback(socket.address))).toEqual([]);
    // To npm alone, not the group: npm passes it on, and our shutdown must stop Java itself.
    process.kill(pid, "SIGTERM");
    await waitFor(exited, 20_000, "npm start to exit");
    await waitFor(() => !isAlive(javaPid as number), 10_000, "DynamoDB Local to stop");
  });

  it("leaves no Java process behind even when it is killed with SIGKILL", async () => {
    const dir = await tempDir();
    const { pid, javaPid } = await startNpm(
      { PORT: String(await freePort()), REGISTRATION: join(dir, "registration.yaml") },
      { command: [process.execPath, "--import", "tsx", "functions/local/main.ts"] },
    );
    expect(javaPid).toBeDefined();
    expect(isAlive(javaPid as number)).toBe(true);
    process.kill(pid, "SIGKILL");
    await waitFor(() => !isAlive(javaPid as number), 15_000, "the watchdog to stop DynamoDB Local");
  });

  /** `npm start`'s program with `env`, expected to stop at once: its exit code and stderr. */
  async function failedStart(env: Record<string, string>) {
    const child = spawn(process.execPath, ["--import", "tsx", "functions/local/main.ts"], {
      cwd: join(import.meta.dirname, "../.."),
      env: { ...process.env, PORT: "0", ...env },
    });
    // Should it start after all, it is stopped with the test.
    onTestFinished(() => void child.kill("SIGKILL"));
    let output = "";
    child.stderr.on("data", (chunk) => (output += chunk));
    const code = await new Promise((resolve) => child.on("exit", resolve));
    return { code, output };
  }

  it("fails at start with a message naming the bad registration field", async () => {
    const dir = await tempDir();
    const path = join(dir, "registration.yaml");
    writeFileSync(path, "id: x\nurl: null\nas_token: a\nsender_localpart: bot\nnamespaces: {}\n");
    const { code, output } = await failedStart({ REGISTRATION: path });
    expect(code).toBe(1);
    expect(output).toContain("hs_token");
  });

  // One start: each variable's values and bounds are seconds-settings.test.ts's.
  it("a setting in seconds out of its range: refused at start, naming the variable, before anything starts", async () => {
    const registrationPath = join(await tempDir(), "registration.yaml");
    const { code, output } = await failedStart({
      REGISTRATION: registrationPath,
      OUTBOX_BACKOFF_CAP_SECONDS: "1.5",
    });
    expect(code).toBe(1);
    expect(output).toContain(
      "OUTBOX_BACKOFF_CAP_SECONDS=1.5 is not a whole number of seconds from 1 to 43200",
    );
    // Stopped before the start wrote its registration.
    expect(existsSync(registrationPath)).toBe(false);
  });
});

describe("npm start killed mid-batch", () => {
  it("SIGKILL while pings stream in and pongs go out → after a restart, one pong per ping, in order per room", async () => {
    // The queues and the table outlive the killed process, as SQS and DynamoDB do in AWS.
    const sqs = await startSqsLocal();
    onTestFinished(sqs.stop);
    const { registrationPath, registration, homeserver } = await withHomeserver("killed");
    const rooms = Array.from({ length: 10 }, (_, i) => `!kill${i}:test.local`);
    for (const room of rooms) homeserver.createRoom(room, ["@bot:test.local"]);
    const port = await freePort();
    const start = () =>
      startNpm(
        {
          PORT: String(port),
          REGISTRATION: registrationPath,
          HOMESERVER_URL: homeserver.url,
          SERVER_NAME: "test.local",
          DYNAMODB_ENDPOINT: inject("dynamodbEndpoint"),
          SQS_ENDPOINT: sqs.endpoint,
          VISIBILITY_TIMEOUT_SECONDS: String(VISIBILITY_TIMEOUT_SECONDS),
        },
        { command: [process.execPath, "--import", "tsx", "functions/local/main.ts"] },
      );

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
    const first = await start();
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
    await first.stop("SIGKILL", 5_000);
    const pongsAtKill = homeserver.sent.length;
    await start();
    await pushing;
    // In-flight messages come back once their visibility timeout has run out.
    await waitFor(() => homeserver.sent.length >= pings.length, 90_000, "every pong");
    // At rest: every message handled and deleted, none in flight that could still be redelivered.
    const queued = async () =>
      (
        await Promise.all(
          ["appservice-inbound.fifo", "appservice-outbound.fifo"].map((name) => sqs.messages(name)),
        )
      ).flat().length;
    await waitFor(async () => (await queued()) === 0, 60_000, "the queues to drain");

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
      // Long enough that a slow first write to a new database file never redelivers a message
      // whose event is still being handled (its lease runs out 1 s before).
      visibilityTimeoutSeconds: 10,
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
      // The queue was empty at the stop, and the new one does not remember the messages
      // consumed before it (SQS would, for 5 minutes), so the replay was enqueued again: once
      // the consumer has taken it, the application must not have been called again.
      expect(await waitUntilDrained(second)).toEqual(NO_DEAD_LETTERS);
      expect(handled.map((e) => e.event_id)).toEqual(events.map((e) => e.event_id));
    } finally {
      await second.stop();
    }
  });
});

const commandLine = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "(gone)";
  }
};

describe("npm start stopped by a signal", () => {
  // Each target once and each signal (SIGTERM to npm: the first test above): npm start with
  // its own DynamoDB Local takes ~10 s a case.
  const cases = [
    { signal: "SIGINT", target: "the npm process" },
    { signal: "SIGTERM", target: "the node process" },
    { signal: "SIGINT", target: "the process group" },
  ] as const;
  it.each(cases)(
    "$signal to $target stops every process within 5 s",
    async ({ signal, target }) => {
      const dir = await tempDir();
      const {
        pid: npmPid,
        processes,
        output,
        javaPid,
      } = await startNpm({
        PORT: String(await freePort()),
        REGISTRATION: join(dir, "registration.yaml"),
      });
      expect(output()).toContain(
        "(in memory: queued work is lost at a stop; set DATA_DIR to keep it)",
      );
      // npm runs node itself: no shell in between to swallow the signal.
      const nodePid = processes.find((pid) => commandLine(pid).endsWith("functions/local/main.ts"));
      expect(commandLine(npmPid)).toMatch(/^npm/);
      expect(processTree(npmPid)[1]).toBe(nodePid);
      expect(processes).toContain(javaPid);

      const started = Date.now();
      if (target === "the npm process") process.kill(npmPid, signal);
      else if (target === "the node process") process.kill(nodePid as number, signal);
      else process.kill(-npmPid, signal);
      await waitFor(
        () => processes.every((pid) => !isAlive(pid)),
        5_000,
        `every process to end: ${processes.filter(isAlive).map(commandLine).join("; ")}`,
      );
      console.log(
        `${signal} to ${target}: all ${processes.length} processes gone in ${Date.now() - started} ms`,
      );
      expect(output()).toContain(`${signal}: stopping`);
    },
  );
});

describe("npm start with DATA_DIR, stopped and started again", () => {
  it("delivers the work it accepted before the stop, once: an outbound call and an inbound item", async () => {
    const { dir, registrationPath, registration, homeserver } = await withHomeserver("kept");
    for (const room of ["!ping:test.local", "!hooks:test.local"]) {
      homeserver.createRoom(room, ["@bot:test.local", "@alice:test.local"]);
    }
    homeserver.setState("!hooks:test.local", "m.room.power_levels", "", {
      users: { "@alice:test.local": 100 },
    });
    // The homeserver fails: the pong waits in the outbound queue (retried with backoff), and
    // the webhook command, which needs the room's power levels, in the inbound queue.
    const isSend = (r: RecordedRequest) => r.method === "PUT" && r.path.includes("/send/");
    const isStateRead = (r: RecordedRequest) => r.method === "GET" && r.path.includes("/state/");
    homeserver.cue(isSend, { status: 502, body: { errcode: "M_UNKNOWN", error: "down" } }, 1e6);
    homeserver.cue(
      isStateRead,
      { status: 502, body: { errcode: "M_UNKNOWN", error: "down" } },
      1e6,
    );
    const port = await freePort();
    const start = () =>
      startNpm({
        PORT: String(port),
        REGISTRATION: registrationPath,
        HOMESERVER_URL: homeserver.url,
        SERVER_NAME: "test.local",
        DATA_DIR: dir,
        VISIBILITY_TIMEOUT_SECONDS: String(VISIBILITY_TIMEOUT_SECONDS),
      });

    const first = await start();
    const queuesFile = join(dir, "appservice-queues.jsonl");
    expect(first.output()).toContain(`(queued work kept in ${queuesFile} at a clean stop)`);
    const ping = makeEvent("!ping:test.local", "!ping");
    const command = makeEvent("!hooks:test.local", "!webhook new ci");
    const response = await putTransaction(
      `http://127.0.0.1:${port}`,
      "before-stop",
      { events: [ping, command] },
      { token: registration.hs_token },
    );
    expect(response.status).toBe(200);
    await waitFor(
      () =>
        homeserver.requests.filter(isSend).length >= 2 &&
        homeserver.requests.filter(isStateRead).length >= 1,
      30_000,
      "the pong to fail twice and the command once",
    );
    process.kill(first.pid, "SIGTERM");
    await waitFor(first.exited, 10_000, "npm start to stop");
    const kept = readFileSync(queuesFile, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    // The pong, and the command: its batch was still retrying the power levels at the stop.
    expect(
      kept
        .filter((m) => m.queue === "appservice-outbound.fifo")
        .map((m) => JSON.parse(m.body).request.body.body),
    ).toEqual(["pong"]);
    expect(
      kept.filter(
        (m) => m.queue === "appservice-inbound.fifo" && m.body.includes(command.event_id),
      ),
    ).toHaveLength(1);
    expect(homeserver.sent).toEqual([]);

    homeserver.clearCues();
    const second = await start();
    expect(existsSync(queuesFile)).toBe(false);
    const sqs = localSqs(second.sqsEndpoint);
    onTestFinished(() => sqs.destroy());
    // The command waits out what was left of its visibility timeout, as it would in AWS.
    await waitFor(() => homeserver.sent.length >= 2, 60_000, "the pong and the webhook's URL");
    await vi.waitUntil(async () => (await queuedCount(sqs)) === 0, { timeout: 20_000 });
    const bodies = homeserver.sent.map((e) => String(e.content.body));
    expect(bodies).toHaveLength(2);
    expect(bodies).toContain("pong");
    expect(bodies.find((b) => b.startsWith("Webhook ci created"))).toBeDefined();
    // Each sent once: no request repeated a send that had succeeded.
    const succeeded = homeserver.requests.filter((r) => isSend(r) && r.status === 200);
    expect(succeeded).toHaveLength(2);

    await second.stop("SIGINT", 10_000);
    // Nothing was left queued: nothing kept.
    expect(existsSync(queuesFile)).toBe(false);
  }, 180_000);
});

/** Messages in local mode's queues, waiting or received. */
async function queuedCount(sqs: SQSClient) {
  let total = 0;
  for (const name of ["appservice-inbound.fifo", "appservice-outbound.fifo"]) {
    const { QueueUrl } = await sqs.send(new GetQueueUrlCommand({ QueueName: name }));
    const { Attributes } = await sqs.send(
      new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ["All"] }),
    );
    total +=
      Number(Attributes?.ApproximateNumberOfMessages) +
      Number(Attributes?.ApproximateNumberOfMessagesNotVisible);
  }
  return total;
}
