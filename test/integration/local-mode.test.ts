import { execFile, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, describe, expect, it, onTestFinished } from "vitest";
import { parse } from "yaml";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { freePort } from "../../functions/local/free-port.ts";
import { startLocal } from "../../functions/local/local.ts";
import {
  isAlive,
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  tempDir,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { isLoopback, listeningSockets, processTree } from "../support/listening-sockets.ts";
import { startNpm, stopAllNpmStarts } from "../support/npm-start.ts";

afterEach(() => stopAllNpmStarts());

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
    // A start, the README's five requests and a stop, beside the other npm starts' files.
  }, 120_000);

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
