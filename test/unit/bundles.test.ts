import { execFile } from "node:child_process";
import { mkdtemp, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { build } from "esbuild";
import { describe, expect, it } from "vitest";
import { esbuildOptions, functionEntries } from "../../infra/bundling.ts";

const root = join(import.meta.dirname, "../..");

describe("function bundles", () => {
  it.each(Object.entries(functionEntries))(
    "%s bundles as the stack bundles it, and its handler loads in a fresh Node process",
    async (name, entry) => {
      const outfile = join(await mkdtemp(join(tmpdir(), "bundle-")), `${name}.mjs`);
      await build({ ...esbuildOptions, entryPoints: [join(root, entry)], outfile });
      const { size } = await stat(outfile);
      console.log(`${name}: ${(size / 1024).toFixed(0)} KB`);
      const { stdout } = await promisify(execFile)(process.execPath, [
        "--input-type=module",
        "-e",
        `const m = await import(${JSON.stringify(outfile)}); console.log(typeof m.handler);`,
      ]);
      expect(stdout.trim()).toBe("function");
      // Far below Lambda's limits, and a check that no stray dependency slipped in.
      expect(size).toBeLessThan(1024 * 1024);
    },
  );
});
