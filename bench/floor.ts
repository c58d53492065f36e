// A function's bundle beside its floor: a bundle of only the AWS SDK clients it imports (the
// same clients and commands, nothing of ours) and the npm packages its part of the application
// imports (the application's choice, not the appservice's). Used by `npm run bench`
// (bench/bundles.ts) and by the bundle test (test/unit/bundles.test.ts).
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { build } from "esbuild";
import { DEFAULT_APPLICATION } from "../functions/local/applications.ts";
import { esbuildOptionsFor } from "../infra/bundling.ts";

const root = join(import.meta.dirname, "..");
/**
 * Whose npm packages count in the floor: the application's (its choice, not the appservice's),
 * and the crypto layer's (crypto-wasm: what decrypting needs, in the function that decrypts).
 */
const APPLICATION_FOLDERS = ["functions/applications/", "functions/crypto/"];

/** Each function's bundle may be at most this much larger than its floor, in bytes and load time. */
export const FLOOR_RATIO_TARGET = 1.15;

export interface Bundle {
  bytes: number;
  /** The files bundled, relative to the project's root. */
  inputs: string[];
}

/** `entry` bundled as `cdk synth` bundles a function for `application` (source maps aside). */
export async function bundle(
  entry: string,
  outfile: string,
  application = DEFAULT_APPLICATION,
): Promise<Bundle> {
  const result = await build({
    ...esbuildOptionsFor(application),
    entryPoints: [entry],
    outfile,
    metafile: true,
    sourcemap: false,
  });
  // The files that contributed code: the metafile also lists those parsed and then tree-shaken.
  const [output] = Object.values(result.metafile.outputs);
  const inputs = Object.entries(output?.inputs ?? {})
    .filter(([, { bytesInOutput }]) => bytesInOutput > 0)
    .map(([path]) => path);
  return { bytes: (await stat(outfile)).size, inputs };
}

/** The names each module specifier is imported with, over our own source files among `inputs`. */
async function importsOf(inputs: string[], keep: (specifier: string, file: string) => boolean) {
  const imports = new Map<string, Set<string>>();
  for (const input of inputs.filter((path) => !path.includes("node_modules"))) {
    const source = await readFile(join(root, input), "utf8");
    for (const [, clause, specifier] of source.matchAll(
      /import\s+((?:type\s+)?[\w*{}\s,]*?)\s*from\s*"([^".][^"]*)"/g,
    )) {
      if (!keep(specifier as string, input) || (clause as string).startsWith("type ")) continue;
      const names = imports.get(specifier as string) ?? new Set<string>();
      const braced = /\{([^}]*)\}/.exec(clause as string)?.[1];
      for (const name of (braced ?? "").split(",").map((n) => n.trim())) {
        if (name && !name.startsWith("type ")) names.add(name);
      }
      imports.set(specifier as string, names);
    }
    // The crypto layer's packages, loaded by `import()` on first use (crypto-wasm,
    // fake-indexeddb), whole. (Elsewhere such a string may be code run in another thread.)
    const dynamic = input.startsWith("functions/crypto/")
      ? source.matchAll(/\bimport\(\s*"([^".][^"]*)"\s*\)/g)
      : [];
    for (const [, specifier] of dynamic) {
      if (keep(specifier as string, input) && !imports.has(specifier as string)) {
        imports.set(specifier as string, new Set());
      }
    }
  }
  return imports;
}

export interface Floor {
  /** The SDK clients and application packages the floor bundles. */
  packages: string[];
  /** The floor's entry module, written in the project (so that packages resolve), or none. */
  entry?: string;
}

/**
 * The floor of a function whose bundle took `inputs`: its SDK clients with the names it
 * imports from each, and the whole of each npm package its application files import.
 */
export async function floorOf(name: string, inputs: string[]): Promise<Floor> {
  const sdk = await importsOf(inputs, (specifier) => specifier.startsWith("@aws-sdk/client-"));
  const appPackages = await importsOf(
    inputs,
    (specifier, file) =>
      APPLICATION_FOLDERS.some((folder) => file.startsWith(folder)) &&
      !specifier.startsWith("node:"),
  );
  const lines = [
    ...[...sdk].map(
      ([client, names], i) =>
        `export { ${[...names].map((n) => `${n} as ${n}${i}`).join(", ")} } from "${client}";`,
    ),
    ...[...appPackages.keys()].map((pkg, i) => `export * as app${i} from "${pkg}";`),
  ];
  const packages = [...sdk.keys(), ...appPackages.keys()].sort();
  if (lines.length === 0) return { packages };
  await mkdir(join(root, "node_modules", ".cache"), { recursive: true });
  const entry = join(root, "node_modules", ".cache", `floor-${name}.mjs`);
  await writeFile(entry, lines.join("\n"));
  return { packages, entry };
}
