/** Which queue a dead letter was set aside from. */
export type Direction = "inbound" | "outbound";

/**
 * A dead letter taken off its dead-letter queue and kept where the operator can list, replay and
 * discard dead letters one by one, in any order (a FIFO queue hands out a group's messages only in
 * order, one batch at a time).
 */
export interface StoredDeadLetter {
  direction: Direction;
  /** The dead-letter queue's message ID. */
  id: string;
  /** The FIFO group it came from: its room (or user). */
  groupId: string;
  /** Its place in its group, as the dead-letter queue numbered it. */
  sequenceNumber: string;
  /** When it was dead-lettered (epoch milliseconds). */
  sentAt: number;
  /** The dead-letter queue's message body, as it was. */
  body: string;
}

export interface DeadLetterStore {
  /** Keeps it, once: the same ID again changes nothing. */
  put(letter: StoredDeadLetter): Promise<void>;
  /** Every one kept from that queue, each group's in its order. */
  list(direction: Direction): Promise<StoredDeadLetter[]>;
  /**
   * How many are kept from that queue. Each is kept until replayed or discarded: one an older
   * version kept with an expiry (14 days) loses it here.
   */
  count(direction: Direction): Promise<number>;
  /** False when it was no longer kept. */
  delete(direction: Direction, id: string): Promise<boolean>;
}

/** What a replay resets, so that the replayed work runs as new work would. */
export interface ReplayReset {
  /**
   * Makes an item that was set aside after `attempts` failed runs claimable again, with no failed
   * run counted. False (and nothing changed) when its record is not in that state: it was
   * replayed already, or is being handled.
   */
  reopenClaim(key: string, attempts: number): Promise<boolean>;
  /** Forgets the server errors counted for an action, so that a replay has its full allowance. */
  forgetServerErrors(actionId: string): Promise<void>;
}

/** Orders dead letters as their queues did: by group, then by place within the group. */
export const inQueueOrder = (a: StoredDeadLetter, b: StoredDeadLetter): number =>
  a.groupId === b.groupId
    ? a.sequenceNumber.padStart(40, "0").localeCompare(b.sequenceNumber.padStart(40, "0"))
    : a.groupId < b.groupId
      ? -1
      : 1;
