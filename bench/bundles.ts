// Part of `npm run bench`: each function's bundle size and cold module-load time, beside the
// floor: a bundle of only the AWS SDK clients that function imports (the same clients and
// commands, nothing of ours).
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { esbuildOptions, functionEntries } from "../infra/bundling.ts";

const root = join(import.meta.dirname, "..");
const RUNS = 7;

/** Median wall time of importing `file` in a fresh Node process, in ms. */
function loadTime(file: string): number {
  const times = Array.from({ length: RUNS }, () =>
    Number(
      execFileSync(
        process.execPath,
        [
          "--input-type=module",
          "-e",
          `const t = performance.now(); await import(${JSON.stringify(file)}); console.log(performance.now() - t);`,
        ],
        { encoding: "utf8" },
      ),
    ),
  );
  return times.sort((a, b) => a - b)[Math.floor(RUNS / 2)] as number;
}

async function bundle(entry: string, outfile: string) {
  const result = await build({
    ...esbuildOptions,
    entryPoints: [entry],
    outfile,
    metafile: true,
    sourcemap: false,
  });
  return { bytes: (await stat(outfile)).size, inputs: Object.keys(result.metafile.inputs) };
}

/** The SDK client packages and the names our own source files import from each. */
async function sdkImportsOf(inputs: string[]): Promise<Map<string, Set<string>>> {
  const imports = new Map<string, Set<string>>();
  for (const input of inputs.filter((path) => !path.includes("node_modules"))) {
    const source = await readFile(join(root, input), "utf8");
    for (const [, names, client] of source.matchAll(
      /import\s*\{([^}]*)\}\s*from\s*"(@aws-sdk\/client-[\w-]+)"/g,
    )) {
      const set = imports.get(client as string) ?? new Set<string>();
      for (const name of (names as string).split(",").map((n) => n.trim())) {
        if (name && !name.startsWith("type ")) set.add(name);
      }
      imports.set(client as string, set);
    }
  }
  return imports;
}

const dir = await mkdtemp(join(tmpdir(), "appservice-bundles-"));
await mkdir(join(root, "node_modules", ".cache"), { recursive: true });
console.log("Function bundles (esbuild, minified, ESM, node22; source maps not counted)\n");
console.log(
  `${"function".padEnd(14)}${"bundle".padStart(10)}${"load".padStart(10)}   ${"SDK clients alone".padEnd(24)}${"floor".padStart(10)}${"load".padStart(10)}   overhead`,
);
for (const [name, entry] of Object.entries(functionEntries)) {
  const ours = await bundle(join(root, entry), join(dir, `${name}.mjs`));
  const sdkImports = await sdkImportsOf(ours.inputs);
  const clients = [...sdkImports.keys()].map((client) => client.replace("@aws-sdk/", "")).sort();
  let floor = { bytes: 0, load: 0 };
  if (clients.length > 0) {
    // In the project folder, so that the SDK resolves from its node_modules.
    const floorEntry = join(root, "node_modules", ".cache", `floor-${name}.mjs`);
    await writeFile(
      floorEntry,
      [...sdkImports]
        .map(
          ([client, names], i) =>
            `export { ${[...names].map((n) => `${n} as ${n}${i}`).join(", ")} } from "${client}";`,
        )
        .join("\n"),
    );
    const floorFile = join(dir, `${name}-floor.mjs`);
    const floorBundle = await bundle(floorEntry, floorFile);
    floor = { bytes: floorBundle.bytes, load: loadTime(floorFile) };
  }
  const load = loadTime(join(dir, `${name}.mjs`));
  const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KB`;
  const overhead = floor.bytes
    ? `+${(((ours.bytes - floor.bytes) / floor.bytes) * 100).toFixed(0)}% size, +${(((load - floor.load) / floor.load) * 100).toFixed(0)}% load`
    : "(no SDK client)";
  console.log(
    `${name.padEnd(14)}${kb(ours.bytes).padStart(10)}${`${load.toFixed(0)} ms`.padStart(10)}   ${(clients.join(", ") || "-").padEnd(24)}${(floor.bytes ? kb(floor.bytes) : "-").padStart(10)}${(floor.bytes ? `${floor.load.toFixed(0)} ms` : "-").padStart(10)}   ${overhead}`,
  );
}
