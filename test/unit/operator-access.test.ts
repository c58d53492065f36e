import { describe, expect, it } from "vitest";
import { authenticateOperator, RequestBudget } from "../../functions/operator/access.ts";
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
});
