import type { FifoQueue } from "../../queue/queue.ts";
import { unavailable } from "../../shared/errors.ts";
import type { Log } from "../../shared/log.ts";
import type { RecordOutcome, SetAsideItems, TransactionStore } from "../../store/store.ts";
import type { Transaction } from "../protocol/transaction.ts";
import { inboundMessages, transactionHash } from "./inbound.ts";

export interface AcceptTransactionDeps {
  transactions: TransactionStore;
  inboundQueue: FifoQueue;
  /** Where items too large for a queue message are kept before their reference is queued. */
  setAsideItems: SetAsideItems;
  log: Log;
  counterResets: CounterResets;
}

/**
 * `accepted`: new and now durably queued; `reused`: the same, under a txnId recorded before
 * with other events; `duplicate`: a retry of one already recorded.
 */
export type AcceptOutcome = "accepted" | "reused" | "duplicate";

/** The line the transactions function logs for each transaction it answered 200. */
export const TRANSACTION_LOG_MESSAGE = "transaction acknowledged";

const isCount = (txnId: string) => /^\d{1,15}$/.test(txnId);

/**
 * Tells a homeserver's counter reset (a Synapse restart starts its txnIds at 1 again) from the
 * reused txnIds that follow it: until the counter passes the txnIds recorded before, each new
 * transaction reuses one. The reset is logged once, at WARN, with the txnId before it; the
 * reuses after it at debug. Kept per process (per Lambda instance): a process that saw no
 * earlier txnId warns at its first reuse, without the old txnId.
 */
export class CounterResets {
  private lastTxnId: string | undefined;
  private resetLogged = false;

  /** Notes a transaction that was new to the homeserver (not a retry). */
  observe(txnId: string, reused: boolean, log: Log): void {
    const previous = this.lastTxnId;
    this.lastTxnId = txnId;
    // Synapse's txnIds are a counter; other homeservers' may be opaque, with no order to read.
    const wentBack =
      previous !== undefined &&
      isCount(txnId) &&
      isCount(previous) &&
      Number(txnId) <= Number(previous);
    if (wentBack) {
      log.warn(
        "the homeserver's txnIds went back (its counter was reset, e.g. by a restart): txnIds recorded before are processed as new when reused; further reuses are logged at debug level",
        { txnId, previousTxnId: previous },
      );
      this.resetLogged = true;
    }
    if (!reused) return;
    if (this.resetLogged) {
      log.debug("txnId reused with different events: processed as new", { txnId });
      return;
    }
    log.warn(
      "txnId reused with different events (homeserver counter reset?): processed as new; further reuses are logged at debug level",
      { txnId },
    );
    this.resetLogged = true;
  }
}

/**
 * Stores a transaction's items durably before the homeserver gets its 200, in one round trip:
 * the enqueue and the conditional write of the txnId run at once, and the answer waits for
 * both. The record does not gate the enqueue: every attempt enqueues, a retry included, and the
 * queue's deduplication (5 minutes) and the per-item claims downstream (30 days) absorb the
 * repeats. So a failure of either is a 5xx whatever the other did: the homeserver's retry
 * enqueues again, and a txnId recorded by the failed attempt only makes the retry count as one.
 */
export async function acceptTransaction(
  txnId: string,
  transaction: Transaction,
  { transactions, inboundQueue, setAsideItems, log, counterResets }: AcceptTransactionDeps,
): Promise<AcceptOutcome> {
  const { messages, setAside } = inboundMessages(txnId, transaction);
  // An item set aside is stored before its reference is queued: no consumer finds it missing.
  const enqueue = async () => {
    if (setAside.length > 0) await setAsideItems.put(setAside);
    if (messages.length > 0) await inboundQueue.send(messages);
  };
  const [queued, recorded] = await Promise.allSettled([
    enqueue(),
    transactions.recordTransaction(txnId, { bodyHash: transactionHash(transaction) }),
  ]);
  if (queued.status === "rejected") {
    log.error("enqueue failed; the homeserver will retry", { txnId, error: queued.reason });
    throw unavailable("Could not queue the transaction's events; retry later");
  }
  if (recorded.status === "rejected") {
    log.error("recording the transaction failed; the homeserver will retry", {
      txnId,
      error: recorded.reason,
    });
    throw unavailable("Could not record the transaction; retry later");
  }
  const outcome: RecordOutcome = recorded.value;
  if (outcome === "duplicate") return "duplicate";
  counterResets.observe(txnId, outcome === "replaced", log);
  return outcome === "replaced" ? "reused" : "accepted";
}
