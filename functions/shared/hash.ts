import { createHash, createHmac } from "node:crypto";

/** Hex SHA-256: how every identifier in the pipeline is derived (and media's content hash). */
export const sha256 = (data: string | Uint8Array): string =>
  createHash("sha256").update(data).digest("hex");

/**
 * A secret derived from `key` for `label`: base64url HMAC-SHA256, 256 bits. The same label
 * always gives the same secret; without the key, none can be guessed.
 */
export const deriveSecret = (key: string, label: string): string =>
  createHmac("sha256", key).update(label).digest("base64url");
