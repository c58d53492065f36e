import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { signatureHeaders, signatureValid } from "../../functions/remote/signature.ts";
import { signatureSet } from "../support/remote-service.ts";

// The remote service's signature both ways, under the shared secret, within 5 minutes: Standard
// Webhooks' `webhook-id`/`webhook-timestamp`/`webhook-signature`, and until 0.3.0 the older
// `x-relay-timestamp`/`x-relay-signature` beside them, either accepted.

const SECRET = "0123456789abcdef0123456789abcdef";
const NOW = 1_700_000_000_000;

describe("signatureHeaders / signatureValid", () => {
  it("Standard Webhooks' published test vector, signed and checked", () => {
    // The `whsec_` key of the spec's example, decoded: what a Standard Webhooks library uses.
    const key = Buffer.from("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "base64");
    const body = '{"test": 2432232314}';
    const at = 1_614_265_330_000;
    const headers = signatureHeaders(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", body, at);
    expect(signatureSet(headers, "standard")).toEqual({
      "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
      "webhook-timestamp": "1614265330",
      "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    });
    expect(signatureValid(key, signatureSet(headers, "standard"), body, at)).toBe(true);
  });

  it("sends both sets (the older one: hex HMAC-SHA256 of '<timestamp>.<body>'); accepts either alone", () => {
    const headers = signatureHeaders(SECRET, "d1", '{"a":1}', NOW);
    expect(signatureSet(headers, "legacy")).toEqual({
      "x-relay-timestamp": "1700000000",
      "x-relay-signature": `sha256=${createHmac("sha256", SECRET).update('1700000000.{"a":1}').digest("hex")}`,
    });
    for (const set of ["standard", "legacy"] as const) {
      expect(signatureValid(SECRET, signatureSet(headers, set), '{"a":1}', NOW)).toBe(true);
      expect(
        signatureValid(SECRET, signatureSet(headers, set), Buffer.from('{"a":1}'), NOW + 299_000),
      ).toBe(true);
    }
    // A sender rotating its secret signs with the old and the new one.
    const rotated = signatureHeaders(`${SECRET}old`, "d1", '{"a":1}', NOW)["webhook-signature"];
    const signatures = `${rotated} ${headers["webhook-signature"]}`;
    const both = { ...signatureSet(headers, "standard"), "webhook-signature": signatures };
    expect(signatureValid(SECRET, both, '{"a":1}', NOW)).toBe(true);
  });

  it("refuses another body, secret, ID, a timestamp over 5 minutes off either way, malformed headers, no secret", () => {
    const headers = signatureHeaders(SECRET, "d1", "body", NOW);
    expect(signatureValid(SECRET, headers, "body!", NOW)).toBe(false);
    expect(signatureValid(`${SECRET}x`, headers, "body", NOW)).toBe(false);
    expect(signatureValid(SECRET, headers, "body", NOW + 301_000)).toBe(false);
    expect(signatureValid(SECRET, headers, "body", NOW - 301_000)).toBe(false);
    expect(signatureValid(undefined, headers, "body", NOW)).toBe(false);
    expect(signatureValid("", signatureHeaders("", "d1", "body", NOW), "body", NOW)).toBe(false);
    const standard = signatureSet(headers, "standard");
    const signature = standard["webhook-signature"] as string;
    const legacy = signatureSet(headers, "legacy");
    const legacySignature = legacy["x-relay-signature"] as string;
    for (const bad of [
      { ...standard, "webhook-id": "d2" },
      { ...standard, "webhook-id": "" },
      { ...standard, "webhook-signature": signature.slice(3) },
      { ...standard, "webhook-signature": `v2,${signature.slice(3)}` },
      { ...standard, "webhook-signature": [signature, signature] },
      { ...standard, "webhook-timestamp": "1700000000.5" },
      { "webhook-timestamp": "1700000000", "webhook-signature": signature },
      { ...legacy, "x-relay-signature": legacySignature.slice(7) },
      { ...legacy, "x-relay-signature": `${legacySignature}00` },
      { ...legacy, "x-relay-signature": [legacySignature, legacySignature] },
      { ...legacy, "x-relay-timestamp": "1700000000.5" },
      { ...legacy, "x-relay-timestamp": "-1" },
      { "x-relay-signature": legacySignature },
      // One set's timestamp does not vouch for the other's signature.
      { "webhook-id": "d1", "webhook-signature": signature, "x-relay-timestamp": "1700000000" },
      {},
    ]) {
      expect(signatureValid(SECRET, bad, "body", NOW)).toBe(false);
    }
  });
});
