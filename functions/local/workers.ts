import { Worker } from "node:worker_threads";
import type { LogLine } from "../operator/traffic.ts";
import type { Log } from "../shared/log.ts";
import type { CountingMetrics } from "../shared/metrics.ts";
import type { FunctionWorkerData, FunctionWorkerMessage } from "./function-worker.ts";

const workerModule = new URL("./function-worker.ts", import.meta.url).href;
/**
 * A worker does not inherit the TypeScript loader on every Node release (Node 20's `--import
 * tsx` stays on the main thread): each worker registers tsx's ESM hooks itself, then loads the
 * function. Its own `execArgv` is empty so that no release registers them twice.
 */
const bootstrap = `import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))})
  .then(({ register }) => { register(); return import(${JSON.stringify(workerModule)}); })`;

/** How long a crashed function waits before it is started again. */
export const RESTART_DELAY_MS = 1000;
/** How long a stopping function may take to finish what it is doing before it is cut off. */
const STOP_WAIT_MS = 10_000;

export interface SupervisedFunction {
  /** Batches the consumer is handling now (0 for the HTTP functions). */
  busy(): number;
  /** Hands the function a line of recent traffic written elsewhere. */
  addLogLine(line: LogLine): void;
  stop(): Promise<void>;
}

/**
 * Runs one of local mode's functions in a worker thread of its own, as Lambda runs each function
 * apart, and starts it again (after `RESTART_DELAY_MS`) whenever it crashes: its crash is logged,
 * and the messages it was handling reappear on their queue after their visibility timeout, as in
 * AWS. Its counts are added to `metrics`. Resolves once the function is ready.
 */
export async function superviseFunction(
  data: FunctionWorkerData,
  log: Log,
  metrics: CountingMetrics,
  /** Where its lines of recent traffic go. */
  onLogLine: (line: LogLine) => void,
): Promise<SupervisedFunction> {
  let worker: Worker;
  let running = false;
  let busy = 0;
  let stopping = false;
  let restartTimer: NodeJS.Timeout | undefined;

  const start = () =>
    new Promise<void>((resolve, reject) => {
      worker = new Worker(bootstrap, { eval: true, workerData: data, execArgv: [] });
      running = true;
      busy = 0;
      let ready = false;
      let crash: unknown;
      worker.on("message", (message: FunctionWorkerMessage) => {
        if ("ready" in message) {
          ready = true;
          resolve();
        } else if ("counts" in message) {
          for (const [name, value] of message.counts) metrics.count(name, value);
        } else if ("busy" in message) busy = message.busy;
        else if ("log" in message) onLogLine(message.log);
      });
      worker.on("error", (error) => {
        crash = error;
      });
      worker.on("exit", (code) => {
        running = false;
        busy = 0;
        if (!ready) {
          reject(new Error(`The ${data.role} function failed to start`, { cause: crash ?? code }));
          return;
        }
        if (stopping) return;
        log.error(`the ${data.role} function crashed; starting it again`, {
          function: data.role,
          exitCode: code,
          error: crash,
        });
        const restart = () => {
          restartTimer = undefined;
          if (stopping) return;
          start().catch((error) => {
            log.error(`the ${data.role} function could not start again; trying again`, {
              function: data.role,
              error,
            });
            if (!stopping) restartTimer = setTimeout(restart, RESTART_DELAY_MS);
          });
        };
        restartTimer = setTimeout(restart, RESTART_DELAY_MS);
      });
    });

  await start();
  return {
    busy: () => busy,
    addLogLine(line) {
      if (running) worker.postMessage({ log: line });
    },
    async stop() {
      stopping = true;
      clearTimeout(restartTimer);
      if (!running) return;
      const current = worker;
      const stopped = new Promise<void>((resolve) => {
        current.on("message", (message: FunctionWorkerMessage) => {
          if ("stopped" in message) resolve();
        });
        current.once("exit", () => resolve());
      });
      current.postMessage("stop");
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        stopped.then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), STOP_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (!finished) log.warn(`the ${data.role} function did not stop in time: cut off`);
      await current.terminate();
    },
  };
}
