import { describe, expect, it } from "vitest";
import { bodyHashOf } from "../../functions/applications/webhooks/webhooks/idempotency.ts";

const formOf = (boundary: string, value: string) =>
  Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n${value}\r\n--${boundary}--\r\n`,
    "latin1",
  );
const typeOf = (boundary: string) => `multipart/form-data; boundary=${boundary}`;
const hashOf = (boundary: string, value: string) =>
  bodyHashOf(typeOf(boundary), formOf(boundary, value));

describe("bodyHashOf: what an Idempotency-Key's repeat must send again", () => {
  it("the same form under another boundary, long or of one letter, quoted or not, hashes the same", () => {
    const long = hashOf("------------------------d74496d66958873e", "build 42");
    expect(hashOf("X-BOUNDARY-2", "build 42")).toBe(long);
    // One letter that also occurs in the media type and in the content.
    expect(hashOf("m", "build 42")).toBe(long);
    expect(hashOf("a", "build 42")).toBe(long);
    expect(
      bodyHashOf('multipart/form-data; boundary="quoted-1"', formOf("quoted-1", "build 42")),
    ).toBe(long);
  });

  it("forms that differ in content hash apart, even where the content holds `--` and a boundary's letters", () => {
    // Taking `--ab` out of the content (not only out of the delimiters) made these two equal.
    expect(hashOf("ab", "x--abq")).not.toBe(hashOf("ac", "x--q"));
    expect(hashOf("a", "build 42")).not.toBe(hashOf("a", "build 43"));
  });

  it("other bodies: their media type and bytes, as sent", () => {
    const json = Buffer.from('{"text":"x"}');
    expect(bodyHashOf("application/json", json)).toBe(bodyHashOf("application/json", json));
    expect(bodyHashOf("application/json", json)).not.toBe(bodyHashOf("text/plain", json));
  });
});
