import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { functionEntries, runtimeFiles } from "../../infra/bundling.ts";
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
      // What it reads at run time sits beside the bundle: the transformations' engine runs a
      // payload in its thread, from the bundle's folder alone.
      const files = runtimeFiles[name as keyof typeof functionEntries];
      for (const file of files?.copy ?? []) {
        const copied = join(synth.outDir, assetPath, basename(file));
        expect((await stat(copied)).size, copied).toBe((await stat(file)).size);
      }
      if (files?.bundle["sandbox-worker.mjs"]) {
        const worker = join(synth.outDir, assetPath, "sandbox-worker.mjs");
        const { stdout: reply } = await promisify(execFile)(process.execPath, [
          "--input-type=module",
          "-e",
          `import { Worker } from "node:worker_threads";
           const worker = new Worker(${JSON.stringify(worker)});
           worker.on("message", (m) => {
             if (m.id === 0) worker.postMessage({ id: 1, code: "return { text: 'n=' + data.n };", dataJson: '{"n":2}', compileOnly: false });
             else { console.log(JSON.stringify(m)); void worker.terminate(); }
           });`,
        ]);
        expect(JSON.parse(reply)).toEqual({ id: 1, value: { text: "n=2" } });
      }
    },
    // The first waits for the run's `cdk synth` to finish.
    240_000,
  );
});
