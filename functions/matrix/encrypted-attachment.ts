import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import type { HomeserverCalls } from "./homeserver-calls.ts";
import type { UploadOptions } from "./media.ts";
import type { HomeserverReader } from "./room-state.ts";

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

/** How a room event names its media: `url`, or in an encrypted room `file` (the URI, the keys). */
export type RoomMedia = { url: string } | { file: { url: string } & EncryptedFileKeys };

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

/** Whether the room is encrypted (`m.room.encryption` in its state, as the bot reads it). */
export async function roomIsEncrypted(homeserver: HomeserverReader, roomId: string) {
  return (await homeserver.roomState(roomId, "m.room.encryption")) !== undefined;
}

/**
 * A room event's media uploaded as its room needs it: into an encrypted room encrypted first
 * (`encryptAttachment`), uploaded as `application/octet-stream` (its type is in the event, which
 * the outbox encrypts) and named by `file`; into any other room as it is, named by `url`.
 */
export async function uploadRoomMedia(
  homeserver: Pick<HomeserverCalls, "uploadMedia">,
  bytes: Uint8Array,
  options: UploadOptions,
  encrypted: boolean,
): Promise<RoomMedia> {
  if (!encrypted) return { url: await homeserver.uploadMedia(bytes, options) };
  const { data, keys } = encryptAttachment(bytes);
  // Sealed, it goes without its name too (as Element's uploads do): the name is in the message,
  // which the outbox encrypts; the homeserver would keep it in clear.
  const url = await homeserver.uploadMedia(data, { contentType: "application/octet-stream" });
  return { file: { url, ...keys } };
}

const base64 = (value: unknown) =>
  typeof value === "string" ? Buffer.from(value, "base64") : Buffer.alloc(0);

/**
 * The `file` of a room event (someone's, so unchecked) when it is one this appservice can
 * decrypt: a v2 `EncryptedFile` with an `mxc://` URI, an A256CTR key of 32 bytes, a 16-byte IV
 * and a SHA-256. Undefined for anything else.
 */
export function encryptedFileOf(file: unknown): ({ url: string } & EncryptedFileKeys) | undefined {
  if (typeof file !== "object" || file === null) return undefined;
  const { url, key, iv, hashes, v } = file as Record<string, unknown>;
  const jwk = (key ?? {}) as Record<string, unknown>;
  const sha = (hashes ?? {}) as Record<string, unknown>;
  const fits =
    typeof url === "string" &&
    url.startsWith("mxc://") &&
    v === "v2" &&
    jwk.alg === "A256CTR" &&
    typeof jwk.k === "string" &&
    Buffer.from(jwk.k, "base64url").length === 32 &&
    base64(iv).length === 16 &&
    base64(sha.sha256).length === 32;
  return fits ? (file as { url: string } & EncryptedFileKeys) : undefined;
}

/**
 * The bytes of an encrypted attachment, as clients decrypt it: undefined when the ciphertext is
 * not the one its `file` names (the SHA-256 differs), never bytes of another file.
 */
export function decryptAttachment(
  data: Uint8Array,
  file: EncryptedFileKeys,
): Uint8Array | undefined {
  const hash = createHash("sha256").update(data).digest();
  if (!hash.equals(base64(file.hashes.sha256))) return undefined;
  const decipher = createDecipheriv(
    "aes-256-ctr",
    Buffer.from(file.key.k, "base64url"),
    base64(file.iv),
  );
  return Buffer.concat([decipher.update(data), decipher.final()]);
}
