import { Logger } from "@aws-lambda-powertools/logger";
import type { Context } from "aws-lambda";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { lambdaHandler } from "../../functions/handlers/shared/lambda-handler.ts";

/** A Lambda context whose remaining time is read from `remaining`, in order. */
const contextWith = (requestId: string, remaining: number[]): Context =>
  ({
    awsRequestId: requestId,
    functionName: "events",
    functionVersion: "$LATEST",
    invokedFunctionArn: "arn:aws:lambda:us-east-1:000000000000:function:events",
    memoryLimitInMB: "256",
    getRemainingTimeInMillis: () => (remaining.length > 1 ? remaining.shift() : remaining[0]),
  }) as Context;

/** The JSON lines a logger built now writes (INFO to stdout, WARN and ERROR to stderr). */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  for (const stream of [process.stdout, process.stderr]) {
    const write = vi.spyOn(stream, "write").mockImplementation((chunk) => {
      for (const line of String(chunk).split("\n").filter(Boolean)) lines.push(JSON.parse(line));
      return true;
    });
    onTestFinished(() => write.mockRestore());
  }
  return { log: new Logger({ serviceName: "test", logLevel: "INFO" }), lines };
}

describe("lambdaHandler", () => {
  it("puts the invocation's request ID in every log line", async () => {
    const { log, lines } = capturedLogger();
    const handler = lambdaHandler(
      async () => ({ log }),
      (deps) => async (event: { n: number }) => {
        deps.log.info("handling", { n: event.n });
        deps.log.warn("and again");
        return event.n;
      },
    );
    expect(await handler({ n: 1 }, contextWith("request-1", [10_000]))).toBe(1);
    expect(await handler({ n: 2 }, contextWith("request-2", [10_000]))).toBe(2);
    expect(lines.map((line) => [line.message, line.function_request_id])).toEqual([
      ["handling", "request-1"],
      ["and again", "request-1"],
      ["handling", "request-2"],
      ["and again", "request-2"],
    ]);
  });

  it("logs an invocation that ends within a fifth of its timeout as an error, once", async () => {
    const { log, lines } = capturedLogger();
    const handler = lambdaHandler(
      async () => ({ log }),
      () => async () => "done",
    );
    // 30 s at the start; 10 s left at the end: fine. 5 s left: too close.
    await handler({}, contextWith("in-time", [30_000, 10_000]));
    expect(lines).toEqual([]);
    await handler({}, contextWith("close-call", [30_000, 5_000]));
    expect(lines).toEqual([
      expect.objectContaining({
        level: "ERROR",
        message: "the invocation came close to its timeout",
        function_request_id: "close-call",
        durationMs: 25_000,
        leftMs: 5_000,
      }),
    ]);
  });

  it("builds the dependencies again after a failed cold start", async () => {
    const { log } = capturedLogger();
    let builds = 0;
    const handler = lambdaHandler(
      async () => {
        builds++;
        if (builds === 1) throw new Error("secret unreachable");
        return { log };
      },
      () => async () => "ok",
    );
    await expect(handler({}, contextWith("first", [10_000]))).rejects.toThrow("secret unreachable");
    expect(await handler({}, contextWith("second", [10_000]))).toBe("ok");
    expect(builds).toBe(2);
  });
});
