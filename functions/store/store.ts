/** What the transaction path remembers about a transaction it has acknowledged. */
export interface TransactionRecord {
  bodyHash: string;
}

/**
 * `recorded`: new; `replaced`: the txnId was recorded with another hash (a homeserver whose
 * counter was reset) and now holds this one; `duplicate`: already recorded with this hash.
 */
export type RecordOutcome = "recorded" | "replaced" | "duplicate";

export interface TransactionStore {
  /** Records the transaction in one conditional write. */
  recordTransaction(txnId: string, record: TransactionRecord): Promise<RecordOutcome>;
}

/** The last transaction recorded: what `npm run ping` shows when the homeserver cannot ping. */
export interface LastTransaction {
  txnId: string;
  recordedAt: Date;
}

export interface TransactionHistory {
  /** The transaction recorded last (new or reused, not a retry), if any is still kept. */
  lastTransaction(): Promise<LastTransaction | undefined>;
}

/**
 * `claimed`: this caller holds the lease and must complete, release or fail it; `taken over`: the
 * same, from a lease that ran out (the run holding it timed out or died);
 * `done`: already processed (or set aside); `busy`: another caller holds an unexpired lease.
 */
export type ClaimOutcome = "claimed" | "taken over" | "done" | "busy";

/** Whether the caller holds the lease after this outcome. */
export const holdsClaim = (outcome: ClaimOutcome | undefined): boolean =>
  outcome === "claimed" || outcome === "taken over";

/** The reason a claim record keeps for a run that ended unanswered. */
export const ABANDONED_RUN_REASON =
  "the run ended without an answer: the function timed out or its process died";

/**
 * Exactly-once processing of items identified by a key, with leases that expire. Each key's
 * record also counts the runs that failed, so that a retry knows how many came before it.
 */
export interface ClaimStore {
  /** Claims distinct keys together (few round trips for many items); an outcome per key. */
  claim(keys: string[], owner: string, leaseMs: number): Promise<Map<string, ClaimOutcome>>;
  complete(key: string): Promise<void>;
  /** Gives up a lease held by `owner` so that a retry may claim the item at once. */
  release(key: string, owner: string): Promise<void>;
  /**
   * Gives up a lease held by `owner` after a failed run, counting it (with its reason): the
   * failed runs so far, or 0 when the lease was no longer ours (nothing is counted then).
   */
  fail(key: string, owner: string, reason: string): Promise<number>;
  /**
   * Counts a failed run on an item `owner` took over, keeping the lease: the run before ended
   * unanswered on it. The failed runs so far, or 0 when the lease is no longer ours.
   */
  countAbandonedRun(key: string, owner: string): Promise<number>;
}

/**
 * Inbound items too large for a queue message, kept under the hash of their JSON until their
 * reference is handled (content-addressed: a retry writes the same thing again).
 */
export interface SetAsideItems {
  /** Stores each item's JSON durably; resolves once all are stored. */
  put(items: { sha256: string; json: string }[]): Promise<void>;
  /** The JSON stored under this hash, or undefined if none is. */
  get(sha256: string): Promise<string | undefined>;
}
