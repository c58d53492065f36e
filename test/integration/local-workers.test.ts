import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import type { LocalWorkersOptions } from "../../functions/local/local.ts";
import type { Log } from "../../functions/shared/log.ts";
import {
  deadLetters,
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  startTestWorkers,
  tempDir,
  waitUntilDrained,
} from "../support/appservice.ts";
import { sleep, waitFor } from "../support/wait.ts";
import type { Orders } from "../support/worker-application.ts";

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Local mode with each function in a worker thread, running `worker-application.ts`. */
async function startWithWorkers(
  visibilityTimeoutSeconds: number,
  options: Partial<LocalWorkersOptions> = {},
) {
  const errors: { message: string; attributes: Record<string, unknown> }[] = [];
  const log: Log = {
    debug() {},
    info() {},
    warn() {},
    error: (message, attributes = {}) => errors.push({ message, attributes }),
  };
  const local = await startTestWorkers({
    applicationModule: new URL("../support/worker-application.ts", import.meta.url).href,
    log,
    visibilityTimeoutSeconds,
    ...options,
  });
  cleanups.push(() => local.stop());
  const dir = await tempDir();
  const record = join(dir, "record");
  writeFileSync(record, "");
  const lines = () => readFileSync(record, "utf8").split("\n").filter(Boolean);
  const event = (orders: Partial<Orders> = {}): ClientEvent =>
    makeEvent("!room:test.local", "", { content: { record, ...orders } });
  let txn = 0;
  const ack = async (events: ClientEvent[]) => {
    const response = await putTransaction(
      local.url,
      `t${++txn}`,
      { events },
      { token: local.registration.hs_token },
    );
    return response.status;
  };
  return { local, errors, dir, lines, event, ack };
}

const handledOnce = (lines: string[], events: ClientEvent[]) =>
  events.every((e) => lines.filter((line) => line === `handled ${e.event_id}`).length === 1);

describe("local mode with each function in a worker thread", () => {
  it("acks while the events consumer keeps the CPU busy", async () => {
    const { local, dir, lines, event, ack } = await startWithWorkers(30);
    const burnUntil = join(dir, "stop-burning");
    const burn = event({ burnUntil });
    expect(await ack([burn])).toBe(200);
    await waitFor(() => lines().includes(`burning ${burn.event_id}`), 30_000, "the burn");
    // In one thread these acks would wait for the burn, which ends only once they are done
    // (or after a minute).
    const others = Array.from({ length: 5 }, () => event());
    for (const other of others) expect(await ack([other])).toBe(200);
    expect(lines()).not.toContain(`handled ${burn.event_id}`);
    writeFileSync(burnUntil, "");
    await waitFor(() => handledOnce(lines(), [burn, ...others]), 30_000, "every event handled");
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(handledOnce(lines(), [burn, ...others])).toBe(true);
  });

  it("acks after the events consumer crashes; the consumer starts again, logged, and its messages are handled once", async () => {
    // The message whose handler crashed comes back 2 s later.
    const { local, errors, dir, lines, event, ack } = await startWithWorkers(2);
    const crashOnce = join(dir, "crashed");
    const crash = event({ crashOnce });
    expect(await ack([crash])).toBe(200);
    await waitFor(() => errors.length > 0, 30_000, "the crash to be logged");
    expect(errors[0]?.message).toBe("the events function crashed; starting it again");
    expect(String(errors[0]?.attributes.error)).toContain("injected crash");
    expect(existsSync(crashOnce)).toBe(true);
    // Acked while the consumer is down or starting again.
    const others = Array.from({ length: 3 }, () => event());
    for (const other of others) expect(await ack([other])).toBe(200);
    await waitFor(() => handledOnce(lines(), [crash, ...others]), 30_000, "every event handled");
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(handledOnce(lines(), [crash, ...others])).toBe(true);
    expect(errors).toHaveLength(1);
  });

  it("the HTTP functions crash → started again on the same port, logged; acks go on", async () => {
    const { local, errors, event, ack } = await startWithWorkers(30);
    // The request dies with the thread: its connection is cut, unanswered.
    await expect(fetch(`${local.url}/crash`, { method: "POST" })).rejects.toThrow();
    await waitFor(() => errors.length > 0, 30_000, "the crash to be logged");
    expect(errors[0]?.message).toBe("the http function crashed; starting it again");
    const deadline = Date.now() + 30_000;
    const healthy = () =>
      fetch(`${local.url}/health`).then(
        (response) => response.status === 200,
        () => false,
      );
    while (!(await healthy())) {
      if (Date.now() > deadline) throw new Error("the HTTP functions did not answer again");
      await sleep(100);
    }
    expect(await ack([event()])).toBe(200);
  });

  // Before: a run that timed out or crashed was never counted, so its item came back for ever
  // (~1,000 receives × the visibility timeout, ~50 h in AWS), then SQS's redrive set it aside
  // with the room's events batched behind it.
  const poisonRuns = [
    { kind: "hangs past its function's timeout", orders: { hang: true }, timeoutMs: 2_000 },
    { kind: "kills its function's thread", orders: { crashAlways: true }, timeoutMs: undefined },
  ];
  for (const { kind, orders, timeoutMs } of poisonRuns) {
    it(`an event whose handler ${kind} → dead-lettered alone after the configured attempts; the room's next event is handled`, async () => {
      const maxAttempts = 3;
      const { local, lines, event, ack } = await startWithWorkers(3, {
        inboundRetry: { backoff: { baseSeconds: 1, capSeconds: 1 }, maxAttempts },
        ...(timeoutMs !== undefined && { eventsTimeoutMs: timeoutMs }),
      });
      const poison = event(orders);
      const next = event();
      expect(await ack([poison, next])).toBe(200);
      await waitFor(() => handledOnce(lines(), [next]), 40_000, "the room's next event");
      expect(await waitUntilDrained(local)).toEqual({
        inboundDeadLetters: 1,
        outboundDeadLetters: 0,
      });
      expect(lines().filter((line) => line === `running ${poison.event_id}`)).toHaveLength(
        maxAttempts,
      );
      expect(lines()).not.toContain(`handled ${poison.event_id}`);
      expect(handledOnce(lines(), [next])).toBe(true);
      expect(await deadLetters(local, "inbound")).toEqual([
        expect.objectContaining({
          item: expect.objectContaining({ id: poison.event_id }),
          reason: { error: expect.stringContaining("timed out or its process died") },
          attempts: maxAttempts,
        }),
      ]);
    });
  }
});
