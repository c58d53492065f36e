// Imported only where a transformation runs or is checked; the engine's WebAssembly (about
// 500 KB, a file of its own beside the bundle) is read and compiled at its first use in a
// process, never at cold start.
import { newQuickJSWASMModuleFromVariant, type QuickJSWASMModule } from "quickjs-emscripten-core";

/** The time a transformation may run, per payload. */
export const TRANSFORMATION_TIME_MS = 100;
/** The memory its engine may allocate (its heap, the payload included). */
export const TRANSFORMATION_MEMORY_BYTES = 8 * 1024 * 1024;
const STACK_BYTES = 256 * 1024;
/** The longest result taken back, as JSON. */
const MAX_RESULT_BYTES = 128 * 1024;

/** A transformation that failed on a payload (or cannot compile), with why. */
export class TransformationError extends Error {}

let engine: Promise<QuickJSWASMModule> | undefined;

/**
 * The engine, loaded once per process, and run once on a trivial program without a deadline:
 * the first context and run of a process cost V8's compilation of the WebAssembly (over 100 ms
 * on a loaded machine), which no transformation should be stopped for.
 */
async function loadEngine(): Promise<QuickJSWASMModule> {
  const quickjs = await newQuickJSWASMModuleFromVariant(
    import("@jitl/quickjs-wasmfile-release-sync"),
  );
  const runtime = quickjs.newRuntime();
  const vm = runtime.newContext();
  const warmUp = vm.evalCode(
    program('return { text: [data.n, 2].map(String).join(" ") };', '{"n":1}'),
  );
  (warmUp.error ?? warmUp.value).dispose();
  vm.dispose();
  runtime.dispose();
  return quickjs;
}

/**
 * The code as the body of a function of `data` that returns the message: `return {…}` or, as
 * hookshot's scripts do, `result = {…}`. Its value leaves the engine as JSON text.
 */
const program = (code: string, dataJson: string) =>
  `"use strict";
const __result = (function (data) {
let result;
${code}
;return result;
})(JSON.parse(${JSON.stringify(dataJson)}));
JSON.stringify(__result === undefined ? null : __result) ?? "null";`;

/**
 * Runs a transformation on `data` in QuickJS compiled to WebAssembly: a fresh runtime per run,
 * with the ECMAScript built-ins alone (no module loader, no timers, no I/O, nothing of the host
 * passed in), stopped after `TRANSFORMATION_TIME_MS` by the engine's interrupt handler, and held
 * to `TRANSFORMATION_MEMORY_BYTES` and a bounded stack. Returns the JSON value it gave.
 * `compileOnly` checks the code's syntax without running it.
 */
export async function runTransformation(
  code: string,
  data: unknown,
  options: { compileOnly?: boolean } = {},
): Promise<unknown> {
  engine ??= loadEngine();
  const quickjs = await engine;
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
        interrupted = Date.now() > deadline;
        return interrupted;
      });
      const outcome = vm.evalCode(
        program(code, JSON.stringify(data) ?? "null"),
        "transformation.js",
        {
          compileOnly: options.compileOnly === true,
        },
      );
      if (outcome.error) {
        const thrown = vm.dump(outcome.error) as { name?: unknown; message?: unknown } | null;
        outcome.error.dispose();
        throw new TransformationError(
          interrupted
            ? `stopped: it ran over ${TRANSFORMATION_TIME_MS} ms`
            : describeThrown(thrown),
        );
      }
      if (options.compileOnly) {
        outcome.value.dispose();
        return null;
      }
      const json = vm.getString(outcome.value);
      outcome.value.dispose();
      if (Buffer.byteLength(json) > MAX_RESULT_BYTES) {
        throw new TransformationError(`its result is over ${MAX_RESULT_BYTES} bytes`);
      }
      return JSON.parse(json);
    } finally {
      vm.dispose();
    }
  } finally {
    runtime.dispose();
  }
}

// The error's name and message only: its stack names lines of the wrapper, not of the code.
function describeThrown(thrown: { name?: unknown; message?: unknown } | null): string {
  if (thrown === null || typeof thrown !== "object") {
    return `it threw ${String(JSON.stringify(thrown)).slice(0, 200)}`;
  }
  const name = typeof thrown.name === "string" ? thrown.name : "Error";
  const message = typeof thrown.message === "string" ? thrown.message : "";
  return `${name}: ${message}`.slice(0, 300);
}
