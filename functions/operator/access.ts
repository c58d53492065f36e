import { tokensEqual } from "../appservice/protocol/auth.ts";
import { unauthorized } from "../shared/errors.ts";

/**
 * Checks the admin token, sent as `Authorization: Bearer <admin token>` (never in a URL: no
 * query parameter is read), in constant time. Anything else is 401 `M_UNAUTHORIZED`.
 */
export function authenticateOperator(authorization: string | undefined, adminToken: string): void {
  const token = /^Bearer +([^\s,]+)$/i.exec(authorization?.trim() ?? "")?.[1];
  if (token === undefined) throw unauthorized("Missing admin token (Authorization: Bearer …)");
  if (!tokensEqual(token, adminToken)) throw unauthorized("Invalid admin token");
}

/** Requests the console's API takes per second, and at once, per process. */
export const OPERATOR_RATE = { perSecond: 5, burst: 20 };

/**
 * A token bucket for the console's API in this process (a Lambda instance, or local mode): a
 * page left open, a script in a loop or someone guessing tokens gets 429s. The API keeps one for
 * the admin token and one for everything else, so guesses never spend the operator's. In AWS the
 * API's route throttle holds all instances together.
 */
export class RequestBudget {
  private tokens: number;
  private at: number;

  constructor(
    private readonly rate = OPERATOR_RATE,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = rate.burst;
    this.at = now();
  }

  /** Undefined when the request may go on, else the milliseconds until one may. */
  take(): number | undefined {
    const time = this.now();
    this.tokens = Math.min(
      this.rate.burst,
      this.tokens + ((time - this.at) * this.rate.perSecond) / 1000,
    );
    this.at = time;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return undefined;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.rate.perSecond);
  }
}
