import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, inject, it } from "vitest";
import { freePort } from "../../functions/local/free-port.ts";
import { isAlive, tempDir, waitFor } from "../support/appservice.ts";
import { processTree } from "../support/listening-sockets.ts";
import { startNpm, stopAllNpmStarts } from "../support/npm-start.ts";

afterEach(() => stopAllNpmStarts());

const commandLine = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim();
  } catch {
    return "(gone)";
  }
};

describe("npm start stopped by a signal", () => {
  // Each target once and each signal (SIGTERM to npm: local-mode.test.ts's first test). Node's
  // shutdown stops Java whichever signal came (SIGINT to npm's case), and the group's case has
  // Java get the signal itself too: both start their own DynamoDB Local (~2 s of CPU a start);
  // the node process's case uses the run's.
  const cases = [
    { signal: "SIGINT", target: "the npm process", ownDynamoDb: true },
    { signal: "SIGTERM", target: "the node process", ownDynamoDb: false },
    { signal: "SIGINT", target: "the process group", ownDynamoDb: true },
  ] as const;
  it.each(cases)(
    "$signal to $target stops every process within 5 s",
    async ({ signal, target, ownDynamoDb }) => {
      const dir = await tempDir();
      const {
        pid: npmPid,
        processes,
        output,
        javaPid,
      } = await startNpm({
        PORT: String(await freePort()),
        REGISTRATION: join(dir, "registration.yaml"),
        ...(!ownDynamoDb && { DYNAMODB_ENDPOINT: inject("dynamodbEndpoint") }),
      });
      expect(output()).toContain(
        "(in memory: queued work is lost at a stop; set DATA_DIR to keep it)",
      );
      // npm runs node itself: no shell in between to swallow the signal.
      const nodePid = processes.find((pid) => commandLine(pid).endsWith("functions/local/main.ts"));
      expect(commandLine(npmPid)).toMatch(/^npm/);
      expect(processTree(npmPid)[1]).toBe(nodePid);
      if (ownDynamoDb) expect(processes).toContain(javaPid);
      else expect(javaPid).toBeUndefined();

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
