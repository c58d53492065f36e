import type { SentEventReader } from "../store/sent-events.ts";

/** The first pause between reads; each next one is twice as long, up to the cap. */
const FIRST_POLL_MS = 50;
const POLL_CAP_MS = 1_000;

/**
 * The event IDs of sends asked for with `recordingEventIds`, in their order, once the outbox has
 * sent them all; undefined if it has not within `timeoutMs` (the sends still go).
 */
export async function waitForSentEvents(
  reader: SentEventReader,
  sendIds: string[],
  timeoutMs: number,
): Promise<string[] | undefined> {
  const deadline = Date.now() + timeoutMs;
  const found = new Map<string, string>();
  for (let pause = FIRST_POLL_MS; ; pause = Math.min(pause * 2, POLL_CAP_MS)) {
    const missing = sendIds.filter((id) => !found.has(id));
    const read = await Promise.all(missing.map((id) => reader.eventIdOf(id)));
    read.forEach((eventId, i) => {
      if (eventId !== undefined) found.set(missing[i] as string, eventId);
    });
    if (found.size === new Set(sendIds).size) return sendIds.map((id) => found.get(id) as string);
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)));
  }
}
