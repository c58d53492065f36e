import * as z from "zod/mini";
import type { Registration } from "../appservice/protocol/registration.ts";
import type { Route } from "../appservice/protocol/routes.ts";
import { parseAllowedRanges } from "../remote/address-policy.ts";

/**
 * The environment variables the functions read, by the configuration field each fills. The
 * stack sets them from these names (`environmentOf`), so that a renamed one breaks both at once.
 */
export const ENV = {
  tableName: "TABLE_NAME",
  inboundQueueUrl: "INBOUND_QUEUE_URL",
  inboundDeadLetterQueueUrl: "INBOUND_DEAD_LETTER_QUEUE_URL",
  outboundQueueUrl: "OUTBOUND_QUEUE_URL",
  outboundDeadLetterQueueUrl: "OUTBOUND_DEAD_LETTER_QUEUE_URL",
  asTokenSecretArn: "AS_TOKEN_SECRET_ARN",
  hsTokenSecretArn: "HS_TOKEN_SECRET_ARN",
  adminTokenSecretArn: "ADMIN_TOKEN_SECRET_ARN",
  homeserverUrl: "HOMESERVER_URL",
  botUserId: "BOT_USER_ID",
  publicBaseUrl: "PUBLIC_BASE_URL",
  registration: "REGISTRATION_JSON",
  botDisplayName: "BOT_DISPLAY_NAME",
  botAvatarUrl: "BOT_AVATAR_URL",
  appRoutes: "APP_ROUTES",
  version: "APP_VERSION",
  logGroups: "LOG_GROUPS",
  deliveryAllowedAddresses: "DELIVERY_ALLOWED_ADDRESSES",
  remoteServiceUrl: "REMOTE_SERVICE_URL",
  remoteSecretArn: "REMOTE_SECRET_ARN",
  cryptoStoreSecretArn: "CRYPTO_STORE_SECRET_ARN",
} as const;

/**
 * The tokens by their registration names. In AWS each is a Secrets Manager secret of its own
 * (a plain string; `TOKEN_SECRET_FIELDS`), so that a function is granted only those it uses; an
 * older stack kept them in one secret, as JSON of these keys (`parseTokensSecret`).
 */
export const TOKENS_SECRET_KEYS = {
  asToken: "as_token",
  hsToken: "hs_token",
  adminToken: "admin_token",
} as const;
export type TokenName = keyof typeof TOKENS_SECRET_KEYS;

/** The configuration field holding the ARN of each token's secret. */
export const TOKEN_SECRET_FIELDS = {
  asToken: "asTokenSecretArn",
  hsToken: "hsTokenSecretArn",
  adminToken: "adminTokenSecretArn",
} as const satisfies Record<TokenName, keyof typeof ENV>;

const tokensSecret = z.object(
  Object.fromEntries(
    Object.values(TOKENS_SECRET_KEYS).map((key) => [key, z.string().check(z.minLength(1))]),
  ) as Record<(typeof TOKENS_SECRET_KEYS)[TokenName], z.ZodMiniString>,
);

/**
 * The tokens of the older stacks' one secret's JSON value (what the upgrade carries over); the
 * error names the keys missing, never a value.
 */
export function parseTokensSecret(value: string): Record<TokenName, string> {
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    throw new Error("The tokens secret is not JSON");
  }
  const result = tokensSecret.safeParse(json);
  if (!result.success) {
    const keys = result.error.issues.map((issue) => String(issue.path[0] ?? "(value)"));
    throw new Error(`The tokens secret lacks ${[...new Set(keys)].join(", ")}`);
  }
  return Object.fromEntries(
    Object.entries(TOKENS_SECRET_KEYS).map(([name, key]) => [name, result.data[key]]),
  ) as Record<TokenName, string>;
}

/**
 * Variables the stack sets for the platform, not for our code: Node reads `NODE_OPTIONS`,
 * Powertools' logger `POWERTOOLS_LOG_LEVEL`. Lambda's own (`AWS_REGION`, …) are not in the
 * template at all.
 */
export const PLATFORM_ENV = ["NODE_OPTIONS", "POWERTOOLS_LOG_LEVEL"] as const;

const text = z.string().check(z.minLength(1));
/** A base URL in one form, without a trailing slash: the application's links are built on it. */
export const trimBaseUrl = (url: string) => url.replace(/\/+$/, "");

// The stack wrote these from values it validated at synth time.
const json = <T>() =>
  z.pipe(
    text,
    z.transform((value) => JSON.parse(value) as T),
  );

