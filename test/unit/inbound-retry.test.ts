import { describe, expect, it } from "vitest";
import {
  INBOUND_BACKOFF,
  INBOUND_MAX_RECEIVE_COUNT,
  INBOUND_RETRY,
} from "../../functions/appservice/pipeline/process-inbound.ts";
import { backoffSeconds, retriesCovering } from "../../functions/shared/backoff.ts";

describe("inbound retries", () => {
  it("counts the retries whose expected waits fill a span", () => {
    // Waits of 1 s exactly (a ceiling of 1): one retry per second.
    expect(retriesCovering(10, { baseSeconds: 1, capSeconds: 1 })).toBe(10);
    // Ceilings 1, 2, 4: expected waits 1, 1.5, 2.5.
    expect(retriesCovering(5, { baseSeconds: 1, capSeconds: 4 })).toBe(3);
    expect(retriesCovering(5.1, { baseSeconds: 1, capSeconds: 4 })).toBe(4);
  });

  it("retries an item for about a day, at most 15 minutes apart, before setting it aside", () => {
    expect(INBOUND_BACKOFF).toEqual({ baseSeconds: 1, capSeconds: 900 });
    // 10 doubling waits (516 s expected), then 191 of 450.5 s on average: 86,562 s ≈ 24 h.
    expect(INBOUND_RETRY.maxAttempts).toBe(202);
    const waits = Array.from({ length: INBOUND_RETRY.maxAttempts - 1 }, (_, attempt) =>
      backoffSeconds(attempt, INBOUND_BACKOFF, () => 0.5),
    );
    const hours = waits.reduce((sum, s) => sum + s, 0) / 3600;
    expect(hours).toBeGreaterThan(23.5);
    expect(hours).toBeLessThan(24.5);
    expect(Math.max(...waits)).toBe(450);
  });

  it("leaves SQS's own redrive as a last resort: the events behind several failing ones survive", () => {
    // Every attempt of a failing item receives the messages batched behind it once more.
    expect(
      Math.floor(INBOUND_MAX_RECEIVE_COUNT / INBOUND_RETRY.maxAttempts),
    ).toBeGreaterThanOrEqual(4);
    expect(INBOUND_MAX_RECEIVE_COUNT).toBeLessThanOrEqual(1000);
  });
});
