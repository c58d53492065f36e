import http from "node:http";
import https from "node:https";
import type { LookupFunction } from "node:net";
import {
  type AddressPolicy,
  type Lookup,
  type ResolvedAddress,
  resolveTarget,
  TargetRefused,
} from "./address-policy.ts";
import { SIGNATURE_HEADERS } from "./signature.ts";

/** An HTTP request to a service other than the homeserver (a bridge's remote network, a webhook). */
export interface RemoteRequest {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  /** `http:` or `https:`, no user name or password in it. */
  url: string;
  headers?: Record<string, string>;
  /** UTF-8 text, or base64 with `bodyEncoding: "base64"` (binary bodies). */
  body?: string;
  bodyEncoding?: "base64";
  /** For the whole exchange, redirects included. @default `DEFAULT_REMOTE_TIMEOUT_MS` */
  timeoutMs?: number;
}

export interface RemoteResponse {
  status: number;
  /** Lower-case names. */
  headers: Record<string, string>;
  /** The body as UTF-8 text, cut at the client's `maxResponseBytes`. */
  body: string;
  truncated: boolean;
  /** Seconds, from `Retry-After` (a number of seconds or an HTTP date). */
  retryAfterSeconds?: number;
  /** Where the answer came from, after redirects. */
  url: string;
}

export interface SendOptions {
  /**
   * Refuse (`TargetRefused`, nothing sent there) a redirect to another origin: for requests whose
   * headers vouch for the sender (signed ones), which must reach only the origin they were
   * signed for.
   */
  sameOriginOnly?: boolean;
}

/**
 * Sends remote requests. Throws `TargetRefused` (nothing sent) when the address policy refuses
 * the target or one it redirects to, or a redirect leaves the origin under `sameOriginOnly`,
 * and otherwise only on network failure (a timeout's error is a `TimeoutError`).
 */
export interface RemoteClient {
  send(request: RemoteRequest, options?: SendOptions): Promise<RemoteResponse>;
}

export const DEFAULT_REMOTE_TIMEOUT_MS = 10_000;
/** The longest timeout a request may ask for: the outbox's time per action is planned on it. */
export const MAX_REMOTE_TIMEOUT_MS = 30_000;
/** What is kept of an answer: enough for an error message, never a flood into memory. */
export const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024;
export const DEFAULT_MAX_REDIRECTS = 5;

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
/**
 * Headers not carried to another origin by a redirect: credentials, as browsers do, and the
 * signature headers (`signature.ts`), which vouch for the request to the origin it was meant for.
 */
const CREDENTIAL_HEADERS = ["authorization", "cookie", "proxy-authorization", ...SIGNATURE_HEADERS];

/** `Retry-After` as seconds from now: a number of seconds or an HTTP date; undefined otherwise. */
export function retryAfterSeconds(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return seconds >= 0 ? seconds : undefined;
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - now) / 1000);
}

