import { describe, expect, it } from "vitest";
import { authenticateOperator, RequestBudget } from "../../functions/operator/access.ts";
import { createOperatorApi } from "../../functions/operator/api.ts";
import type { OperatorConsole } from "../../functions/operator/console.ts";
import { MatrixError } from "../../functions/shared/errors.ts";

describe("the operator console's access", () => {
  it("takes the admin token only as Authorization: Bearer; anything else is 401 M_UNAUTHORIZED", () => {
    const token = "t".repeat(64);
    expect(() => authenticateOperator(`Bearer ${token}`, token)).not.toThrow();
    expect(() => authenticateOperator(`bearer  ${token}`, token)).not.toThrow();
    for (const header of [undefined, "", token, `Basic ${token}`, `Bearer ${token}x`, "Bearer "]) {
      let error: unknown;
      try {
        authenticateOperator(header, token);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(MatrixError);
      expect((error as MatrixError).status).toBe(401);
      expect((error as MatrixError).errcode).toBe("M_UNAUTHORIZED");
    }
  });

  it("lets a burst through, then one request per refill, and says how long to wait", () => {
    let now = 0;
    const budget = new RequestBudget({ perSecond: 5, burst: 3 }, () => now);
    expect([budget.take(), budget.take(), budget.take()]).toEqual([
      undefined,
      undefined,
      undefined,
    ]);
    expect(budget.take()).toBe(200);
    now += 100;
    expect(budget.take()).toBe(100);
    now += 100;
    expect(budget.take()).toBeUndefined();
    expect(budget.take()).toBe(200);
    now += 10_000;
    expect([budget.take(), budget.take(), budget.take(), budget.take()]).toEqual([
      undefined,
      undefined,
      undefined,
      200,
    ]);
  });

  it("charges a wrong token to a bucket of its own: 20 wrong tokens leave the right one its whole burst", async () => {
    const token = "t".repeat(64);
    const now = () => 0; // no refill: every request counts
    const api = createOperatorApi({
      console: { traffic: async () => ({ calls: [] }) } as unknown as OperatorConsole,
      adminToken: token,
      budget: new RequestBudget({ perSecond: 5, burst: 20 }, now),
      refusals: new RequestBudget({ perSecond: 5, burst: 20 }, now),
      log: { debug() {}, info() {}, warn() {}, error() {} },
    });
    const call = (authorization?: string) =>
      api({
        method: "GET",
        path: "/admin/api/traffic",
        query: {},
        headers: authorization === undefined ? {} : { authorization },
        body: "",
        sourceIp: "127.0.0.1",
      });
    const wrong = [];
    for (let i = 0; i < 25; i++) wrong.push((await call(`Bearer wrong${i}`)).status);
    expect(wrong).toEqual([...Array(20).fill(401), ...Array(5).fill(429)]);
    expect((await call()).status).toBe(429);
    const right = [];
    for (let i = 0; i < 21; i++) right.push((await call(`Bearer ${token}`)).status);
    expect(right).toEqual([...Array(20).fill(200), 429]);
  });
});
