/** The time a transformation may run, per payload, by the engine's own interrupt. */
export const TRANSFORMATION_TIME_MS = 100;
/**
 * The hard bound: a run whose thread has not answered by then (a built-in that runs long without
 * reaching the interrupt, a collector thrashing at the memory limit) is ended with its thread.
 */
export const TRANSFORMATION_KILL_MS = 1000;
/** The memory its engine may allocate (its heap, the payload included). */
export const TRANSFORMATION_MEMORY_BYTES = 8 * 1024 * 1024;

/** What the host asks of the sandbox thread. */
export interface SandboxRequest {
  id: number;
  code: string;
  /** The payload as JSON text. */
  dataJson: string;
  compileOnly: boolean;
}

/**
 * What kind of failure, in words of ours alone: what a room is told. The `error` beside it may
 * hold text of the payload's (a message the code built from it), so it goes to the sender only.
 */
export type FailureKind =
  | "Error"
  | "TypeError"
  | "RangeError"
  | "ReferenceError"
  | "SyntaxError"
  | "URIError"
  | "EvalError"
  | "AggregateError"
  | "InternalError"
  | "a thrown value"
  | "over the time limit"
  | "out of memory"
  | "stack overflow"
  | "result too large"
  | "result not JSON"
  | "the engine failed";

/** Names of errors the engine itself defines: any other name is a thrown value's. */
export const ERROR_NAMES: readonly FailureKind[] = [
  "Error",
  "TypeError",
  "RangeError",
  "ReferenceError",
  "SyntaxError",
  "URIError",
  "EvalError",
  "AggregateError",
  "InternalError",
];

/**
 * Its answer: the result as a JSON value, or why the code failed. `broken`: the engine may be
 * left in a bad state (a failure that was not the code's): the host replaces its thread.
 */
export type SandboxReply =
  | { id: number; value: unknown }
  | { id: number; error: string; kind: FailureKind; broken?: boolean };