/** `promise`, or the signal's reason once it aborts (a name lookup does not take a signal). */
const untilAborted = <T>(promise: Promise<T>, signal: AbortSignal): Promise<T> =>
  new Promise<T>((resolve, reject) => {
    const abort = () => reject(signal.reason);
    if (signal.aborted) abort();
    signal.addEventListener("abort", abort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", abort));
  });

export interface HttpRemoteClientOptions {
  policy: AddressPolicy;
  maxResponseBytes?: number;
  maxRedirects?: number;
  /** Name resolution (the system's by default); tests give their own. */
  lookup?: Lookup;
}

/**
 * Remote requests over HTTP(S), to the addresses `policy` allows only: each hop's name is
 * resolved once, checked, and connected to at the address checked; redirects are followed
 * here (at most `maxRedirects`), each target checked the same way.
 */
export class HttpRemoteClient implements RemoteClient {
  constructor(private readonly options: HttpRemoteClientOptions) {}

  async send(request: RemoteRequest, options: SendOptions = {}): Promise<RemoteResponse> {
    const { policy, lookup } = this.options;
    const maxRedirects = this.options.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
    const signal = AbortSignal.timeout(request.timeoutMs ?? DEFAULT_REMOTE_TIMEOUT_MS);
    let url = new URL(request.url);
    let method: string = request.method;
    let headers = { ...request.headers };
    let body =
      request.body === undefined
        ? undefined
        : Buffer.from(request.body, request.bodyEncoding === "base64" ? "base64" : "utf8");
    for (let redirects = 0; ; redirects++) {
      const target = await untilAborted(resolveTarget(url.hostname, policy, lookup), signal);
      const response = await this.exchange(url, target, method, headers, body, signal);
      const location = response.headers.location;
      if (!REDIRECTS.has(response.status) || !location || redirects >= maxRedirects) {
        return response;
      }
      const next = new URL(location, url);
      if (next.protocol !== "http:" && next.protocol !== "https:") {
        throw new TargetRefused(`redirected to a ${next.protocol} URL`);
      }
      if (next.origin !== url.origin) {
        if (options.sameOriginOnly) {
          throw new TargetRefused(
            `redirected from ${url.origin} to another origin (${next.origin}), not followed`,
          );
        }
        headers = Object.fromEntries(
          Object.entries(headers).filter(
            ([name]) => !CREDENTIAL_HEADERS.includes(name.toLowerCase()),
          ),
        );
      }
      // As browsers do: 303 is always a GET, and so is a 301/302 after a POST.
      if (
        response.status === 303 ||
        ((response.status === 301 || response.status === 302) && method === "POST")
      ) {
        if (method !== "HEAD") method = "GET";
        body = undefined;
        headers = Object.fromEntries(
          Object.entries(headers).filter(([name]) => !name.toLowerCase().startsWith("content-")),
        );
      }
      url = next;
    }
  }

  private exchange(
    url: URL,
    target: ResolvedAddress,
    method: string,
    headers: Record<string, string>,
    body: Buffer | undefined,
    signal: AbortSignal,
  ): Promise<RemoteResponse> {
    const maxBytes = this.options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    // The connection goes to the address checked, whatever the name resolves to now.
    const pinned: LookupFunction = (_hostname, options, callback) => {
      if (options.all) callback(null, [target]);
      else callback(null, target.address, target.family);
    };
    const transport = url.protocol === "https:" ? https : http;
    return new Promise<RemoteResponse>((resolve, reject) => {
      const fail = (error: unknown) => reject(signal.aborted ? signal.reason : error);
      const request = transport.request(url, {
        method,
        headers: { ...headers, ...(body && { "content-length": String(body.length) }) },
        lookup: pinned,
        // A fresh connection per request: a pooled one could be to an address checked for
        // another request's policy, and Lambda keeps nothing warm worth reusing here.
        agent: false,
        signal,
      });
      request.on("error", fail);
      request.on("response", (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        let truncated = false;
        const finish = () => {
          const responseHeaders: Record<string, string> = {};
          for (const [name, value] of Object.entries(response.headers)) {
            if (value !== undefined) {
              responseHeaders[name] = Array.isArray(value) ? value.join(", ") : value;
            }
          }
          const retryAfter = retryAfterSeconds(responseHeaders["retry-after"]);
          resolve({
            status: response.statusCode ?? 0,
            headers: responseHeaders,
            body: Buffer.concat(chunks).toString("utf8"),
            truncated,
            ...(retryAfter !== undefined && { retryAfterSeconds: retryAfter }),
            url: url.href,
          });
        };
        response.on("data", (chunk: Buffer) => {
          if (truncated) return;
          const room = maxBytes - size;
          if (chunk.length > room) {
            chunks.push(chunk.subarray(0, room));
            size = maxBytes;
            truncated = true;
            // The rest is not read: the connection is closed, and the answer is what was kept.
            response.destroy();
            finish();
            return;
          }
          chunks.push(chunk);
          size += chunk.length;
        });
        response.on("end", finish);
        response.on("error", (error) => {
          if (!truncated) fail(error);
        });
      });
      request.end(body);
    });
  }
}
