import { randomUUID } from "node:crypto";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  ID_HEADER,
  LEGACY_SIGNATURE_HEADER,
  LEGACY_TIMESTAMP_HEADER,
  SIGNATURE_HEADER,
  signatureHeaders,
  signatureValid,
  TIMESTAMP_HEADER,
} from "../../functions/remote/signature.ts";

/** A request the remote service received. */
export interface RemoteRequestSeen {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The body's bytes, as sent (a binary part included). */
  raw: Buffer;
  /** When it arrived (ms since the epoch). */
  at: number;
  /** The status it was answered. */
  status: number;
  /**
   * Whether it was signed with the service's `secret` (`signature.ts`, over its raw body,
   * within 5 minutes of its arrival), as the remote side checks; undefined without a secret.
   */
  signed?: boolean;
}

export interface RemoteAnswer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

/**
 * A remote service on 127.0.0.1 (a bridge's remote network, a webhook's target): records every
 * request, answers the cued answers in turn and 200 after them, and can go down (its port
 * refuses connections) and come back on the same port.
 */
export class RemoteService {
  /** @param secret the secret it shares with the relay, to check the requests' signatures */
  constructor(readonly secret?: string) {}

  readonly requests: RemoteRequestSeen[] = [];
  private readonly cues: RemoteAnswer[] = [];
  private connectionCount = 0;
  private server: Server | undefined;
  port = 0;

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Connections accepted so far. */
  get connections() {
    return this.connectionCount;
  }

  /** The answers to give the next requests, in order. */
  cue(...answers: RemoteAnswer[]) {
    this.cues.push(...answers);
  }

  async start() {
    const server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("end", () => {
        const answer = this.cues.shift() ?? { status: 200, body: "{}" };
        const raw = Buffer.concat(chunks);
        this.requests.push({
          method: request.method ?? "",
          path: request.url ?? "",
          headers: request.headers,
          body: raw.toString("utf8"),
          raw,
          at: Date.now(),
          status: answer.status,
          ...(this.secret !== undefined && {
            signed: signatureValid(this.secret, request.headers, raw),
          }),
        });
        response.writeHead(answer.status, answer.headers).end(answer.body ?? "");
      });
    });
    server.on("connection", () => this.connectionCount++);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", resolve);
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  /** Stops listening: connections are refused until `start()` again (same port). */
  async stop() {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }

  /** The JSON bodies of the requests to `path`, in arrival order. */
  bodies(path: string) {
    return this.requests.filter((r) => r.path === path).map((r) => JSON.parse(r.body) as unknown);
  }
}

/**
 * The remote service's side of the relay: a JSON request to `url` signed with `secret`, as at
 * `nowMs` (a request from the past: an old timestamp).
 */
export function signedRequest(
  method: "POST" | "PUT" | "DELETE",
  url: string,
  secret: string,
  message: unknown,
  nowMs = Date.now(),
) {
  const body = JSON.stringify(message);
  return fetch(url, {
    method,
    headers: {
      "content-type": "application/json",
      ...signatureHeaders(secret, randomUUID(), body, nowMs),
    },
    body,
  });
}

/** A signed JSON POST (`signedRequest`). */
export const signedPost = (url: string, secret: string, message: unknown, nowMs = Date.now()) =>
  signedRequest("POST", url, secret, message, nowMs);

const SETS = {
  standard: [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER],
  legacy: [LEGACY_TIMESTAMP_HEADER, LEGACY_SIGNATURE_HEADER],
};

/**
 * One set of `signatureHeaders`' two: Standard Webhooks' alone, or the older `x-relay-*` alone
 * (a remote service not yet updated).
 */
export const signatureSet = (headers: Record<string, string>, set: keyof typeof SETS) =>
  Object.fromEntries(Object.entries(headers).filter(([name]) => SETS[set].includes(name)));
