import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { loadCrypto } from "../../functions/crypto/wasm.ts";
import {
  decryptAttachment,
  type EncryptedFileKeys,
  encryptAttachment,
  encryptedFileOf,
} from "../../functions/matrix/encrypted-attachment.ts";

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

describe("encrypted attachments received (someone's `file`)", () => {
  it("decrypt to the bytes a client's crypto (crypto-wasm's Attachment) encrypted", async () => {
    const sdk = await loadCrypto();
    const bytes = randomBytes(5000);
    const encrypted = sdk.Attachment.encrypt(new Uint8Array(bytes));
    const file = encryptedFileOf({
      url: "mxc://test.local/file",
      ...(JSON.parse(encrypted.mediaEncryptionInfo as string) as object),
    });
    expect(file).toBeDefined();
    const decrypted = decryptAttachment(encrypted.encryptedData, file as EncryptedFileKeys);
    expect(Buffer.from(decrypted as Uint8Array).equals(bytes)).toBe(true);
  });

  it("changed bytes decrypt to nothing; a `file` that is not a v2 A256CTR one with an mxc URI is none", () => {
    const { data, keys } = encryptAttachment(randomBytes(100));
    data[0] = (data[0] ?? 0) ^ 1;
    expect(decryptAttachment(data, keys)).toBeUndefined();
    const file = { url: "mxc://test.local/file", ...keys };
    expect(encryptedFileOf(file)).toBe(file);
    for (const bad of [
      undefined,
      "mxc://test.local/file",
      { ...file, url: "https://example.org/file" },
      { ...file, v: "v1" },
      { ...file, key: { ...keys.key, alg: "A128CTR" } },
      { ...file, key: { ...keys.key, k: "c2hvcnQ" } },
      { ...file, iv: "AAAA" },
      { ...file, hashes: {} },
    ]) {
      expect(encryptedFileOf(bad)).toBeUndefined();
    }
  });
});
