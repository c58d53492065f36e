import { createHmac, timingSafeEqual } from "node:crypto";

// Requests between an application and its remote service, signed both ways with one shared
// secret, as Standard Webhooks 1.0 signs (symmetric, v1): `webhook-id: <message ID>`,
// `webhook-timestamp: <unix seconds>` and `webhook-signature: v1,<base64 HMAC-SHA256 of
// "<id>.<timestamp>.<raw body>">`, the key being the secret's UTF-8 bytes (a Standard Webhooks
// library takes it as `whsec_` + its base64). The timestamp inside the MAC bounds a captured
// request's replay; the ID lets the receiver drop a repeat.
//
// Until 0.3.0 the older names are sent beside them and either set is accepted (README,
// "Updating"): `x-relay-timestamp: <unix seconds>` and `x-relay-signature: sha256=<hex
// HMAC-SHA256 of "<timestamp>.<raw body>">`, which named one application from the core.

export const ID_HEADER = "webhook-id";
export const TIMESTAMP_HEADER = "webhook-timestamp";
export const SIGNATURE_HEADER = "webhook-signature";
export const LEGACY_TIMESTAMP_HEADER = "x-relay-timestamp";
export const LEGACY_SIGNATURE_HEADER = "x-relay-signature";
/** Every header that vouches for a request to the origin it was meant for. */
export const SIGNATURE_HEADERS = [
  TIMESTAMP_HEADER,
  SIGNATURE_HEADER,
  LEGACY_TIMESTAMP_HEADER,
  LEGACY_SIGNATURE_HEADER,
];
/** How far a request's timestamp may be from now, either way (clocks drift). */
export const SIGNATURE_MAX_AGE_SECONDS = 300;

/** The shared secret (its UTF-8 bytes the key), or a key's bytes (a `whsec_` key decoded). */
type Secret = string | Uint8Array;
/** What is signed: the bytes sent, exactly (a string as UTF-8). */
type Body = Uint8Array | string;

const mac = (secret: Secret, signed: string, body: Body) =>
  createHmac("sha256", secret).update(signed).update(body).digest();

/** The headers that sign `body` (the bytes sent, exactly) as message `id` at `nowMs`. */
export function signatureHeaders(
  secret: Secret,
  id: string,
  body: Body,
  nowMs: number = Date.now(),
): Record<string, string> {
  const timestamp = String(Math.floor(nowMs / 1000));
  return {
    [ID_HEADER]: id,
    [TIMESTAMP_HEADER]: timestamp,
    [SIGNATURE_HEADER]: `v1,${mac(secret, `${id}.${timestamp}.`, body).toString("base64")}`,
    [LEGACY_TIMESTAMP_HEADER]: timestamp,
    [LEGACY_SIGNATURE_HEADER]: `sha256=${mac(secret, `${timestamp}.`, body).toString("hex")}`,
  };
}

type Headers = Record<string, string | string[] | undefined>;
type Check = (secret: Secret, headers: Headers, body: Body, nowMs: number) => boolean;

/**
 * Whether `headers` (lower-case names) sign `body` under `secret`, either way above, with a
 * timestamp within `SIGNATURE_MAX_AGE_SECONDS` of now. Compared in constant time; an empty
 * secret signs nothing.
 */
export function signatureValid(
  secret: Secret | undefined,
  headers: Headers,
  body: Body,
  nowMs: number = Date.now(),
): boolean {
  if (!secret || secret.length === 0) return false;
  return [standardSignatureValid, legacySignatureValid].some((valid) =>
    valid(secret, headers, body, nowMs),
  );
}

const fresh = (timestamp: string, nowMs: number) =>
  /^[0-9]{1,12}$/.test(timestamp) &&
  Math.abs(nowMs / 1000 - Number(timestamp)) <= SIGNATURE_MAX_AGE_SECONDS;

const standardSignatureValid: Check = (secret, headers, body, nowMs) => {
  const id = headers[ID_HEADER];
  const timestamp = headers[TIMESTAMP_HEADER];
  const signatures = headers[SIGNATURE_HEADER];
  if (typeof id !== "string" || id === "" || id.length > 256) return false;
  if (typeof timestamp !== "string" || typeof signatures !== "string") return false;
  if (!fresh(timestamp, nowMs)) return false;
  const expected = mac(secret, `${id}.${timestamp}.`, body);
  // Space-separated: a sender rotating its secret signs with both. Each MAC is 32 bytes, as
  // timingSafeEqual needs: the length is no secret.
  return signatures.split(" ").some((entry) => {
    const given = /^v1,([A-Za-z0-9+/]{43}=)$/.exec(entry)?.[1];
    return given !== undefined && timingSafeEqual(Buffer.from(given, "base64"), expected);
  });
};

const legacySignatureValid: Check = (secret, headers, body, nowMs) => {
  const timestamp = headers[LEGACY_TIMESTAMP_HEADER];
  const signature = headers[LEGACY_SIGNATURE_HEADER];
  if (typeof timestamp !== "string" || typeof signature !== "string") return false;
  if (!fresh(timestamp, nowMs)) return false;
  const given = /^sha256=([0-9a-f]{64})$/i.exec(signature)?.[1];
  return (
    given !== undefined &&
    timingSafeEqual(Buffer.from(given, "hex"), mac(secret, `${timestamp}.`, body))
  );
};
