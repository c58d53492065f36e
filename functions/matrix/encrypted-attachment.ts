import { createCipheriv, createHash, randomBytes } from "node:crypto";

/**
 * What a room event's `file` holds besides the upload's `url` (the spec's `EncryptedFile`): the
 * key to decrypt it (a JWK), the IV, and the ciphertext's SHA-256, unpadded base64.
 */
export interface EncryptedFileKeys {
  key: { kty: "oct"; key_ops: ["encrypt", "decrypt"]; alg: "A256CTR"; k: string; ext: true };
  iv: string;
  hashes: { sha256: string };
  v: "v2";
}

const unpadded = (bytes: Buffer) => bytes.toString("base64").replace(/=+$/, "");

/**
 * A file encrypted for an encrypted room, as clients do: AES-256-CTR under a fresh random key
 * and IV, whose low 64 bits (the counter) start at zero. Upload `data`; send `{url, ...keys}` as
 * the event's `file` (instead of `url`).
 */
export function encryptAttachment(bytes: Uint8Array): { data: Buffer; keys: EncryptedFileKeys } {
  const key = randomBytes(32);
  const iv = Buffer.concat([randomBytes(8), Buffer.alloc(8)]);
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  const data = Buffer.concat([cipher.update(bytes), cipher.final()]);
  return {
    data,
    keys: {
      key: {
        kty: "oct",
        key_ops: ["encrypt", "decrypt"],
        alg: "A256CTR",
        k: key.toString("base64url"),
        ext: true,
      },
      iv: unpadded(iv),
      hashes: { sha256: unpadded(createHash("sha256").update(data).digest()) },
      v: "v2",
    },
  };
}
