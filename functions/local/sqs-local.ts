import { buildApp } from "fauxqs";

/** A message of a FIFO queue as fauxqs holds it. */
export interface HeldMessage {
  body: string;
  groupId: string;
  deduplicationId: string;
  /** How many times it was received (and not deleted). */
  receiveCount: number;
  /** When a message received and not deleted becomes visible again (ms since the epoch). */
  visibleAt?: number;
}

/** What fauxqs's inspection endpoint answers: every message of a queue, by state. */
interface FauxqsMessage {
  body: string;
  sentTimestamp: number;
  messageGroupId: string;
  messageDeduplicationId: string;
  approximateReceiveCount: number;
}
interface FauxqsQueueState {
  messages: {
    ready: FauxqsMessage[];
    delayed: FauxqsMessage[];
    inflight: { message: FauxqsMessage; visibilityDeadline: number }[];
  };
}

export interface SqsLocal {
  endpoint: string;
  /** Refuses every request from now on: what `messages` then reads can no longer change. */
  stopServing(): Promise<void>;
  /** A FIFO queue's messages, received ones included, each group's in the order it delivers them. */
  messages(queueName: string): Promise<HeldMessage[]>;
  stop(): Promise<void>;
}

/** Starts fauxqs (SQS's JSON protocol, in memory) in this process, bound to 127.0.0.1. */
export async function startSqsLocal(): Promise<SqsLocal> {
  const app = buildApp({ logger: false });
  const address = await app.listen({ port: 0, host: "127.0.0.1" });
  const state = async (queueName: string) => {
    // fauxqs's own inspection route, called in process (it needs no listening server).
    const response = await app.inject({
      method: "GET",
      url: `/_fauxqs/queues/${encodeURIComponent(queueName)}`,
    });
    if (response.statusCode !== 200)
      throw new Error(`fauxqs: no queue ${queueName}: ${response.body}`);
    return (response.json() as FauxqsQueueState).messages;
  };
  return {
    endpoint: address,
    stopServing: () =>
      new Promise<void>((resolve) => {
        app.server.close(() => resolve());
        app.server.closeAllConnections();
      }),
    async messages(queueName) {
      const { ready, delayed, inflight } = await state(queueName);
      const held = (message: FauxqsMessage, visibleAt?: number): HeldMessage => ({
        body: message.body,
        groupId: message.messageGroupId,
        deduplicationId: message.messageDeduplicationId,
        receiveCount: message.approximateReceiveCount,
        ...(visibleAt !== undefined && { visibleAt }),
      });
      // fauxqs hands out one message of a group at a time, so a group's received message is its
      // first; then come the group's waiting messages in order.
      return [
        ...inflight.map(({ message, visibilityDeadline }) => held(message, visibilityDeadline)),
        ...[...ready, ...delayed].map((message) => held(message)),
      ];
    },
    stop: () => app.close(),
  };
}

/**
 * How long the oldest message of a fauxqs queue has been there (undefined when empty or when the
 * endpoint is no fauxqs), asked over HTTP so that any thread of local mode can ask.
 */
export async function oldestAgeSeconds(
  endpoint: string,
  queueName: string,
): Promise<number | undefined> {
  const response = await fetch(
    new URL(`/_fauxqs/queues/${encodeURIComponent(queueName)}`, endpoint),
  ).catch(() => undefined);
  if (!response?.ok) return undefined;
  const { ready, delayed, inflight } = ((await response.json()) as FauxqsQueueState).messages;
  const sent = [...ready, ...delayed, ...inflight.map(({ message }) => message)].map(
    (message) => message.sentTimestamp,
  );
  return sent.length > 0 ? Math.round((Date.now() - Math.min(...sent)) / 1000) : undefined;
}
