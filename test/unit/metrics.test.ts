import middy from "@middy/core";
import type { Context } from "aws-lambda";
import { describe, expect, it, vi } from "vitest";
import { createCloudWatchMetrics, flushMetrics } from "../../functions/handlers/shared/metrics.ts";

describe("CloudWatch metrics in a handler", () => {
  it("flush after the handler leaves its response alone (Powertools' publish returns the Metrics object)", async () => {
    // The embedded-metric-format line goes to stdout: kept out of the test's output.
    const write = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    try {
      const metrics = createCloudWatchMetrics();
      const handler = middy<unknown, { batchItemFailures: unknown[] }>()
        .use(flushMetrics(metrics))
        .handler(async () => {
          metrics.count("OutboundCallsDone");
          return { batchItemFailures: [] };
        });
      expect(await handler({}, {} as Context)).toEqual({ batchItemFailures: [] });
    } finally {
      write.mockRestore();
    }
  });
});
