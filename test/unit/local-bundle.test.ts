import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applicationModuleOf } from "../../functions/local/applications.ts";
import { buildFunctions, bundleFunctions } from "../../functions/local/workers.ts";
import { tempDir } from "../support/temp-dirs.ts";

// Local mode's worker bundle is the chosen application's, as the stack's are: `#application`
// is its manifest, not package.json's default (webhooks, whose renderer the relay never uses).

const RENDERER_PACKAGES = ["node_modules/markdown-it/", "node_modules/sanitize-html/"];

const inputsOf = async (application: string) =>
  Object.keys((await buildFunctions(applicationModuleOf(application))).metafile.inputs);

describe("local mode's worker bundle", () => {
  it("the relay's holds its manifest and not the webhooks application or its renderer", async () => {
    const inputs = await inputsOf("relay");
    expect(inputs.some((path) => path.includes("applications/relay/manifest.ts"))).toBe(true);
    expect(inputs.filter((path) => path.includes("applications/webhooks/"))).toEqual([]);
    for (const name of RENDERER_PACKAGES) {
      expect(inputs.filter((path) => path.includes(name))).toEqual([]);
    }
  }, 60_000);

  it("is built once by starts at once, then reused at each start while nothing it was built from changes", async () => {
    const folder = await tempDir();
    const module = applicationModuleOf("echo-bot");
    // Two starts building at once: each gets the bundle, and one record of it is left.
    const built = await Promise.all([1, 2].map(() => bundleFunctions(module, folder)));
    expect(built.map((b) => b.reused)).toEqual([false, false]);
    expect(built[1]?.bundle).toBe(built[0]?.bundle);
    const records = (await readdir(folder)).filter((entry) => entry.endsWith(".json"));
    expect(records).toHaveLength(1);
    expect((await readdir(folder)).filter((entry) => entry.endsWith(".partial"))).toEqual([]);
    expect(await bundleFunctions(module, folder)).toEqual({
      bundle: built[0]?.bundle,
      reused: true,
    });

    // What it was built from: the application's files among the inputs, each stamped.
    const recordFile = join(folder, records[0] as string);
    const record = JSON.parse(await readFile(recordFile, "utf8")) as {
      stamps: [string, number, number][];
    };
    const application = record.stamps.find(([path]) => path.endsWith("echo-bot/manifest.ts"));
    expect(application).toBeDefined();
    // As if the manifest had been edited since: its size is not the one recorded.
    (application as [string, number, number])[1] += 1;
    await writeFile(recordFile, JSON.stringify(record));
    expect((await bundleFunctions(module, folder)).reused).toBe(false);
    expect((await bundleFunctions(module, folder)).reused).toBe(true);
  }, 60_000);
});
