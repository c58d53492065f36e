import { rateLimitSeconds } from "../shared/backoff.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  RequestRefused,
  ResponseTooLarge,
} from "./request.ts";

export class BudgetExhausted extends Error {
  override name = "BudgetExhausted";
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A call for a request the homeserver is waiting on: 429, 5xx and network failures are retried
 * with a short backoff (250 ms doubling, at most 2 s; a 429's own wait when given) for as long
 * as the deadline allows, then `BudgetExhausted`.
 */
export async function callBefore(
  deadline: number,
  homeserver: HomeserverClient,
  userId: string,
  request: ClientServerRequest,
): Promise<ClientServerResponse> {
  for (let attempt = 0; ; attempt++) {
    let response: ClientServerResponse | undefined;
    let problem: string;
    try {
      response = await homeserver.call(userId, request);
      if (response.status !== 429 && response.status < 500) return response;
      problem = `homeserver answered ${response.status}`;
    } catch (error) {
      if (error instanceof RequestRefused || error instanceof ResponseTooLarge) throw error;
      problem = `homeserver unreachable: ${(error as Error).message}`;
    }
    const asked =
      response?.status === 429
        ? rateLimitSeconds(response.retryAfterSeconds, response.body)
        : undefined;
    const wait = asked !== undefined ? asked * 1000 : Math.min(2000, 250 * 2 ** attempt);
    if (Date.now() + wait > deadline)
      throw new BudgetExhausted(`${problem}; no time left to retry`);
    await sleep(wait);
  }
}
