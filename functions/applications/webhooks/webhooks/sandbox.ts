// Imported only where a transformation runs or is checked. The engine runs in a thread of its
// own, started at the first transformation of a process and kept for the next ones: the engine's
// interrupt stops a run at `TRANSFORMATION_TIME_MS`, and a run that never reaches the interrupt
// (a long built-in, a collector thrashing at the memory limit) is ended with its thread at
// `TRANSFORMATION_KILL_MS`, which a new thread replaces.
import { Worker } from "node:worker_threads";
import {
  type SandboxReply,
  type SandboxRequest,
  TRANSFORMATION_KILL_MS,
  TRANSFORMATION_TIME_MS,
} from "./sandbox-protocol.ts";

export { TRANSFORMATION_TIME_MS } from "./sandbox-protocol.ts";

/** A transformation that failed on a payload (or cannot compile), with why. */
export class TransformationError extends Error {}

interface Sandbox {
  worker: Worker;
  /** Settles when the thread has loaded the engine. */
  ready: Promise<void>;
  pending: Map<number, (reply: SandboxReply) => void>;
  /** Runs waiting for it: while there is one, the thread keeps the process alive. */
  busy: number;
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

let sandbox: Sandbox | undefined;
let nextId = 1;

function startSandbox(): Sandbox {
  const worker = newWorker();
  const pending = new Map<number, (reply: SandboxReply) => void>();
  const ready = new Promise<void>((resolve, reject) => {
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
        } else resolve();
        return;
      }
      pending.get(reply.id)?.(reply);
      pending.delete(reply.id);
    });
    const fail = (error: Error) => {
      reject(error);
      for (const settle of pending.values())
        settle({ id: -1, error: `the engine failed: ${error.message}` });
      pending.clear();
      if (sandbox?.worker === worker) sandbox = undefined;
    };
    worker.on("error", fail);
    worker.on("exit", (code) => fail(new Error(`its thread exited (${code})`)));
  });
  // An idle thread must not keep the process alive (unref after the listeners, which ref it);
  // `runTransformation` refs it while it waits.
  worker.unref();
  return { worker, ready, pending, busy: 0 };
}

/**
 * Runs a transformation on `data` in QuickJS compiled to WebAssembly, in its thread: a fresh
 * runtime per run, with the ECMAScript built-ins alone (no module loader, no timers, no I/O,
 * nothing of the host passed in), held to a memory limit and a bounded stack. Returns the JSON
 * value it gave. `compileOnly` checks the code's syntax without running it.
 */
export async function runTransformation(
  code: string,
  data: unknown,
  options: { compileOnly?: boolean } = {},
): Promise<unknown> {
  sandbox ??= startSandbox();
  const current = sandbox;
  current.busy++;
  current.worker.ref();
  try {
    return await runIn(current, code, data, options);
  } finally {
    if (--current.busy === 0) current.worker.unref();
  }
}

async function runIn(
  current: Sandbox,
  code: string,
  data: unknown,
  options: { compileOnly?: boolean },
): Promise<unknown> {
  await current.ready;
  const request: SandboxRequest = {
    id: nextId++,
    code,
    dataJson: JSON.stringify(data) ?? "null",
    compileOnly: options.compileOnly === true,
  };
  const reply = await new Promise<SandboxReply>((resolve) => {
    const timer = setTimeout(() => {
      current.pending.delete(request.id);
      if (sandbox === current) sandbox = undefined;
      void current.worker.terminate();
      resolve({ id: request.id, error: `stopped: it ran over ${TRANSFORMATION_TIME_MS} ms` });
    }, TRANSFORMATION_KILL_MS);
    current.pending.set(request.id, (answer) => {
      clearTimeout(timer);
      resolve(answer);
    });
    current.worker.postMessage(request);
  });
  if ("error" in reply) throw new TransformationError(reply.error);
  return reply.value;
}
