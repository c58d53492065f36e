// Apart from registration.ts so that a function matching namespaces bundles neither zod nor yaml.
import type { NamespaceKind, Registration } from "./registration.ts";

/**
 * Namespace matching as Synapse does it (Python `re.match`): anchored at the start only.
 */
export function createNamespaceMatcher(namespaces: Registration["namespaces"]) {
  const compiled = Object.fromEntries(
    (Object.keys(namespaces) as NamespaceKind[]).map((kind) => [
      kind,
      namespaces[kind].map((ns) => new RegExp(`^(?:${ns.regex})`)),
    ]),
  ) as Record<NamespaceKind, RegExp[]>;
  return {
    matches: (kind: NamespaceKind, id: string) =>
      compiled[kind].some((pattern) => pattern.test(id)),
  };
}

function uncovered(
  namespaces: Registration["namespaces"],
  kind: "users" | "aliases",
  serverName: string,
  prefixes: readonly string[],
): string[] {
  const matcher = createNamespaceMatcher(namespaces);
  const sigil = kind === "users" ? "@" : "#";
  return prefixes.filter((prefix) => !matcher.matches(kind, `${sigil}${prefix}x:${serverName}`));
}

/**
 * The namespaces (as `@prefix.*:server`, `#prefix.*:server`) an application's `userPrefixes` and
 * `aliasPrefixes` need and the registration lacks.
 */
export function missingNamespaces(
  namespaces: Registration["namespaces"],
  serverName: string,
  prefixes: { userPrefixes?: readonly string[]; aliasPrefixes?: readonly string[] },
): string[] {
  return [
    ...uncovered(namespaces, "users", serverName, prefixes.userPrefixes ?? []).map(
      (prefix) => `@${prefix}.*:${serverName}`,
    ),
    ...uncovered(namespaces, "aliases", serverName, prefixes.aliasPrefixes ?? []).map(
      (prefix) => `#${prefix}.*:${serverName}`,
    ),
  ];
}

/**
 * The literal localpart prefix of the first alias namespace written as a prefix, `#<prefix>.*:…`
 * (`_as_` for `#_as_.*:example\.org`): where aliases derived from keys go. Undefined when no
 * alias namespace has that form.
 */
export function derivedAliasPrefix(namespaces: Registration["namespaces"]): string | undefined {
  for (const { regex } of namespaces.aliases) {
    const literal = /^#((?:[A-Za-z0-9_=/-]|\\[._=/-])+)\.\*:/.exec(regex)?.[1];
    if (literal) return literal.replace(/\\(.)/g, "$1");
  }
  return undefined;
}
