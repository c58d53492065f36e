/** One message for a FIFO queue: messages of one group are delivered in order, one at a time. */
export interface FifoMessage {
  groupId: string;
  /** Derived from the content, so a retried enqueue is absorbed by the queue's deduplication. */
  deduplicationId: string;
  /** JSON text, written by `queueJson`. */
  body: string;
}

/** Enqueues durably: resolves only once every message is stored, in order within its group. */
export interface FifoQueue {
  send(messages: FifoMessage[]): Promise<void>;
}

// What SQS refuses in a message body (it takes #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD, and fauxqs
// nothing beyond the BMP): JSON.stringify already escapes the controls and lone surrogates.
const UNSAFE_FOR_QUEUES = /[\u{10000}-\u{10FFFF}\uFFFE\uFFFF]/gu;
const escapeUnit = (unit: string) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, "0")}`;

/**
 * JSON text that every queue accepts: characters outside the BMP (emoji) and U+FFFE/U+FFFF
 * written as `\u` escapes, which any JSON parser reads back as the same string.
 */
export const queueJson = (value: unknown): string =>
  // split("") yields UTF-16 units: an emoji becomes its surrogate pair, as JSON writes it.
  JSON.stringify(value).replace(UNSAFE_FOR_QUEUES, (char) =>
    char.split("").map(escapeUnit).join(""),
  );

/**
 * SQS's size limit for one message and for one batch request: the most a queue may be set to
 * (the stack and local mode set their queues so).
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

/** What a consumer may do with a message it received, beyond succeeding or failing. */
export interface ReceivedMessageControl {
  /** Makes the message visible again only after `seconds` (0: at once). */
  retryAfter(receiptHandle: string, seconds: number): Promise<void>;
  /** Makes messages visible again at once, in the order given (the order they came in). */
  retryNow(receiptHandles: string[]): Promise<void>;
  /** Sets a message aside in the dead-letter queue, so that its group goes on. */
  deadLetter(message: FifoMessage): Promise<void>;
}

/** Thrown by a consumer to have the message it is handling come back after `delaySeconds`. */
export class RetryLater extends Error {
  override name = "RetryLater";
  constructor(
    readonly delaySeconds: number,
    reason: string,
    options?: ErrorOptions,
  ) {
    super(reason, options);
  }
}

/** A message received from a queue to be inspected, with what the queue says about it. */
export interface InspectedMessage {
  /** The queue's own ID for it: the same however often it is received. */
  id: string;
  receiptHandle: string;
  groupId: string;
  /** Its place in its group: a decimal number, increasing within the group. */
  sequenceNumber: string;
  /** When it was put on this queue (epoch milliseconds). */
  sentAt: number;
  body: string;
}

/** A dead-letter queue read by the operator: taken off it once kept elsewhere. */
export interface DeadLetterQueue {
  /** Up to 10 messages, each group's in order, hidden from other readers for a while. */
  receive(): Promise<InspectedMessage[]>;
  delete(receiptHandle: string): Promise<void>;
}

/** How many messages a queue holds: waiting to be received, being handled, delayed. */
export interface QueueDepth {
  waiting: number;
  inFlight: number;
  delayed: number;
}
