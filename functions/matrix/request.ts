/**
 * One client-server API call, as the outbox performs it: acting as `userId` (the bot when it is
 * the appservice's own user), with the appservice's token in the Authorization header.
 */
export interface ClientServerRequest {
  method: "GET" | "PUT" | "POST" | "DELETE";
  /** Path with every parameter already percent-encoded. */
  path: string;
  /** Query parameters other than `user_id` (e.g. `ts`, `device_id`). */
  query?: Record<string, string>;
  /** JSON. */
  body?: unknown;
  /** Bytes instead of JSON (media uploads only: `requestProblem`). */
  content?: { bytes: Uint8Array; type: string };
  /**
   * Read a successful answer as bytes, at most this many (media downloads only): past them the
   * call throws `ResponseTooLarge`.
   */
  maxResponseBytes?: number;
}

/** A request waiting in the outbound queue. */
export interface OutboundAction {
  /** Derived from what asked for it: the queue's deduplication ID and the send txnId. */
  id: string;
  /** The user to act as. */
  userId: string;
  /** The room the call concerns: its queue group, and the room to join if not in it. */
  roomId?: string;
  request: ClientServerRequest;
  /** What the action is, for logs and dead letters (`send`, `join`, …). */
  kind: string;
  /**
   * Dead-letter the action at its this-many-th server error (a 5xx, or no answer in time), for
   * actions on untrusted input that the homeserver may refuse for ever while their room waits.
   * 429s and refused connections do not count. Unbounded when absent.
   */
  maxServerErrors?: number;
  /** A send whose event ID the outbox records once sent, for a request that waits for it. */
  recordEventId?: true;
  /**
   * The remote message a send stands for: once sent, the outbox links it to the event ID in the
   * room's message map (`ServiceContext.messages`).
   */
  remoteId?: string;
}

/** A JSON object: not null, not an array. */
export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** The homeserver's answer, as the outbox needs it. */
export interface ClientServerResponse {
  status: number;
  body: unknown;
  /** Seconds, from the `Retry-After` header. */
  retryAfterSeconds?: number;
  /** A successful answer to a request with `maxResponseBytes`, and what its headers say of it. */
  bytes?: Uint8Array;
  contentType?: string;
  contentDisposition?: string;
}

/** A request a client will not send (see `requestProblem`): retrying cannot help. */
export class RequestRefused extends Error {
  override name = "RequestRefused";
}

/** An answer longer than the request's `maxResponseBytes`: asking again cannot help. */
export class ResponseTooLarge extends Error {
  override name = "ResponseTooLarge";
}

/**
 * Performs client-server calls against the homeserver; throws `RequestRefused` for a request
 * it will not send, otherwise only on network failure (a timeout's error is a `TimeoutError`).
 */
export interface HomeserverClient {
  call(userId: string, request: ClientServerRequest): Promise<ClientServerResponse>;
}

/** The homeserver refused a call for good (an answer other than 2xx, 429 or 5xx). */
export class HomeserverRefused extends Error {
  override name = "HomeserverRefused";
  readonly errcode: string | undefined;

  constructor(
    what: string,
    readonly status: number,
    /** The answer's body, as the homeserver gave it. */
    readonly body: unknown,
  ) {
    const { errcode, error } = matrixError(body);
    super(`${what}: ${status} ${errcode ?? ""} ${error ?? ""}`.replace(/ +/g, " ").trim());
    this.errcode = errcode;
  }
}

export const matrixError = (body: unknown): { errcode?: string; error?: string } =>
  typeof body === "object" && body !== null ? (body as { errcode?: string; error?: string }) : {};
