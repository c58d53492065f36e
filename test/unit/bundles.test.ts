import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { functionEntries } from "../../infra/bundling.ts";
import { synthesized } from "../support/cdk-synth.ts";

describe("function bundles", () => {
  it.each(Object.keys(functionEntries))(
    "%s: the bundle `cdk synth` made for the stack loads in a fresh Node process",
    async (name) => {
      const synth = await synthesized();
      const logicalId = `${name[0]?.toUpperCase()}${name.slice(1)}Function`;
      const functions = Object.entries(synth.template.Resources).filter(
        ([id, resource]) => resource.Type === "AWS::Lambda::Function" && id.includes(logicalId),
      );
      expect(functions).toHaveLength(1);
      const assetPath = functions[0]?.[1].Metadata?.["aws:asset:path"] as string;
      const outfile = join(synth.outDir, assetPath, "index.mjs");
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
    // The first waits for the run's `cdk synth` to finish.
    240_000,
  );
});
