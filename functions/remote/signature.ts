import { createHmac, timingSafeEqual } from "node:crypto";

// Requests between an application and its remote service, signed both ways with one shared
// secret: `X-Relay-Timestamp: <unix seconds>` and `X-Relay-Signature: sha256=<hex HMAC-SHA256 of
// "<timestamp>.<raw body>">`. The timestamp inside the MAC bounds a captured request's replay.

export const TIMESTAMP_HEADER = "x-relay-timestamp";
export const SIGNATURE_HEADER = "x-relay-signature";
/** How far a request's timestamp may be from now, either way (clocks drift). */
export const SIGNATURE_MAX_AGE_SECONDS = 300;

const mac = (secret: string, timestamp: string, body: Uint8Array | string) =>
  createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest();

/** The two headers that sign `body` at `nowMs` (the bytes sent, exactly). */
export function signatureHeaders(
  secret: string,
  body: Uint8Array | string,
  nowMs: number = Date.now(),
): Record<string, string> {
  const timestamp = String(Math.floor(nowMs / 1000));
  return {
    [TIMESTAMP_HEADER]: timestamp,
    [SIGNATURE_HEADER]: `sha256=${mac(secret, timestamp, body).toString("hex")}`,
  };
}

/**
 * Whether `headers` (lower-case names) sign `body` under `secret`, with a timestamp within
 * `SIGNATURE_MAX_AGE_SECONDS` of now. Compared in constant time; an empty secret signs nothing.
 */
export function signatureValid(
  secret: string | undefined,
  headers: Record<string, string | string[] | undefined>,
  body: Uint8Array | string,
  nowMs: number = Date.now(),
): boolean {
  const timestamp = headers[TIMESTAMP_HEADER];
  const signature = headers[SIGNATURE_HEADER];
  if (!secret || typeof timestamp !== "string" || typeof signature !== "string") return false;
  if (!/^[0-9]{1,12}$/.test(timestamp)) return false;
  if (Math.abs(nowMs / 1000 - Number(timestamp)) > SIGNATURE_MAX_AGE_SECONDS) return false;
  const given = /^sha256=([0-9a-f]{64})$/i.exec(signature)?.[1];
  if (!given) return false;
  // Both 32 bytes: the length is no secret, and timingSafeEqual needs equal lengths.
  return timingSafeEqual(Buffer.from(given, "hex"), mac(secret, timestamp, body));
}
