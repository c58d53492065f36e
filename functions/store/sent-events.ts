/**
 * The event IDs the homeserver gave the sends that asked for theirs (`Actions.recordingEventIds`),
 * by action ID: the outbox records them, a route that waits for its message reads them.
 */
export interface SentEventRecorder {
  recordEventId(actionId: string, eventId: string): Promise<void>;
}

export interface SentEventReader {
  /** The event ID of the send, once the homeserver has taken it. */
  eventIdOf(actionId: string): Promise<string | undefined>;
}
