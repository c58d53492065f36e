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
  body?: unknown;
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
}

/** The homeserver's answer, as the outbox needs it. */
export interface ClientServerResponse {
  status: number;
  body: unknown;
  /** Seconds, from the `Retry-After` header. */
  retryAfterSeconds?: number;
}

/** Performs client-server calls against the homeserver; throws only on network failure. */
export interface HomeserverClient {
  call(userId: string, request: ClientServerRequest): Promise<ClientServerResponse>;
}

export const matrixError = (body: unknown): { errcode?: string; error?: string } =>
  typeof body === "object" && body !== null ? (body as { errcode?: string; error?: string }) : {};
