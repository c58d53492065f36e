import { requestProblem } from "./allowed-request.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  RequestRefused,
} from "./request.ts";

/**
 * The homeserver over HTTP with the appservice's `as_token` in the Authorization header (never
 * in the query string) and `?user_id=` for every user but the bot. Only to the homeserver: a
 * path that passes `requestProblem` keeps the URL at its origin, and redirects are not followed.
 */
export class HttpHomeserverClient implements HomeserverClient {
  constructor(
    private readonly baseUrl: string,
    private readonly asToken: string,
    private readonly botUserId: string,
    private readonly timeoutMs: number,
  ) {}

  async call(userId: string, request: ClientServerRequest): Promise<ClientServerResponse> {
    const problem = requestProblem(request);
    if (problem) throw new RequestRefused(problem);
    const url = new URL(`${this.baseUrl.replace(/\/$/, "")}${request.path}`);
    for (const [name, value] of Object.entries(request.query ?? {}))
      url.searchParams.set(name, value);
    if (userId !== this.botUserId) url.searchParams.set("user_id", userId);
    const response = await fetch(url, {
      method: request.method,
      headers: {
        authorization: `Bearer ${this.asToken}`,
        ...(request.body !== undefined && { "content-type": "application/json" }),
      },
      ...(request.body !== undefined && { body: JSON.stringify(request.body) }),
      // A 3xx is an answer (a final failure), not somewhere else to send the token.
      redirect: "manual",
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      // Not JSON (a proxy's error page): kept as text for the dead-letter reason.
    }
    const retryAfter = Number(response.headers.get("retry-after"));
    return {
      status: response.status,
      body,
      ...(Number.isFinite(retryAfter) && retryAfter > 0 && { retryAfterSeconds: retryAfter }),
    };
  }
}
