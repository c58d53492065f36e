import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  createNamespaceMatcher,
  missingNamespaces,
} from "../../functions/appservice/protocol/namespaces.ts";
import {
  ephemeralFlagToAdd,
  generateToken,
  newRegistration,
  parseRegistration,
  RegistrationError,
  registrationYaml,
} from "../../functions/appservice/protocol/registration.ts";
import { freshRegistration } from "../../scripts/fresh-registration.ts";

const valid = () => ({
  id: "irc",
  url: "http://127.0.0.1:9000",
  as_token: "a".repeat(64),
  hs_token: "h".repeat(64),
  sender_localpart: "ircbot",
  namespaces: {
    users: [{ regex: "@_irc_.*:example\\.org", exclusive: true }],
    aliases: [{ regex: "#_irc_.*:example\\.org", exclusive: false }],
    rooms: [],
  },
  rate_limited: false,
  protocols: ["irc"],
  receive_ephemeral: true,
});

const errorOf = (value: unknown) => {
  try {
    parseRegistration(value, "reg.yaml");
  } catch (error) {
    expect(error).toBeInstanceOf(RegistrationError);
    return (error as Error).message;
  }
  throw new Error("expected the registration to be rejected");
};

describe("registration", () => {
  it("accepts a complete registration and keeps extension keys", () => {
    const registration = parseRegistration({ ...valid(), "org.matrix.msc3202": true });
    expect(registration.id).toBe("irc");
    expect((registration as Record<string, unknown>)["org.matrix.msc3202"]).toBe(true);
  });

  it("accepts url: null but not a missing url key", () => {
    expect(parseRegistration({ ...valid(), url: null }).url).toBeNull();
    const { url: _, ...withoutUrl } = valid();
    expect(errorOf(withoutUrl)).toMatch(/url/);
  });

  it("treats absent namespace lists as empty", () => {
    const registration = parseRegistration({ ...valid(), namespaces: {} });
    expect(registration.namespaces).toEqual({ users: [], aliases: [], rooms: [] });
  });

  it.each([
    ["hs_token", { hs_token: undefined }, /hs_token/],
    ["as_token type", { as_token: 5 }, /as_token/],
    ["id with |", { id: "a|b" }, /id: must not contain '\|'/],
    ["rate_limited type", { rate_limited: "yes" }, /rate_limited/],
    ["protocols type", { protocols: [1] }, /protocols\[0\]/],
    ["receive_ephemeral type", { receive_ephemeral: 1 }, /receive_ephemeral/],
    [
      "the unstable ephemeral flag's type",
      { "de.sorunome.msc2409.push_ephemeral": "yes" },
      /de\.sorunome\.msc2409\.push_ephemeral: /,
    ],
  ])("names the bad field: %s", (_, change, pattern) => {
    expect(errorOf({ ...valid(), ...change })).toMatch(pattern);
  });

  it("accepts the ephemeral flag under either name, and tells which one to add", () => {
    const { receive_ephemeral: _, ...withoutFlag } = valid();
    const unstableOnly = parseRegistration({
      ...withoutFlag,
      "de.sorunome.msc2409.push_ephemeral": true,
    });
    expect(ephemeralFlagToAdd(unstableOnly)).toBe("receive_ephemeral");
    expect(ephemeralFlagToAdd(parseRegistration(valid()))).toBe(
      "de.sorunome.msc2409.push_ephemeral",
    );
    expect(
      ephemeralFlagToAdd(
        parseRegistration({ ...valid(), "de.sorunome.msc2409.push_ephemeral": true }),
      ),
    ).toBeUndefined();
    expect(ephemeralFlagToAdd(parseRegistration(withoutFlag))).toBeUndefined();
    expect(
      ephemeralFlagToAdd(parseRegistration({ ...valid(), receive_ephemeral: false })),
    ).toBeUndefined();
  });

  it("names a bad namespace entry by its path", () => {
    const message = errorOf({
      ...valid(),
      namespaces: { users: [{ regex: "(unclosed", exclusive: true }, { regex: "@x" }] },
    });
    expect(message).toContain("namespaces.users[0].regex: not a valid regular expression");
    expect(message).toContain("namespaces.users[1].exclusive");
    expect(message).toContain("reg.yaml");
  });

  it("matches namespaces the way Synapse does: anchored at the start only", () => {
    const matcher = createNamespaceMatcher(parseRegistration(valid()).namespaces);
    expect(matcher.matches("users", "@_irc_alice:example.org")).toBe(true);
    expect(matcher.matches("users", "@alice:example.org")).toBe(false);
    // Not anchored at the start in the file, yet anchored as re.match does.
    expect(matcher.matches("users", "x@_irc_alice:example.org")).toBe(false);
    // re.match does not anchor the end: a longer ID still matches.
    expect(matcher.matches("users", "@_irc_alice:example.org.evil")).toBe(true);
    expect(matcher.matches("aliases", "#_irc_chan:example.org")).toBe(true);
  });

  it("generates 64-character random tokens", () => {
    const tokens = new Set(Array.from({ length: 20 }, generateToken));
    expect(tokens.size).toBe(20);
    for (const token of tokens) expect(token).toMatch(/^[A-Za-z0-9_-]{64}$/);
  });

  it("writes a fresh registration that loads back, with namespaces escaped for the server name", () => {
    const registration = newRegistration({
      id: "bridge",
      url: "https://as.example.org",
      senderLocalpart: "bot",
      serverName: "example.org",
      prefix: "_br_",
    });
    const reloaded = parseRegistration(parse(registrationYaml(registration)));
    expect(reloaded).toEqual(registration);
    expect(registration.as_token).not.toBe(registration.hs_token);
    // Ephemeral events under the stable name and MSC2409's, for older Synapse releases, and
    // what encryption needs: MSC3202's transaction extensions, MSC4190's device management.
    expect(reloaded).toMatchObject({
      receive_ephemeral: true,
      "de.sorunome.msc2409.push_ephemeral": true,
      "org.matrix.msc3202": true,
      "io.element.msc4190": true,
    });
    const matcher = createNamespaceMatcher(registration.namespaces);
    expect(matcher.matches("users", "@_br_x:example.org")).toBe(true);
    expect(matcher.matches("users", "@_br_x:exampleXorg")).toBe(false);
  });

  /** `npm run registration`'s program with `args` and APPLICATION: its output, or its failure. */
  const runRegistration = (args: string[], application: string) =>
    promisify(execFile)(process.execPath, ["--import", "tsx", "scripts/registration.ts", ...args], {
      cwd: new URL("../..", import.meta.url).pathname,
      env: { ...process.env, APPLICATION: application },
    });

  // The script itself, twice side by side: what it prints, and how it fails. The rest in-process.
  it("npm run registration prints a valid registration with the given options; exits 1 naming the applications when APPLICATION names none", async () => {
    const [{ stdout }, failure] = await Promise.all([
      runRegistration(
        ["--id", "cli", "--server-name", "matrix.example.com", "--url", "https://as.example.com"],
        "relay",
      ),
      runRegistration(["--server-name", "example.org"], "irc").then(
        () => undefined,
        (error: { code: number; stderr: string }) => error,
      ),
    ]);
    const registration = parseRegistration(parse(stdout));
    expect(registration.id).toBe("cli");
    expect(registration.url).toBe("https://as.example.com");
    expect(registration.hs_token).toHaveLength(64);
    expect(registration.namespaces.users.map((n) => n.regex)).toEqual([
      "@_as_.*:matrix\\.example\\.com",
      "@_relay_.*:matrix\\.example\\.com",
    ]);
    expect(stdout).toContain("receive_ephemeral: true\n");
    expect(stdout).toContain("de.sorunome.msc2409.push_ephemeral: true\n");
    expect(stdout).toContain("org.matrix.msc3202: true\n");
    expect(stdout).toContain("io.element.msc4190: true\n");
    expect(failure?.code).toBe(1);
    expect(failure?.stderr).toContain("APPLICATION=irc is none of echo-bot, relay, webhooks");
  });

  /** The fresh registration `npm run registration` makes with APPLICATION (or not) and its defaults. */
  const registrationFor = (application: string | undefined) =>
    freshRegistration(application, {
      url: "http://127.0.0.1:9000",
      serverName: "example.org",
      localpart: "appservice",
      prefix: "_as_",
    });

  it("npm run registration: the users and aliases of the application APPLICATION names, as npm start chooses it; an ID of its own by default", async () => {
    const [webhooks, relay] = await Promise.all([
      registrationFor(undefined),
      registrationFor("relay"),
    ]);
    const regexes = (registration: typeof webhooks) =>
      [...registration.namespaces.users, ...registration.namespaces.aliases].map((n) => n.regex);
    expect(regexes(webhooks)).toEqual([
      "@_as_.*:example\\.org",
      "@_webhook_.*:example\\.org",
      "#_as_.*:example\\.org",
    ]);
    expect(regexes(relay)).toEqual([
      "@_as_.*:example\\.org",
      "@_relay_.*:example\\.org",
      "#_as_.*:example\\.org",
      "#_relay_.*:example\\.org",
    ]);
    // Synapse refuses two registrations of one ID: each fresh one has its own.
    expect(webhooks.id).toMatch(/^serverless-appservice-[0-9a-f]{8}$/);
    expect(relay.id).toMatch(/^serverless-appservice-[0-9a-f]{8}$/);
    expect(webhooks.id).not.toBe(relay.id);
    await expect(registrationFor("irc")).rejects.toThrow(
      "APPLICATION=irc is none of echo-bot, relay, webhooks",
    );
  });

  it("missingNamespaces: the users and aliases an application needs that a registration lacks", () => {
    const { namespaces } = newRegistration({
      url: null,
      senderLocalpart: "bot",
      serverName: "example.org",
      prefix: "_as_",
      userPrefixes: ["_relay_"],
    });
    expect(
      missingNamespaces(namespaces, "example.org", {
        userPrefixes: ["_relay_", "_webhook_"],
        aliasPrefixes: ["_as_x", "_relay_"],
      }),
    ).toEqual(["@_webhook_.*:example.org", "#_relay_.*:example.org"]);
    expect(missingNamespaces(namespaces, "example.org", {})).toEqual([]);
  });
});
