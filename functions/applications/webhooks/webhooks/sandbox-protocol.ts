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

/** Its answer: the result as a JSON value, or why the code failed. */
export type SandboxReply = { id: number; value: unknown } | { id: number; error: string };
