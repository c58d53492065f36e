import { describe, expect, it } from "vitest";
import { signatureHeaders, signatureValid } from "../../functions/remote/signature.ts";

// The relay's signature both ways: X-Relay-Timestamp and X-Relay-Signature, HMAC-SHA256 of
// "<timestamp>.<raw body>" under the shared secret, within 5 minutes.

const SECRET = "0123456789abcdef0123456789abcdef";
const NOW = 1_700_000_000_000;

describe("signatureHeaders / signatureValid", () => {
  it("the documented scheme: hex HMAC-SHA256 of '<timestamp>.<body>', sha256= prefixed", async () => {
    const { createHmac } = await import("node:crypto");
    const headers = signatureHeaders(SECRET, '{"a":1}', NOW);
    expect(headers).toEqual({
      "x-relay-timestamp": "1700000000",
      "x-relay-signature": `sha256=${createHmac("sha256", SECRET).update('1700000000.{"a":1}').digest("hex")}`,
    });
    expect(signatureValid(SECRET, headers, '{"a":1}', NOW)).toBe(true);
    expect(signatureValid(SECRET, headers, Buffer.from('{"a":1}'), NOW + 299_000)).toBe(true);
  });

  it("refuses another body, secret, a timestamp over 5 minutes off either way, malformed headers, no secret", () => {
    const headers = signatureHeaders(SECRET, "body", NOW);
    expect(signatureValid(SECRET, headers, "body!", NOW)).toBe(false);
    expect(signatureValid(`${SECRET}x`, headers, "body", NOW)).toBe(false);
    expect(signatureValid(SECRET, headers, "body", NOW + 301_000)).toBe(false);
    expect(signatureValid(SECRET, headers, "body", NOW - 301_000)).toBe(false);
    expect(signatureValid(undefined, headers, "body", NOW)).toBe(false);
    expect(signatureValid("", signatureHeaders("", "body", NOW), "body", NOW)).toBe(false);
    const signature = headers["x-relay-signature"] as string;
    for (const bad of [
      { ...headers, "x-relay-signature": signature.slice(7) },
      { ...headers, "x-relay-signature": `${signature}00` },
      { ...headers, "x-relay-signature": [signature, signature] },
      { ...headers, "x-relay-timestamp": "1700000000.5" },
      { ...headers, "x-relay-timestamp": "-1" },
      { "x-relay-signature": signature },
      {},
    ]) {
      expect(signatureValid(SECRET, bad, "body", NOW)).toBe(false);
    }
  });
});
