import { execFile } from "node:child_process";
import { mkdtemp, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { bundle, floorOf } from "../../bench/floor.ts";
import type { Application } from "../../functions/appservice/application.ts";
import { functionEntries } from "../../infra/bundling.ts";
import { synthesized } from "../support/cdk-synth.ts";

const root = join(import.meta.dirname, "../..");
/**
 * The most a bundle may weigh over its floor (bench/floor.ts) before this test fails: a guard
 * against growth. `npm run bench` (bench/bundles.ts) prints each ratio against the target, 1.15.
 */
const MAX_FLOOR_RATIO = 1.25;
/** The webhooks' renderer's packages: only the function that renders (app) may bundle them. */
const RENDERER_PACKAGES = ["node_modules/markdown-it/", "node_modules/sanitize-html/"];

describe("function bundles", () => {
  let synth: Awaited<ReturnType<typeof synthesized>>;
  beforeAll(async () => {
    synth = await synthesized();
  }, 240_000);

  it.each(Object.keys(functionEntries))(
    "%s: the bundle `cdk synth` made for the stack loads in a fresh Node process, within its guard over its floor",
    async (name) => {
      const logicalId = `${name[0]?.toUpperCase()}${name.slice(1)}Function`;
      const functions = Object.entries(synth.template.Resources).filter(
        ([id, resource]) => resource.Type === "AWS::Lambda::Function" && id.includes(logicalId),
      );
      expect(functions).toHaveLength(1);
      const assetPath = functions[0]?.[1].Metadata?.["aws:asset:path"] as string;
      const outfile = join(synth.outDir, assetPath, "index.mjs");
      const { size } = await stat(outfile);
      const { stdout } = await promisify(execFile)(process.execPath, [
        "--input-type=module",
        "-e",
        `const m = await import(${JSON.stringify(outfile)}); console.log(typeof m.handler);`,
      ]);
      expect(stdout.trim()).toBe("function");
      // The same build, for the files it took, and the floor those files set.
      const dir = await mkdtemp(join(tmpdir(), "bundle-test-"));
      const ours = await bundle(
        join(root, functionEntries[name as keyof typeof functionEntries]),
        join(dir, "ours.mjs"),
      );
      const floor = await floorOf(`test-${name}`, ours.inputs);
      const floorBytes = floor.entry
        ? (await bundle(floor.entry, join(dir, "floor.mjs"))).bytes
        : 0;
      console.log(
        `${name}: ${(size / 1024).toFixed(0)} KB, floor ${(floorBytes / 1024).toFixed(0)} KB`,
      );
      if (floorBytes > 0) expect(size / floorBytes).toBeLessThanOrEqual(MAX_FLOOR_RATIO);
      else expect(size).toBeLessThan(64 * 1024);
      if (name !== "app") {
        expect(
          ours.inputs.filter((input) => RENDERER_PACKAGES.some((p) => input.includes(p))),
        ).toEqual([]);
      }
    },
  );
});

describe("the application's parts", () => {
  it.each(["app", "echo-bot"])(
    "functions/%s: each Lambda function's part holds what the whole application (local mode's) holds",
    async (folder) => {
      const load = async (module: string) =>
        ((await import(`../../functions/${folder}/${module}.ts`)) as { application: Application })
          .application;
      const [whole, events, queries, routes] = await Promise.all(
        ["index", "events", "queries", "routes"].map(load),
      );
      const parts = {
        events: ["onEvent", "onEphemeral", "onToDevice", "onDeviceData"],
        queries: ["onUserQuery", "onAliasQuery", "thirdParty"],
        routes: ["routes"],
      } as const;
      for (const [part, application] of [
        ["events", events],
        ["queries", queries],
        ["routes", routes],
      ] as const) {
        for (const member of parts[part]) {
          expect(application?.[member], `${part}.${member}`).toBe(whole?.[member]);
        }
      }
    },
  );
});
