import { describe, expect, it } from "vitest";
import { applicationModuleOf } from "../../functions/local/applications.ts";
import { buildFunctions } from "../../functions/local/workers.ts";

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
});
