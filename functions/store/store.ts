/** What the transaction path remembers about a transaction it has acknowledged. */
export interface TransactionRecord {
  bodyHash: string;
}

export interface TransactionStore {
  /** Strongly consistent read. */
  getTransaction(txnId: string): Promise<TransactionRecord | undefined>;
  /**
   * Records the transaction unless it is already recorded with the same hash.
   * Resolves `false` when a concurrent duplicate recorded it first.
   */
  recordTransaction(txnId: string, record: TransactionRecord): Promise<boolean>;
}

/**
 * `claimed`: this caller holds the lease and must complete or release it;
 * `done`: already processed; `busy`: another caller holds an unexpired lease.
 */
export type ClaimOutcome = "claimed" | "done" | "busy";

/** Exactly-once processing of items identified by a key, with leases that expire. */
export interface ClaimStore {
  claim(key: string, owner: string, leaseMs: number): Promise<ClaimOutcome>;
  complete(key: string): Promise<void>;
  /** Gives up a lease held by `owner` so that a retry may claim the item at once. */
  release(key: string, owner: string): Promise<void>;
}
