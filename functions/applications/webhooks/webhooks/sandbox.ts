// Imported only where a transformation runs or is checked. Engines run in threads of their own,
// started as runs need them (at most `SANDBOX_THREADS`) and kept for the next ones. Each thread
// runs one transformation at a time, so that nothing one run does (its time, a crash, a thread
// ended) reaches another: runs wait in a queue here, and each one's time starts when its thread
// takes it. The engine's interrupt stops a run at `TRANSFORMATION_TIME_MS`; a run that never
// reaches the interrupt (a long built-in, a collector thrashing at the memory limit) is ended with
// its thread at `TRANSFORMATION_KILL_MS`, and a new thread takes the next run.
import { Worker } from "node:worker_threads";
import {
  type FailureKind,
  type SandboxReply,
  type SandboxRequest,
  TRANSFORMATION_KILL_MS,
  TRANSFORMATION_TIME_MS,
} from "./sandbox-protocol.ts";

export { type FailureKind, TRANSFORMATION_TIME_MS } from "./sandbox-protocol.ts";

/**
 * A transformation that failed on a payload (or cannot compile), with why: `kind` in words of
 * ours (what a room may be told), the message maybe with the payload's text (for the sender).
 * `ofTheCode` is false when the run never started (no engine could be had): no fault of its code.
 */
export class TransformationError extends Error {
  constructor(
    message: string,
    readonly kind: FailureKind,
    readonly ofTheCode = true,
  ) {
    super(message);
  }
}

/** How many engines run at once: Lambda serves one request per instance; local mode more. */
export const SANDBOX_THREADS = 2;

interface Run {
  request: SandboxRequest;
  settle: (outcome: { value: unknown } | TransformationError) => void;
}

interface Engine {
  worker: Worker;
  /** Set once the thread has loaded the engine. */
  ready: boolean;
  /** The run it is doing, and the timer that ends the thread if it runs too long. */
  running?: { run: Run; timer: NodeJS.Timeout };
}

// The bundle has the thread's code beside it, built from this folder's sandbox-worker.ts
// (infra/bundling.ts); from the sources (local mode, tests), the thread registers tsx first.
const fromSources = import.meta.url.endsWith(".ts");
const workerFile = new URL(
  fromSources ? "./sandbox-worker.ts" : "./sandbox-worker.mjs",
  import.meta.url,
);
const newWorker = () =>
  fromSources
    ? new Worker(
        `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(workerFile.href)}); });`,
        { eval: true },
      )
    : new Worker(workerFile);

const engines = new Set<Engine>();
const queue: Run[] = [];
let nextId = 1;

/** Ends an engine's thread and forgets it; its run, if any, settles with `failure`. */
function retire(engine: Engine, failure?: TransformationError) {
  if (!engines.delete(engine)) return;
  if (engine.running) {
    clearTimeout(engine.running.timer);
    if (failure) engine.running.run.settle(failure);
    engine.running = undefined;
  }
  void engine.worker.terminate();
}

function startEngine(): Engine {
  const worker = newWorker();
  const engine: Engine = { worker, ready: false };
  engines.add(engine);
  let greetings = 0;
  worker.on("message", (reply: SandboxReply) => {
    if (reply.id === 0) {
      // The thread's first message, then its answer to a first request: a thread's first
      // exchange takes hundreds of milliseconds, and no transformation is timed through it.
      if (++greetings === 1) {
        worker.postMessage({
          id: 0,
          code: "return null;",
          dataJson: "null",
          compileOnly: false,
        } satisfies SandboxRequest);
      } else {
        engine.ready = true;
        dispatch();
      }
      return;
    }
    const running = engine.running;
    if (running?.run.request.id !== reply.id) return;
    clearTimeout(running.timer);
    engine.running = undefined;
    running.run.settle(
      "error" in reply ? new TransformationError(reply.error, reply.kind) : { value: reply.value },
    );
    if ("error" in reply && reply.broken) retire(engine);
    dispatch();
  });
  const fail = (error: Error) => {
    // Both an error and the exit that follows it come here, or a thread ended on purpose.
    if (!engines.has(engine)) return;
    const starting = !engine.ready;
    // A thread that dies during a run fails that run alone; one that never started fails the
    // first run waiting (not its code's fault), so that a missing engine cannot loop for ever.
    retire(
      engine,
      new TransformationError(`the engine failed: ${error.message}`, "the engine failed"),
    );
    if (starting) {
      queue
        .shift()
        ?.settle(
          new TransformationError(
            `no engine could be started: ${error.message}`,
            "the engine failed",
            false,
          ),
        );
    }
    dispatch();
  };
  worker.on("error", fail);
  worker.on("exit", (code) => fail(new Error(`its thread exited (${code})`)));
  return engine;
}

/**
 * A thread keeps the process alive while it runs or starts for a waiting run, never idle (set
 * after the listeners, which ref it).
 */
function holdProcess() {
  for (const engine of engines) {
    if (engine.running || (!engine.ready && queue.length > 0)) engine.worker.ref();
    else engine.worker.unref();
  }
}

/** Gives each waiting run to an idle engine, starting engines up to `SANDBOX_THREADS`. */
function dispatch() {
  while (queue.length > 0) {
    const idle = [...engines].find((engine) => engine.ready && !engine.running);
    if (!idle) {
      const starting = [...engines].filter((engine) => !engine.ready).length;
      if (engines.size < SANDBOX_THREADS && starting < queue.length) startEngine();
      break;
    }
    const run = queue.shift() as Run;
    // Its time starts now, when its thread takes it: never while it waited for another.
    const timer = setTimeout(() => {
      retire(
        idle,
        new TransformationError(
          `stopped: it ran over ${TRANSFORMATION_TIME_MS} ms`,
          "over the time limit",
        ),
      );
      // The thread's exit finds it forgotten and does nothing: the runs waiting need a new
      // engine now, or they would wait for the next call.
      dispatch();
    }, TRANSFORMATION_KILL_MS);
    idle.running = { run, timer };
    idle.worker.postMessage(run.request);
  }
  holdProcess();
}

/**
 * Runs a transformation on `data` in QuickJS compiled to WebAssembly, in a thread of its own: a
 * fresh runtime per run, with the ECMAScript built-ins alone (no module loader, no timers, no
 * I/O, nothing of the host passed in), held to a memory limit and a bounded stack. Returns the
 * JSON value it gave. `compileOnly` checks the code's syntax without running it.
 */
export async function runTransformation(
  code: string,
  data: unknown,
  options: { compileOnly?: boolean } = {},
): Promise<unknown> {
  const request: SandboxRequest = {
    id: nextId++,
    code,
    dataJson: JSON.stringify(data) ?? "null",
    compileOnly: options.compileOnly === true,
  };
  const outcome = await new Promise<{ value: unknown } | TransformationError>((settle) => {
    queue.push({ request, settle });
    dispatch();
  });
  if (outcome instanceof TransformationError) throw outcome;
  return outcome.value;
}
