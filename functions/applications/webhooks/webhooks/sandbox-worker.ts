// The thread that runs transformations (see sandbox.ts): QuickJS compiled to WebAssembly. The
// engine's WebAssembly (about 500 KB, a file of its own beside the bundle) is read and compiled
// when the thread starts, which happens at the first transformation of a process.
import { parentPort } from "node:worker_threads";
import { newQuickJSWASMModuleFromVariant, type QuickJSWASMModule } from "quickjs-emscripten-core";
import {
  ERROR_NAMES,
  type FailureKind,
  type SandboxReply,
  type SandboxRequest,
  TRANSFORMATION_MEMORY_BYTES,
  TRANSFORMATION_TIME_MS,
} from "./sandbox-protocol.ts";

const STACK_BYTES = 256 * 1024;
/** The longest result taken back, as JSON. */
const MAX_RESULT_BYTES = 128 * 1024;

/**
 * The code as the body of a function of `data` that returns the message: `return {…}` or, as
 * hookshot's scripts do, `result = {…}`. Its value leaves the engine as JSON text, written by the
 * `JSON.stringify` taken before the code ran (the code may replace the global one).
 */
const program = (code: string, dataJson: string) =>
  `"use strict";
const __stringify = JSON.stringify;
const __result = (function (data) {
let result;
${code}
;return result;
})(JSON.parse(${JSON.stringify(dataJson)}));
__stringify(__result === undefined ? null : __result) ?? "null";`;

/** A failure of the code's, with its kind (our words) and its message (maybe the payload's). */
class Failure extends Error {
  constructor(
    message: string,
    readonly kind: FailureKind,
  ) {
    super(message);
  }
}

// The error's name and message only: its stack names lines of the wrapper, not of the code.
function failureOf(thrown: { name?: unknown; message?: unknown } | null): Failure {
  if (thrown === null || typeof thrown !== "object") {
    return new Failure(
      `it threw ${String(JSON.stringify(thrown)).slice(0, 200)}`,
      "a thrown value",
    );
  }
  const name = typeof thrown.name === "string" ? thrown.name : "Error";
  const message = typeof thrown.message === "string" ? thrown.message : "";
  const engineError = (ERROR_NAMES as readonly string[]).includes(name);
  const kind: FailureKind =
    name === "InternalError" && /out of memory/.test(message)
      ? "out of memory"
      : name === "InternalError" && /stack overflow/.test(message)
        ? "stack overflow"
        : engineError
          ? (name as FailureKind)
          : "a thrown value";
  return new Failure(`${name}: ${message}`.slice(0, 300), kind);
}

/**
 * One run in a fresh runtime with the ECMAScript built-ins alone (no module loader, no timers,
 * no I/O, nothing of the host passed in), stopped after `TRANSFORMATION_TIME_MS` by the engine's
 * interrupt handler, held to `TRANSFORMATION_MEMORY_BYTES` and a bounded stack.
 */
function evaluate(quickjs: QuickJSWASMModule, request: SandboxRequest, timed = true): unknown {
  const runtime = quickjs.newRuntime();
  try {
    runtime.setMemoryLimit(TRANSFORMATION_MEMORY_BYTES);
    runtime.setMaxStackSize(STACK_BYTES);
    const vm = runtime.newContext();
    try {
      // From here: the run alone is timed.
      const deadline = Date.now() + TRANSFORMATION_TIME_MS;
      let interrupted = false;
      runtime.setInterruptHandler(() => {
        interrupted = timed && Date.now() > deadline;
        return interrupted;
      });
      const outcome = vm.evalCode(program(request.code, request.dataJson), "transformation.js", {
        compileOnly: request.compileOnly,
      });
      if (outcome.error) {
        const thrown = vm.dump(outcome.error) as { name?: unknown; message?: unknown } | null;
        outcome.error.dispose();
        throw interrupted
          ? new Failure(`stopped: it ran over ${TRANSFORMATION_TIME_MS} ms`, "over the time limit")
          : failureOf(thrown);
      }
      if (request.compileOnly) {
        outcome.value.dispose();
        return null;
      }
      const isString = vm.typeof(outcome.value) === "string";
      const json = isString ? vm.getString(outcome.value) : "";
      outcome.value.dispose();
      if (!isString) throw new Failure("its result cannot be written as JSON", "result not JSON");
      if (Buffer.byteLength(json) > MAX_RESULT_BYTES) {
        throw new Failure(`its result is over ${MAX_RESULT_BYTES} bytes`, "result too large");
      }
      try {
        return JSON.parse(json);
      } catch {
        throw new Failure("its result is not JSON", "result not JSON");
      }
    } finally {
      vm.dispose();
    }
  } finally {
    runtime.dispose();
  }
}

const quickjs = await newQuickJSWASMModuleFromVariant(
  import("@jitl/quickjs-wasmfile-release-sync"),
);
// Once without a deadline: the first run of a process costs V8's compilation of the
// WebAssembly (over 100 ms on a loaded machine), which no transformation should be stopped for.
evaluate(
  quickjs,
  {
    id: 0,
    code: "return { text: [data.n, 2].map(String).join(' ') };",
    dataJson: '{"n":1}',
    compileOnly: false,
  },
  false,
);

const port = parentPort;
if (!port) throw new Error("sandbox-worker runs as a worker thread");
port.on("message", (request: SandboxRequest) => {
  let reply: SandboxReply;
  try {
    reply = { id: request.id, value: evaluate(quickjs, request) };
  } catch (error) {
    // Anything else is the engine's own failure, answered for this run alone: the host replaces
    // this thread, and no other run is touched.
    reply =
      error instanceof Failure
        ? { id: request.id, error: error.message, kind: error.kind }
        : {
            id: request.id,
            error: `the engine failed: ${(error as Error).message}`.slice(0, 300),
            kind: "the engine failed",
            broken: true,
          };
  }
  port.postMessage(reply);
});
port.postMessage({ id: 0, value: "ready" } satisfies SandboxReply);
