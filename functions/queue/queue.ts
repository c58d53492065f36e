/** One message for a FIFO queue: messages of one group are delivered in order, one at a time. */
export interface FifoMessage {
  groupId: string;
  /** Derived from the content, so a retried enqueue is absorbed by the queue's deduplication. */
  deduplicationId: string;
  body: string;
}

/** Enqueues durably: resolves only once every message is stored, in order within its group. */
export interface FifoQueue {
  send(messages: FifoMessage[]): Promise<void>;
}

/** SQS's size limit for one message and for one batch request (the lowest a queue may have). */
export const MAX_MESSAGE_BYTES = 256 * 1024;

/** What a consumer may do with a message it received, beyond succeeding or failing. */
export interface ReceivedMessageControl {
  /** Makes the message visible again only after `seconds` (0: at once). */
  retryAfter(receiptHandle: string, seconds: number): Promise<void>;
  /** Sets a message aside in the dead-letter queue, so that its group goes on. */
  deadLetter(message: FifoMessage): Promise<void>;
}
