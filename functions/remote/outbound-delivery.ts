import { queuedProblem, quoted } from "../queue/outbound.ts";
import { type AddressPolicy, type Lookup, resolveTarget, TargetRefused } from "./address-policy.ts";
import { MAX_REMOTE_TIMEOUT_MS, type RemoteRequest } from "./remote-http.ts";

/**
 * An HTTP request to a service other than the homeserver, waiting in the outbound queue: sent
 * with an `Idempotency-Key` header that is its `id`, the same on every attempt.
 */
export interface OutboundDelivery {
  /** Derived from what asked for it, as an action's: the deduplication ID and the key. */
  id: string;
  kind: "delivery";
  /** The room whose order its group keeps, if any (for logs). */
  roomId?: string;
  delivery: RemoteRequest;
  /** As an action's: dead-lettered at this many server errors (5xx or no answer in time). */
  maxServerErrors?: number;
  /** Retried for at most this long after it was queued, then dead-lettered with the reason. */
  retryForMs?: number;
  /** Where the outbox records how its last attempt went, for the application to read. */
  outcomeKey?: string;
  /** Signed by the outbox when sent (`DeliveryOptions.signed`). */
  signed?: true;
}

// What the outbox sends to a remote service: the shape of a delivery, checked when it is queued
// (`matrix/actions.ts`) and again when it is sent (`delivery.ts`), whatever put it there.

const REMOTE_METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE"]);
// RFC 9110's token, and a field value as Node sends it (no CR, LF or NUL: no header injection).
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Set by the HTTP client (framing, the connection, the target) or by the outbox (the key). */
const RESERVED_HEADERS = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
  "expect",
  "idempotency-key",
]);

/**
 * Why `request` (a remote request of the outbound queue) must not be sent; undefined when its
 * shape is sound. Where it may go is the address policy's question, at delivery.
 */
export function remoteRequestProblem(request: unknown): string | undefined {
  if (typeof request !== "object" || request === null) return "the request is not an object";
  const { method, url, headers, body, bodyEncoding, timeoutMs } = request as Record<
    string,
    unknown
  >;
  if (typeof method !== "string" || !REMOTE_METHODS.has(method)) {
    return `method ${quoted(method)} is not GET, POST, PUT, PATCH or DELETE`;
  }
  if (typeof url !== "string" || !URL.canParse(url)) return "the url is not a URL";
  const parsed = new URL(url);
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    return `the url's scheme ${quoted(parsed.protocol)} is not http: or https:`;
  }
  if (parsed.username || parsed.password) {
    return "the url has a user name or password (send an Authorization header instead)";
  }
  if (headers !== undefined) {
    if (typeof headers !== "object" || headers === null) return "the headers are not an object";
    for (const [name, value] of Object.entries(headers)) {
      if (!HEADER_NAME.test(name)) return `the header name ${quoted(name)} is not a token`;
      if (RESERVED_HEADERS.has(name.toLowerCase())) {
        return `the header ${quoted(name)} is set by the client, not the request`;
      }
      if (typeof value !== "string" || !HEADER_VALUE.test(value)) {
        return `the header ${quoted(name)} is not a string without control characters`;
      }
    }
  }
  if (body !== undefined && typeof body !== "string") return "the body is not a string";
  if (bodyEncoding !== undefined && bodyEncoding !== "base64") {
    return "bodyEncoding is not base64";
  }
  if (
    timeoutMs !== undefined &&
    !(
      Number.isSafeInteger(timeoutMs) &&
      (timeoutMs as number) > 0 &&
      (timeoutMs as number) <= MAX_REMOTE_TIMEOUT_MS
    )
  ) {
    return `timeoutMs is not an integer from 1 to ${MAX_REMOTE_TIMEOUT_MS}`;
  }
  return undefined;
}

/** Why `delivery` (a message of the outbound queue) must not be sent; undefined when it may. */
export function deliveryProblem(delivery: unknown): string | undefined {
  if (typeof delivery !== "object" || delivery === null) return "the action is not an object";
  const {
    id,
    roomId,
    maxServerErrors,
    retryForMs,
    outcomeKey,
    signed,
    delivery: request,
  } = delivery as Record<string, unknown>;
  if (signed !== undefined && signed !== true) return "signed is not true";
  if (roomId !== undefined && typeof roomId !== "string") return "the roomId is not a string";
  if (
    retryForMs !== undefined &&
    !(Number.isSafeInteger(retryForMs) && (retryForMs as number) > 0)
  ) {
    return "retryForMs is not a positive integer";
  }
  if (
    outcomeKey !== undefined &&
    !(typeof outcomeKey === "string" && outcomeKey.length > 0 && outcomeKey.length <= 512)
  ) {
    return "the outcomeKey is not a string of 1 to 512 characters";
  }
  return queuedProblem(id, maxServerErrors) ?? remoteRequestProblem(request);
}

/**
 * Why a delivery to `url` would be refused: a URL the outbox does not send to, or an address
 * the operator's policy refuses (the name resolved now; the outbox checks again at each
 * delivery). Undefined when it would be sent. Throws on a transient name-resolution failure.
 */
export async function deliveryTargetProblem(
  url: string,
  policy: AddressPolicy,
  lookup?: Lookup,
): Promise<string | undefined> {
  const problem = remoteRequestProblem({ method: "POST", url });
  if (problem) return problem;
  try {
    await resolveTarget(new URL(url).hostname, policy, lookup);
    return undefined;
  } catch (error) {
    if (error instanceof TargetRefused) return error.message;
    throw error;
  }
}
