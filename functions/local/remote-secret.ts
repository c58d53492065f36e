import { readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { generateToken } from "../appservice/protocol/registration.ts";

/** The shortest remote secret taken: 32 characters, so that no guessable word signs requests. */
export const MIN_REMOTE_SECRET_LENGTH = 32;

/** The remote secret for local mode, and where it came from (printed; the secret never is). */
export interface RemoteSecret {
  secret: string;
  /** Its variable's name, or the file it was read from or written to. */
  source: string;
  created: boolean;
}

/**
 * The variable `name` of `env`, removed from it: read once at the start, it is passed on to the
 * functions that need it (app and outbox) and to nothing else, where the worker threads and child
 * processes would otherwise each copy it with the environment.
 */
export function takeVariable(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  delete env[name];
  return value;
}

/**
 * The variable the manifest names (`RELAY_SECRET`) when set, refused when shorter than 32
 * characters; else the secret in the file `<application>-secret` beside the registration, written
 * with a fresh one (mode 0600) at the first start, as the registration's tokens are: the
 * application never runs unauthenticated, and a restart keeps the secret the remote service was
 * given.
 */
export async function localRemoteSecret(
  {
    variable,
    value,
    application,
  }: { variable: string; value?: string | undefined; application: string },
  registrationPath: string,
): Promise<RemoteSecret> {
  if (value !== undefined && value !== "") {
    if (value.length < MIN_REMOTE_SECRET_LENGTH) {
      throw new Error(`${variable} must be at least ${MIN_REMOTE_SECRET_LENGTH} characters`);
    }
    return { secret: value, source: variable, created: false };
  }
  return secretInFile(join(dirname(registrationPath), `${application}-secret`));
}

/**
 * The secret kept in `file`, or a fresh one written there (mode 0600) if there is none: a
 * restart finds the same one.
 */
export async function secretInFile(file: string): Promise<RemoteSecret> {
  try {
    const stored = (await readFile(file, "utf8")).trim();
    if (stored.length < MIN_REMOTE_SECRET_LENGTH) {
      throw new Error(`${file} must hold at least ${MIN_REMOTE_SECRET_LENGTH} characters`);
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

/**
 * Where local mode keeps the secret the bot device's crypto state is encrypted under: in
 * `DATA_DIR` with the state itself, else beside the registration (a DynamoDB that outlives the
 * start, `DYNAMODB_ENDPOINT`, keeps the state: a new secret could not open it).
 */
export const cryptoStoreSecretFile = (dataDir: string | undefined, registrationPath: string) =>
  join(dataDir ?? dirname(registrationPath), "crypto-store-secret");
