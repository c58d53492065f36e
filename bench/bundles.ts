// Part of `npm run bench`: each function's bundle size and cold module-load time, beside its
// floor (bench/floor.ts: the AWS SDK clients it imports, and the npm packages of its part of the
// application), with the ratios and the target.
import { execFileSync } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_APPLICATION, manifestPathOf } from "../functions/local/applications.ts";
import { functionEntries } from "../infra/bundling.ts";
import { bundle, FLOOR_RATIO_TARGET, floorOf } from "./floor.ts";

const root = join(import.meta.dirname, "..");
// The application whose bundles are measured, chosen by name as `npm start` chooses it.
const application = process.env.APPLICATION || DEFAULT_APPLICATION;
manifestPathOf(application); // Refuses a name that is no application's, naming those that are.
const RUNS = 9;

/** Wall time of importing `file` in a fresh Node process, in ms. */
const importTime = (file: string) =>
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
  );

/**
 * The fastest of `RUNS` cold loads of each file, taken in turns so that a busy moment of the
 * machine slows both alike: the fastest is the load's own cost, the rest is the machine.
 */
function loadTimes(files: string[]): number[] {
  const best = files.map(() => Number.POSITIVE_INFINITY);
  for (let run = 0; run < RUNS; run++) {
    for (const [i, file] of files.entries())
      best[i] = Math.min(best[i] as number, importTime(file));
  }
  return best;
}

const dir = await mkdtemp(join(tmpdir(), "appservice-bundles-"));
const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KB`;
const ratio = (ours: number, floor: number) => ours / floor;
const columns = [14, 9, 9, 7, 9, 9, 7, 8, 6];
const row = (cells: string[]) =>
  cells
    .map((cell, i) => (i === 0 ? cell.padEnd(columns[i] ?? 0) : cell.padStart(columns[i] ?? 0)))
    .join(" ");

console.log(
  `Function bundles of the application ${application} (APPLICATION=; esbuild as \`cdk synth\` runs it: minified ESM for node24, source maps not counted);\n` +
    `the floor bundles only the AWS SDK clients the function imports (the same commands) and the npm\n` +
    `packages its part of the application imports; load: the fastest of ${RUNS} imports in a fresh Node process.\n`,
);
console.log(row(["function", "bundle", "floor", "ratio", "load", "floor", "ratio", "target", ""]));
const floors: string[] = [];
let failed = 0;
for (const [name, entry] of Object.entries(functionEntries)) {
  const ours = await bundle(join(root, entry), join(dir, `${name}.mjs`), application);
  const floor = await floorOf(name, ours.inputs);
  if (!floor.entry) {
    const [load] = loadTimes([join(dir, `${name}.mjs`)]);
    console.log(
      row([name, kb(ours.bytes), "-", "-", `${load?.toFixed(0)} ms`, "-", "-", "-", "n/a"]),
    );
    floors.push(`${name}: no SDK client or package (the floor is empty)`);
    continue;
  }
  const floorBundle = await bundle(floor.entry, join(dir, `${name}-floor.mjs`));
  const [load, floorLoad] = loadTimes([
    join(dir, `${name}.mjs`),
    join(dir, `${name}-floor.mjs`),
  ]) as [number, number];
  const sizeRatio = ratio(ours.bytes, floorBundle.bytes);
  const loadRatio = ratio(load, floorLoad);
  const pass = sizeRatio <= FLOOR_RATIO_TARGET && loadRatio <= FLOOR_RATIO_TARGET;
  if (!pass) failed++;
  console.log(
    row([
      name,
      kb(ours.bytes),
      kb(floorBundle.bytes),
      `${sizeRatio.toFixed(2)}×`,
      `${load.toFixed(0)} ms`,
      `${floorLoad.toFixed(0)} ms`,
      `${loadRatio.toFixed(2)}×`,
      `≤ ${FLOOR_RATIO_TARGET}×`,
      pass ? "PASS" : "FAIL",
    ]),
  );
  floors.push(`${name}: ${floor.packages.join(", ")}`);
}
console.log(`\nFloors:\n  ${floors.join("\n  ")}`);
console.log(
  failed === 0 ? "\nAll bundles within their target." : `\n${failed} bundle(s) over their target.`,
);
