import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { loadCrypto } from "../../functions/crypto/wasm.ts";
import { encryptAttachment } from "../../functions/matrix/encrypted-attachment.ts";

describe("files encrypted for encrypted rooms", () => {
  it("are decrypted by a client's crypto (crypto-wasm's Attachment) to the same bytes", async () => {
    const sdk = await loadCrypto();
    const bytes = randomBytes(70_000);
    const { data, keys } = encryptAttachment(bytes);
    expect(data.equals(bytes)).toBe(false);
    expect(keys.iv).toMatch(/^[A-Za-z0-9+/]{22}$/);
    const attachment = new sdk.EncryptedAttachment(
      new Uint8Array(data),
      JSON.stringify({ url: "mxc://test.local/file", ...keys }),
    );
    expect(Buffer.from(sdk.Attachment.decrypt(attachment)).equals(bytes)).toBe(true);
  });

  it("is refused by a client when the bytes were changed (the hash)", async () => {
    const sdk = await loadCrypto();
    const { data, keys } = encryptAttachment(randomBytes(1000));
    data[0] = (data[0] ?? 0) ^ 1;
    const attachment = new sdk.EncryptedAttachment(new Uint8Array(data), JSON.stringify(keys));
    expect(() => sdk.Attachment.decrypt(attachment)).toThrow();
  });

  it("uses a new key and IV for each file", () => {
    const bytes = randomBytes(100);
    const [one, two] = [encryptAttachment(bytes), encryptAttachment(bytes)];
    expect(one.keys.key.k).not.toBe(two.keys.key.k);
    expect(one.keys.iv).not.toBe(two.keys.iv);
    expect(one.data.equals(two.data)).toBe(false);
  });
});
