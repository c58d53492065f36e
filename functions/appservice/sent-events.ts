import type { LinkMap } from "../store/links.ts";
import type { SentEventReader } from "../store/sent-events.ts";

/** The first pause between reads; each next one is twice as long, up to the cap. */
const FIRST_POLL_MS = 50;
const POLL_CAP_MS = 1_000;

/** What `read` gives once it gives something, read again with growing pauses; undefined past `timeoutMs`. */
async function pollFor<T>(
  read: () => Promise<T | undefined>,
  timeoutMs: number,
): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (let pause = FIRST_POLL_MS; ; pause = Math.min(pause * 2, POLL_CAP_MS)) {
    const value = await read();
    if (value !== undefined) return value;
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)));
  }
}

/**
 * The event IDs of sends asked for with `recordingEventIds`, in their order, once the outbox has
 * sent them all; undefined if it has not within `timeoutMs` (the sends still go).
 */
export function waitForSentEvents(
  reader: SentEventReader,
  sendIds: string[],
  timeoutMs: number,
): Promise<string[] | undefined> {
  const found = new Map<string, string>();
  return pollFor(async () => {
    const missing = sendIds.filter((id) => !found.has(id));
    const read = await Promise.all(missing.map((id) => reader.eventIdOf(id)));
    read.forEach((eventId, i) => {
      if (eventId !== undefined) found.set(missing[i] as string, eventId);
    });
    return found.size === new Set(sendIds).size
      ? sendIds.map((id) => found.get(id) as string)
      : undefined;
  }, timeoutMs);
}

/**
 * The event ID a remote message's send was given, from the room's message map, read again until
 * the outbox has linked it or `timeoutMs` has passed (undefined then: the send is still queued,
 * failed for good, or was never asked for).
 */
export const waitForEventId = (map: LinkMap, remoteId: string, timeoutMs: number) =>
  pollFor(async () => (await map.byRemoteId(remoteId))?.matrixId, timeoutMs);
