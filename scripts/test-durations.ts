/**
 * Writes test/durations.json (`project:path` → ms, to 100 ms) from vitest's cache of the last
 * run, for the sequencer of a fresh clone (vitest.config.ts). Run it after a full `npm test`.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const cacheDir = join(root, "node_modules/.vite/vitest");
const [hash] = readdirSync(cacheDir);
if (!hash) throw new Error(`No vitest cache in ${cacheDir}: run npm test first`);
const { results } = JSON.parse(readFileSync(join(cacheDir, hash, "results.json"), "utf8")) as {
  results: [string, { duration?: number }][];
};
const durations = Object.fromEntries(
  results
    .filter(([, result]) => result.duration !== undefined)
    .map(([file, result]) => [file, Math.round((result.duration as number) / 100) * 100])
    .sort(([a], [b]) => String(a).localeCompare(String(b))),
);
writeFileSync(join(root, "test/durations.json"), `${JSON.stringify(durations, null, 2)}\n`);
console.log(`test/durations.json: ${Object.keys(durations).length} files`);
