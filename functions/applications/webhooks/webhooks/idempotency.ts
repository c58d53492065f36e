import {
  type AppDataStore,
  type AppResponse,
  type AppValue,
  MatrixError,
  sha256,
} from "../../../appservice/api.ts";

/** How long a key is remembered: a repeat within it gets the first answer. */
export const IDEMPOTENCY_KEY_TTL_MS = 24 * 60 * 60 * 1000;
/**
 * How long a request under a key may run before a repeat takes over (the first is taken to have
 * crashed): longer than the app function's timeout.
 */
export const IDEMPOTENCY_TAKEOVER_MS = 60_000;
const KEYS = "webhook-idempotency";
// Printable ASCII, as the IETF draft's examples and Stripe's keys are; quotes of a structured
// field string are taken off.
const KEY = /^[\x21-\x7e]{1,255}$/;

interface KeyRecord {
  bodyHash: string;
  startedAt: number;
  /** The answer given, once there is one. */
  response?: { status: number; body?: unknown; headers?: Record<string, string> };
}

/** A request's key, taken: run it, then `complete` with its answer or `release` on an error. */
export interface ClaimedKey {
  /** Seeds the request's actions: a repeat that takes over asks for the same calls. */
  seed: string;
  complete(response: AppResponse): Promise<void>;
  release(): Promise<void>;
}

/**
 * What a repeat must send again to be the same request: its media type and body. A multipart
 * form's boundary is left out: a client chooses a new one each time it builds the same form.
 * Only the `boundary` parameter and the delimiters (CRLF, `--`, the boundary) are taken out,
 * never a byte of content: a valid form's content cannot hold its delimiter, so two forms that
 * differ keep different hashes, whatever the boundary's length.
 */
export function bodyHashOf(contentType: string | undefined, bytes: Uint8Array): string {
  const type = contentType ?? "";
  const parameter = /;\s*boundary=("?)([^";]+)\1/i.exec(type);
  const boundary = parameter?.[2];
  if (!parameter || !boundary) return sha256(Buffer.concat([Buffer.from(`${type}\n`), bytes]));
  const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
  // The first delimiter may open the body without its CRLF.
  const delimited = `\r\n${body}`.replaceAll(`\r\n--${boundary}`, "\r\n--");
  return sha256(Buffer.from(`${type.replace(parameter[0], "")}\n${delimited}`, "latin1"));
}

/** The header's value, or undefined when the request has none; a malformed one is a 400. */
export function idempotencyKeyOf(headers: Record<string, string>): string | undefined {
  const raw = headers["idempotency-key"];
  if (raw === undefined) return undefined;
  const key = raw.trim().replace(/^"(.*)"$/, "$1");
  if (!KEY.test(key)) {
    throw new MatrixError(
      400,
      "M_INVALID_PARAM",
      "Idempotency-Key must be 1 to 255 printable ASCII characters",
    );
  }
  return key;
}

/**
 * Takes `key` for one request of the webhook stored under `webhookKey`, whose body hashes to
 * `bodyHash`. A key already answered gives that answer again (`Idempotency-Replayed: true`); one
 * used with another body is 422; one whose first request is still running is 409, until that
 * request is taken to have crashed, when this one takes over.
 */
export async function claimIdempotencyKey(
  data: AppDataStore,
  webhookKey: string,
  key: string,
  bodyHash: string,
  now: () => number = Date.now,
): Promise<ClaimedKey | { replay: AppResponse }> {
  const recordKey = sha256(`${webhookKey}\n${key}`);
  const write = (value: KeyRecord, condition: { ifAbsent: true } | { ifEquals: AppValue }) =>
    data.write([
      {
        collection: KEYS,
        key: recordKey,
        value: value as unknown as AppValue,
        expiresAt: value.startedAt + IDEMPOTENCY_KEY_TTL_MS,
        ...condition,
      },
    ]);
  for (;;) {
    const stored = (await data.get(KEYS, recordKey)) as KeyRecord | undefined;
    if (stored && stored.bodyHash !== bodyHash) {
      throw new MatrixError(
        422,
        "M_INVALID_PARAM",
        "This Idempotency-Key was used with another body in the last 24 hours",
      );
    }
    if (stored?.response) {
      const { status, body, headers } = stored.response;
      return {
        replay: { status, body, headers: { ...headers, "idempotency-replayed": "true" } },
      };
    }
    const time = now();
    if (stored && time - stored.startedAt < IDEMPOTENCY_TAKEOVER_MS) {
      return {
        replay: {
          status: 409,
          headers: { "retry-after": "1" },
          body: {
            errcode: "M_UNKNOWN",
            error: "A request with this Idempotency-Key is still being handled: retry shortly",
          },
        },
      };
    }
    const mine: KeyRecord = { bodyHash, startedAt: time };
    const taken = await write(
      mine,
      stored ? { ifEquals: stored as unknown as AppValue } : { ifAbsent: true },
    );
    if (!taken) continue;
    return {
      seed: `webhook-idempotency\n${recordKey}`,
      complete: async (response) => {
        const done: KeyRecord = {
          ...mine,
          response: {
            status: response.status,
            ...(response.body !== undefined && { body: response.body }),
            ...(response.headers && { headers: response.headers }),
          },
        };
        await write(done, { ifEquals: mine as unknown as AppValue });
      },
      release: async () => {
        await data.write([{ collection: KEYS, key: recordKey, delete: true }]);
      },
    };
  }
}
