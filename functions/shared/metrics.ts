/** What the appservice counts: CloudWatch metrics in AWS, printed counters in local mode. */
export type MetricName =
  | "TransactionsAccepted"
  | "TransactionsDuplicate"
  | "TransactionsReused"
  | "ItemsHandled"
  | "ItemsDuplicate"
  | "OutboundCallsDone"
  | "OutboundCallsRetried"
  | "OutboundCallsDeadLettered";

export interface Metrics {
  count(name: MetricName, value?: number): void;
  /** Sends what was counted, where the sink batches (once per Lambda invocation). */
  flush?(): void;
}

/** Counters kept in memory: local mode prints them; tests read them. */
export class CountingMetrics implements Metrics {
  readonly counts = new Map<MetricName, number>();

  count(name: MetricName, value = 1): void {
    this.counts.set(name, (this.counts.get(name) ?? 0) + value);
  }

  summary(): string {
    return [...this.counts].map(([name, value]) => `${name}=${value}`).join(" ");
  }
}
