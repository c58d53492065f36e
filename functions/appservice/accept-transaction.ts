import type { FifoQueue } from "../queue/queue.ts";
import type { RecordOutcome, TransactionStore } from "../store/store.ts";
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
 * trips: the enqueue, then one conditional write of the txnId. A crash anywhere before the
 * record makes the homeserver retry; the retry's enqueue is absorbed by the queue's
 * deduplication and by the per-event claims downstream. (A lookup of the txnId alongside the
 * enqueue would save nothing: the enqueue must run anyway, and the conditional write already
 * tells a retry from a new transaction.)
 */
export async function acceptTransaction(
  txnId: string,
  transaction: Transaction,
  { transactions, inboundQueue, log }: AcceptTransactionDeps,
): Promise<AcceptOutcome> {
  const messages = inboundMessages(txnId, transaction);
  if (messages.length > 0) {
    try {
      await inboundQueue.send(messages);
    } catch (error) {
      log.error("enqueue failed; the homeserver will retry", { txnId, error });
      throw unavailable("Could not queue the transaction's events; retry later");
    }
  }
  let outcome: RecordOutcome;
  try {
    outcome = await transactions.recordTransaction(txnId, {
      bodyHash: transactionHash(transaction),
    });
  } catch (error) {
    log.error("recording the transaction failed; the homeserver will retry", { txnId, error });
    throw unavailable("Could not record the transaction; retry later");
  }
  if (outcome === "replaced") {
    log.warn("txnId reused with different events (homeserver counter reset?): processed as new", {
      txnId,
    });
  }
  return outcome === "duplicate" ? "duplicate" : "accepted";
}
