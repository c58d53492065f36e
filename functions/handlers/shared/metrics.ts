import { MetricUnit, Metrics as PowertoolsMetrics } from "@aws-lambda-powertools/metrics";
import type { MiddlewareObj } from "@middy/core";
import type { Metrics } from "../../shared/metrics.ts";

/**
 * CloudWatch metrics in the embedded metric format (log lines CloudWatch turns into metrics, no
 * API call); namespace `POWERTOOLS_METRICS_NAMESPACE`, default `MatrixAppservice`.
 */
export function createCloudWatchMetrics(): Metrics {
  const metrics = new PowertoolsMetrics({
    namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? "MatrixAppservice",
    serviceName: "matrix-appservice",
  });
  return {
    count: (name, value = 1) => metrics.addMetric(name, MetricUnit.Count, value),
    // Returns nothing: a middy middleware that returns a value ends the invocation with it.
    flush: () => {
      metrics.publishStoredMetrics();
    },
  };
}

/**
 * Flushes the invocation's metrics when it ends, however it ends. The hooks return nothing: a
 * middy middleware that returns a value ends the invocation with that value as its response.
 */
export const flushMetrics = (metrics: Metrics): MiddlewareObj => ({
  after: () => {
    metrics.flush?.();
  },
  onError: () => {
    metrics.flush?.();
  },
});