const fields = {
  tableName: text,
  inboundQueueUrl: text,
  inboundDeadLetterQueueUrl: text,
  outboundQueueUrl: text,
  outboundDeadLetterQueueUrl: text,
  asTokenSecretArn: text,
  hsTokenSecretArn: text,
  adminTokenSecretArn: text,
  homeserverUrl: text,
  botUserId: text,
  publicBaseUrl: z.pipe(text, z.transform(trimBaseUrl)),
  registration: json<Pick<Registration, "id" | "namespaces">>(),
  botDisplayName: text,
  botAvatarUrl: z.optional(text),
  appRoutes: json<Pick<Route, "method" | "path">[]>(),
  version: text,
  /** The functions' log groups by function name: the console reads its traffic from them. */
  logGroups: json<Record<string, string>>(),
  /** CIDR ranges, comma-separated, that deliveries may reach though not public (`addressPolicy`). */
  deliveryAllowedAddresses: z.optional(
    z.pipe(
      z.string(),
      z.transform((value: string) => parseAllowedRanges(value)),
    ),
  ),
  /**
   * The remote service an application shares its secret with (its manifest's `remoteSecret`).
   * The outbox signs deliveries to its origin alone.
   */
  remoteServiceUrl: z.optional(text),
  /**
   * The secret the application shares with its remote service (the manifest's `remoteSecret`; a
   * Secrets Manager secret of its own, a plain string): the app function checks requests with
   * it, the outbox signs deliveries.
   */
  remoteSecretArn: z.optional(text),
  /**
   * The secret the bot device's crypto state is encrypted under (a plain string; the events
   * function's alone): set, encrypted rooms are read.
   */
  cryptoStoreSecretArn: z.optional(text),
} satisfies Record<keyof typeof ENV, z.ZodMiniType>;

type Field = keyof typeof fields;
const pick = <K extends Field>(...keys: K[]) =>
  z.object(Object.fromEntries(keys.map((key) => [key, fields[key]])) as Pick<typeof fields, K>);

/** What the application's code (events and app functions) needs to act. */
const service = [
  "tableName",
  "outboundQueueUrl",
  "botUserId",
  // Its own calls, and the HMAC key of the application's derived IDs.
  "asTokenSecretArn",
  "homeserverUrl",
  "publicBaseUrl",
  // The alias namespaces: where rooms created under a key get their alias.
  "registration",
  // Where deliveries may go: a target is checked when the application is given it.
  "deliveryAllowedAddresses",
] as const;

/** Each function's configuration: the variables it reads, and nothing else. */
export const configSchemas = {
  transactions: pick("tableName", "inboundQueueUrl", "hsTokenSecretArn"),
  events: pick(...service, "inboundQueueUrl", "inboundDeadLetterQueueUrl", "cryptoStoreSecretArn"),
  outbox: pick(
    "tableName",
    "outboundQueueUrl",
    "outboundDeadLetterQueueUrl",
    "asTokenSecretArn",
    "homeserverUrl",
    "botUserId",
    "registration",
    "botDisplayName",
    "botAvatarUrl",
    "deliveryAllowedAddresses",
    "remoteSecretArn",
    "remoteServiceUrl",
    "cryptoStoreSecretArn",
  ),
  queries: pick(
    "tableName",
    "asTokenSecretArn",
    "hsTokenSecretArn",
    "homeserverUrl",
    "botUserId",
    "registration",
  ),
  fallback: pick("appRoutes"),
  app: pick(...service, "remoteSecretArn"),
  admin: pick(
    ...service,
    "inboundQueueUrl",
    "inboundDeadLetterQueueUrl",
    "outboundDeadLetterQueueUrl",
    "registration",
    "version",
    "logGroups",
    "adminTokenSecretArn",
  ),
};

export type FunctionName = keyof typeof configSchemas;
export type Config<F extends FunctionName> = z.infer<(typeof configSchemas)[F]>;
/** A function's configuration as the environment holds it (strings). */
export type ConfigInput<F extends FunctionName> = z.input<(typeof configSchemas)[F]>;

/** The names of the variables a function reads. */
export const envNamesOf = (fn: FunctionName): string[] =>
  Object.keys(configSchemas[fn].def.shape).map((field) => ENV[field as Field]);

/** A function's configuration, read once from its environment; the error names each bad variable. */
export function readConfig<F extends FunctionName>(
  fn: F,
  env: Record<string, string | undefined>,
): Config<F> {
  const shape = configSchemas[fn].def.shape;
  const input = Object.fromEntries(
    Object.keys(shape).map((field) => [field, env[ENV[field as Field]]]),
  );
  const result = configSchemas[fn].safeParse(input);
  if (result.success) return result.data as Config<F>;
  const problems = result.error.issues.map(
    (issue) => `${ENV[issue.path[0] as Field] ?? "(environment)"}: ${issue.message}`,
  );
  throw new Error(`The ${fn} function's environment is invalid: ${problems.join("; ")}`);
}

/** The environment variables that give a function this configuration (what the stack sets). */
export const environmentOf = (values: Partial<Record<Field, string>>): Record<string, string> =>
  Object.fromEntries(
    Object.entries(values)
      .filter(([, value]) => value !== undefined)
      .map(([field, value]) => [ENV[field as Field], value as string]),
  );
