import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { generateToken } from "../appservice/protocol/registration.ts";

/** The shortest `RELAY_SECRET` taken: 32 characters, so that no guessable word signs requests. */
export const MIN_RELAY_SECRET_LENGTH = 32;

/** The relay's secret for local mode, and where it came from (printed; the secret never is). */
export interface RelaySecret {
  secret: string;
  /** `RELAY_SECRET`, or the file it was read from or written to. */
  source: string;
  created: boolean;
}

/**
 * `RELAY_SECRET` when set (refused when shorter than 32 characters); else the secret in the file
 * `relay-secret` beside the registration, written with a fresh one (mode 0600) at the first start,
 * as the registration's tokens are: the relay never runs unauthenticated, and a restart keeps the
 * secret the remote service was given.
 */
export async function localRelaySecret(
  value: string | undefined,
  registrationPath: string,
): Promise<RelaySecret> {
  if (value !== undefined && value !== "") {
    if (value.length < MIN_RELAY_SECRET_LENGTH) {
      throw new Error(`RELAY_SECRET must be at least ${MIN_RELAY_SECRET_LENGTH} characters`);
    }
    return { secret: value, source: "RELAY_SECRET", created: false };
  }
  const file = join(dirname(registrationPath), "relay-secret");
  try {
    const stored = (await readFile(file, "utf8")).trim();
    if (stored.length < MIN_RELAY_SECRET_LENGTH) {
      throw new Error(`${file} must hold at least ${MIN_RELAY_SECRET_LENGTH} characters`);
    }
    return { secret: stored, source: file, created: false };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const secret = generateToken();
  // `wx`: another start racing this one keeps its file, and this one fails rather than differ.
  await writeFile(file, `${secret}\n`, { mode: 0o600, flag: "wx" });
  return { secret, source: file, created: true };
}
