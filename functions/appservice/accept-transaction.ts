import type { FifoQueue } from "../queue/queue.ts";
import type { TransactionStore } from "../store/store.ts";
import { unavailable } from "./errors.ts";
import { inboundMessages, transactionHash } from "./inbound.ts";
import type { Log } from "./log.ts";
import type { Transaction } from "./transaction.ts";

export interface AcceptTransactionDeps {
  transactions: TransactionStore;
  inboundQueue: FifoQueue;
  log: Log;
}

/** `accepted`: new and now durably queued; `duplicate`: a retry of one already recorded. */
export type AcceptOutcome = "accepted" | "duplicate";

/**
 * Stores a transaction's items durably before the homeserver gets its 200, in two round
 * trips: the txnId lookup runs alongside the enqueue, then the txnId is recorded. A crash
 * anywhere before the record makes the homeserver retry; the retry's enqueue is absorbed
 * by the queue's deduplication and by the per-event claims downstream.
 */
export async function acceptTransaction(
  txnId: string,
  transaction: Transaction,
  { transactions, inboundQueue, log }: AcceptTransactionDeps,
): Promise<AcceptOutcome> {
  const bodyHash = transactionHash(transaction);
  const messages = inboundMessages(txnId, transaction);
  const [lookup, enqueue] = await Promise.allSettled([
    transactions.getTransaction(txnId),
    messages.length > 0 ? inboundQueue.send(messages) : Promise.resolve(),
  ]);
  if (enqueue.status === "rejected") {
    log.error("enqueue failed; the homeserver will retry", { txnId, error: enqueue.reason });
    throw unavailable("Could not queue the transaction's events; retry later");
  }
  if (lookup.status === "rejected") {
    log.error("transaction lookup failed; the homeserver will retry", {
      txnId,
      error: lookup.reason,
    });
    throw unavailable("Could not reach transaction storage; retry later");
  }
  if (lookup.value?.bodyHash === bodyHash) return "duplicate";
  if (lookup.value) {
    log.warn("txnId reused with different events (homeserver counter reset?): processing as new", {
      txnId,
    });
  }
  let recorded: boolean;
  try {
    recorded = await transactions.recordTransaction(txnId, { bodyHash });
  } catch (error) {
    log.error("recording the transaction failed; the homeserver will retry", { txnId, error });
    throw unavailable("Could not record the transaction; retry later");
  }
  return recorded ? "accepted" : "duplicate";
}
