import { createHash } from "node:crypto";

/** Hex SHA-256: how every identifier in the pipeline is derived. */
export const sha256 = (text: string): string => createHash("sha256").update(text).digest("hex");
