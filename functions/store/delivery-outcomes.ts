import type { AppDataStore } from "./app-data.ts";

/** How a delivery's last attempt went, as the outbox records it under its `outcomeKey`. */
export interface DeliveryOutcome {
  outcome: "done" | "retry" | "dead";
  /** The remote service's answer, when it gave one. */
  status?: number;
  /** Why it is retried or was given up on. */
  error?: string;
  /** The try it was (0 the first). */
  attempt: number;
  /** ISO 8601. */
  at: string;
  /** The delivery's ID: its `Idempotency-Key`. */
  deliveryId: string;
}

/** Where the outbox records delivery outcomes, and the application reads them back. */
export interface DeliveryOutcomeStore {
  record(key: string, outcome: DeliveryOutcome): Promise<void>;
  last(key: string): Promise<DeliveryOutcome | undefined>;
}

/** Their collection among the immediate calls' records (the stack's IAM grants name it). */
export const DELIVERY_OUTCOMES_COLLECTION = "delivery-outcomes";
/** Kept as long as the dedupe records: an outcome nobody asked about for a month goes. */
const KEPT_MS = 30 * 24 * 60 * 60 * 1000;

/** Outcomes as entries of one collection of `records` (the immediate calls' records). */
export const deliveryOutcomes = (records: AppDataStore, now = Date.now): DeliveryOutcomeStore => ({
  async record(key, outcome) {
    await records.write([
      {
        collection: DELIVERY_OUTCOMES_COLLECTION,
        key,
        value: { ...outcome },
        expiresAt: now() + KEPT_MS,
      },
    ]);
  },
  async last(key) {
    return (await records.get(DELIVERY_OUTCOMES_COLLECTION, key)) as DeliveryOutcome | undefined;
  },
});
