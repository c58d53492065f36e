import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parse, stringify } from "yaml";
import { z } from "zod";

const regexString = z.string().refine(
  (value) => {
    try {
      new RegExp(value);
      return true;
    } catch {
      return false;
    }
  },
  { message: "not a valid regular expression" },
);

export const UNSTABLE_RECEIVE_EPHEMERAL = "de.sorunome.msc2409.push_ephemeral";
/** Synapse's opt-in to MSC3202's transaction extensions: device lists and one-time-key counts. */
export const MSC3202_TRANSACTION_EXTENSIONS = "org.matrix.msc3202";
/** Synapse's opt-in to MSC4190: the appservice makes its users' devices (`PUT /devices/{id}`). */
export const MSC4190_DEVICE_MANAGEMENT = "io.element.msc4190";

const namespace = z.object({ regex: regexString, exclusive: z.boolean() });
const namespaceList = z.array(namespace).default([]);

/** The AS registration file, as the spec defines it (extension keys pass through). */
const registrationSchema = z.looseObject({
  id: z
    .string()
    .min(1)
    .refine((id) => !id.includes("|"), { message: "must not contain '|'" }),
  // The key is required; null means "send no traffic".
  url: z.string().nullable(),
  as_token: z.string().min(1),
  hs_token: z.string().min(1),
  sender_localpart: z.string().min(1),
  namespaces: z.object({
    users: namespaceList,
    aliases: namespaceList,
    rooms: namespaceList,
  }),
  rate_limited: z.boolean().optional(),
  protocols: z.array(z.string()).optional(),
  receive_ephemeral: z.boolean().optional(),
  // MSC2409's unstable name for receive_ephemeral: what Synapse before 1.156 reads.
  [UNSTABLE_RECEIVE_EPHEMERAL]: z.boolean().optional(),
  [MSC3202_TRANSACTION_EXTENSIONS]: z.boolean().optional(),
  [MSC4190_DEVICE_MANAGEMENT]: z.boolean().optional(),
});

export type Registration = z.infer<typeof registrationSchema>;

/**
 * The flag to add to a registration that asks for ephemeral events under one name only: each
 * Synapse release reads one or the other, so either one set means both.
 */
export function ephemeralFlagToAdd(
  registration: Pick<Registration, "receive_ephemeral" | typeof UNSTABLE_RECEIVE_EPHEMERAL>,
): "receive_ephemeral" | typeof UNSTABLE_RECEIVE_EPHEMERAL | undefined {
  const stable = registration.receive_ephemeral === true;
  if (stable === (registration[UNSTABLE_RECEIVE_EPHEMERAL] === true)) return undefined;
  return stable ? UNSTABLE_RECEIVE_EPHEMERAL : "receive_ephemeral";
}
export type NamespaceKind = keyof Registration["namespaces"];

export class RegistrationError extends Error {
  override name = "RegistrationError";
}

/** Validates a parsed registration; the error names every bad field. */
export function parseRegistration(value: unknown, source = "registration"): Registration {
  const result = registrationSchema.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues.map((issue) => {
    const field = issue.path
      .map((part, i) => (typeof part === "number" ? `[${part}]` : i ? `.${String(part)}` : part))
      .join("");
    return `${field || "(root)"}: ${issue.message}`;
  });
  throw new RegistrationError(`${source} is invalid: ${problems.join("; ")}`);
}

export async function loadRegistration(path: string): Promise<Registration> {
  const text = await readFile(path, "utf8");
  let document: unknown;
  try {
    document = parse(text);
  } catch (error) {
    throw new RegistrationError(`${path} is not valid YAML: ${(error as Error).message}`);
  }
  return parseRegistration(document, path);
}

/** A 64-character URL-safe token (384 bits). */
export const generateToken = (): string => randomBytes(48).toString("base64url");

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export interface NewRegistrationOptions {
  id: string;
  url: string | null;
  senderLocalpart: string;
  serverName: string;
  /** Localpart prefix of the users and aliases this appservice owns, e.g. `_bridge_`. */
  prefix: string;
  /** More user localpart prefixes it owns (the application's `userPrefixes`). */
  userPrefixes?: readonly string[];
  /** More alias localpart prefixes it owns (the application's `aliasPrefixes`). */
  aliasPrefixes?: readonly string[];
}

/** A registration's fields but the tokens and the url: what can be said without secrets. */
export function publicRegistration(
  options: Omit<NewRegistrationOptions, "url">,
): Omit<Registration, "as_token" | "hs_token" | "url"> {
  const server = escapeRegex(options.serverName);
  const userPrefixes = [options.prefix, ...(options.userPrefixes ?? [])].map(escapeRegex);
  const aliasPrefixes = [options.prefix, ...(options.aliasPrefixes ?? [])].map(escapeRegex);
  return {
    id: options.id,
    sender_localpart: options.senderLocalpart,
    rate_limited: false,
    // Both names: each Synapse release reads one or the other (README: homeserver versions).
    receive_ephemeral: true,
    [UNSTABLE_RECEIVE_EPHEMERAL]: true,
    // What encrypted rooms need (docs/encryption.md): the to-device messages come with the
    // ephemeral events (MSC2409), device lists and key counts with MSC3202, and the bot's
    // device is made with MSC4190 where the homeserver has it.
    [MSC3202_TRANSACTION_EXTENSIONS]: true,
    [MSC4190_DEVICE_MANAGEMENT]: true,
    // Exclusive users and aliases under the prefix.
    namespaces: {
      users: [...new Set(userPrefixes)].map((user) => ({
        regex: `@${user}.*:${server}`,
        exclusive: true,
      })),
      aliases: [...new Set(aliasPrefixes)].map((alias) => ({
        regex: `#${alias}.*:${server}`,
        exclusive: true,
      })),
      rooms: [],
    },
  };
}

/**
 * The ID of a fresh registration given none: Synapse refuses to start with two registrations of
 * one ID, so each gets its own (two `npm start`s on one homeserver).
 */
export const defaultRegistrationId = (): string =>
  `serverless-appservice-${randomBytes(4).toString("hex")}`;

/**
 * A fresh registration with random tokens and exclusive user/alias namespaces under `prefix`;
 * without an `id`, a new one (`defaultRegistrationId`).
 */
export function newRegistration(
  options: Omit<NewRegistrationOptions, "id"> & { id?: string | undefined },
): Registration {
  return parseRegistration({
    ...publicRegistration({ ...options, id: options.id ?? defaultRegistrationId() }),
    url: options.url,
    as_token: generateToken(),
    hs_token: generateToken(),
  });
}

export const registrationYaml = (registration: Registration): string => stringify(registration);
