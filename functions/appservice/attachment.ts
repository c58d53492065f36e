import { badJson } from "../shared/errors.ts";

/** A file a request carries, decoded. */
export interface Attachment {
  contentType: string;
  bytes: Uint8Array;
  fileName?: string;
}

/** A MIME type without parameters (`image/png`): what a file's type must be to be taken. */
export const MIME_TYPE = /^[\w.+-]+\/[\w.+-]+$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * A file in a JSON request, `{"content_type", "data": "<base64>", "filename"?}`, named `field` in
 * the errors; undefined when absent. Any other shape is a 400 `M_BAD_JSON`.
 */
export function base64Attachment(value: unknown, field: string): Attachment | undefined {
  if (value === undefined) return undefined;
  const { content_type, data, filename } = (value ?? {}) as Record<string, unknown>;
  if (typeof content_type !== "string" || !MIME_TYPE.test(content_type)) {
    throw badJson(`${field}.content_type must be a MIME type`);
  }
  if (typeof data !== "string" || data === "" || !BASE64.test(data)) {
    throw badJson(`${field}.data must be base64`);
  }
  if (filename !== undefined && typeof filename !== "string") {
    throw badJson(`${field}.filename must be a string`);
  }
  return {
    contentType: content_type,
    bytes: Buffer.from(data, "base64"),
    ...(filename !== undefined && { fileName: filename }),
  };
}
