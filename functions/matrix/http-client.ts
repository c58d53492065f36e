import { requestProblem } from "./allowed-request.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  RequestRefused,
  ResponseTooLarge,
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
        ...(request.content && { "content-type": request.content.type }),
      },
      ...(request.body !== undefined && { body: JSON.stringify(request.body) }),
      ...(request.content && { body: request.content.bytes }),
      // A 3xx is an answer (a final failure), not somewhere else to send the token.
      redirect: "manual",
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    const retryAfter = Number(response.headers.get("retry-after"));
    const rateLimit = Number.isFinite(retryAfter) &&
      retryAfter > 0 && {
        retryAfterSeconds: retryAfter,
      };
    if (request.maxResponseBytes !== undefined && response.ok) {
      return {
        status: response.status,
        body: undefined,
        bytes: await readAtMost(response, request.maxResponseBytes),
        ...(response.headers.has("content-type") && {
          contentType: response.headers.get("content-type") as string,
        }),
        ...(response.headers.has("content-disposition") && {
          contentDisposition: response.headers.get("content-disposition") as string,
        }),
      };
    }
    const text = await response.text();
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : {};
    } catch {
      // Not JSON (a proxy's error page): kept as text for the dead-letter reason.
    }
    return { status: response.status, body, ...rateLimit };
  }
}

/** The body, unless it is longer than `maxBytes`: then `ResponseTooLarge`, the rest unread. */
async function readAtMost(response: Response, maxBytes: number): Promise<Uint8Array> {
  const tooLarge = () => new ResponseTooLarge(`the answer is over ${maxBytes} bytes`);
  if (Number(response.headers.get("content-length")) > maxBytes) {
    await response.body?.cancel();
    throw tooLarge();
  }
  const chunks: Uint8Array[] = [];
  let length = 0;
  // Leaving the loop early cancels the stream.
  for await (const chunk of response.body ?? []) {
    length += chunk.byteLength;
    if (length > maxBytes) break;
    chunks.push(chunk);
  }
  if (length > maxBytes) throw tooLarge();
  return Buffer.concat(chunks);
}
