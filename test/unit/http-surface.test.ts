import { describe, expect, it } from "vitest";
import { authenticateHomeserver, tokensEqual } from "../../functions/appservice/protocol/auth.ts";
import { findRoute } from "../../functions/appservice/protocol/routes.ts";
import type { FifoMessage } from "../../functions/queue/queue.ts";
import { MAX_MESSAGE_BYTES } from "../../functions/queue/queue.ts";
import { planBatches, sqsGroupId } from "../../functions/queue/sqs/queue.ts";
import type { MatrixError } from "../../functions/shared/errors.ts";

const statusOf = (f: () => void) => {
  try {
    f();
    return 200;
  } catch (error) {
    return `${(error as MatrixError).status} ${(error as MatrixError).errcode}`;
  }
};

describe("authenticateHomeserver", () => {
  const token = "t".repeat(64);
  it.each([
    [`Bearer ${token}`, undefined, 200],
    [undefined, token, 200],
    [`Bearer ${token}`, token, 200],
    [`bearer ${token}`, undefined, 200],
    [undefined, undefined, "401 M_UNAUTHORIZED"],
    ["Basic abc", undefined, "401 M_UNAUTHORIZED"],
    [`Bearer ${token},Bearer ${token}`, undefined, "401 M_UNAUTHORIZED"],
    ["Bearer wrong", undefined, "403 M_FORBIDDEN"],
    [undefined, "wrong", "403 M_FORBIDDEN"],
    [`Bearer ${token}`, "wrong", "403 M_FORBIDDEN"],
    ["Bearer wrong", token, "403 M_FORBIDDEN"],
  ])("header %s, query %s → %s", (header, query, expected) => {
    expect(statusOf(() => authenticateHomeserver(header, query, token))).toBe(expected);
  });

  it("compares tokens of any length", () => {
    expect(tokensEqual("a", "a")).toBe(true);
    expect(tokensEqual("a", "ab")).toBe(false);
  });
});

describe("findRoute", () => {
  it("decodes path parameters and tells 404 from 405", () => {
    const match = findRoute("PUT", "/_matrix/app/v1/transactions/a%2Fb%20c");
    expect(match.route?.handler).toBe("transactions");
    expect(match.route && match.pathParameters).toEqual({ txnId: "a/b c" });
    expect(findRoute("put", "/transactions/1").route?.path).toBe("/transactions/{txnId}");
    expect(findRoute("GET", "/_matrix/app/v1/transactions/1")).toEqual({
      route: undefined,
      status: 405,
    });
    expect(findRoute("PUT", "/_matrix/app/v1/transactions/")).toEqual({
      route: undefined,
      status: 404,
    });
    expect(findRoute("PUT", "/_matrix/app/v1/transactions/%E0%A4%A")).toEqual({
      route: undefined,
      status: 404,
    });
    expect(findRoute("GET", "/elsewhere")).toEqual({ route: undefined, status: 404 });
  });
});

describe("sqsGroupId", () => {
  it("keeps a room ID SQS takes, and hashes one it would not", () => {
    expect(sqsGroupId("!room:example.org")).toBe("!room:example.org");
    expect(sqsGroupId(`!${"r".repeat(200)}:x`)).toMatch(/^[0-9a-f]{64}$/);
    expect(sqsGroupId("!röom:x")).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe("planBatches", () => {
  const message = (groupId: string, bytes = 10, n = 0): FifoMessage => ({
    groupId,
    deduplicationId: `${groupId}-${n}`,
    body: "x".repeat(bytes),
  });

  it("packs whole groups into requests of at most 10 entries", () => {
    const messages = Array.from({ length: 25 }, (_, i) => message(`g${i % 8}`, 10, i));
    const chains = planBatches(messages);
    for (const chain of chains) {
      expect(chain).toHaveLength(1);
      expect(chain[0]?.length).toBeLessThanOrEqual(10);
    }
    // No group is spread over two parallel requests.
    const requestOf = new Map<string, number>();
    chains.forEach((chain, i) => {
      for (const m of chain[0] ?? []) {
        expect(requestOf.get(m.groupId) ?? i).toBe(i);
        requestOf.set(m.groupId, i);
      }
    });
    expect(chains.flat(2)).toHaveLength(25);
  });

  it("sends a group larger than one request as a chain, in order", () => {
    const messages = Array.from({ length: 23 }, (_, i) => message("big", 10, i));
    const chains = planBatches([message("small"), ...messages]);
    const chain = chains.find((c) => c.length > 1);
    expect(chain?.map((batch) => batch.length)).toEqual([10, 10, 3]);
    expect(chain?.flat().map((m) => m.deduplicationId)).toEqual(
      messages.map((m) => m.deduplicationId),
    );
  });

  it("keeps each request within the size limit", () => {
    const messages = Array.from({ length: 4 }, (_, i) => message(`g${i}`, 400_000, i));
    expect(planBatches(messages).length).toBeGreaterThan(1);
    for (const chain of planBatches(messages)) {
      for (const batch of chain) {
        expect(batch.reduce((sum, m) => sum + m.body.length, 0)).toBeLessThanOrEqual(
          MAX_MESSAGE_BYTES,
        );
      }
    }
  });
});
