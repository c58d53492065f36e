import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, stat } from "node:fs/promises";
import { basename, join, relative, resolve } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { bundle, floorOf } from "../../bench/floor.ts";
import { manifest as webhooks } from "../../functions/applications/webhooks/manifest.ts";
import type { Application } from "../../functions/appservice/application.ts";
import { type ApplicationModule, applicationConfig } from "../../functions/appservice/manifest.ts";
import {
  CRYPTO_FUNCTIONS,
  CRYPTO_WASM,
  cryptoWasmCommands,
  functionEntries,
  runtimeFilesOf,
} from "../../infra/bundling.ts";
import { synthesized } from "../support/cdk-synth.ts";
import { tempDir } from "../support/temp-dirs.ts";

const root = join(import.meta.dirname, "../..");
/**
 * The most a bundle may weigh over its floor (bench/floor.ts) before this test fails: a guard
 * against growth. `npm run bench` (bench/bundles.ts) prints each ratio against the target, 1.15,
 * which the events and admin functions miss (1.370 and 1.325 with the bridge kit, the console and
 * the outbound webhooks, whose targets the events function checks against the address policy:
 * Powertools, zod and the kit's calls; 0.007 of it the application's part loaded by `import()`,
 * which esbuild wraps in lazy initializers, so that a bundle holds one application's part:
 * functions/wiring/application.ts; 0.009 the items set aside in the table, read back by the
 * events function, and the manifest; 0.002 the one Intent, matrix/intent.ts, and its memory's
 * adapter, which the immediate calls share with the outbox; 0.010 the kit's second version:
 * message maps, edits, replies, presence, m.bridge state, room version 12); set just above them
 * so that any further growth fails.
 * The events function's crypto-wasm and fake-indexeddb (it decrypts) count in its floor, as an
 * application's packages do: about 1.26 with them. The outbox's too (it encrypts): loaded by
 * `import()` only where encrypted rooms are on, they add 280 KB to its bundle (474 → 754 KB with
 * the webhooks; 1.30 over its floor) and nothing measurable to its load without them (0.36–0.62 s
 * either way).
 */
const MAX_FLOOR_RATIO = 1.377;
/** The webhooks' renderer's packages: only the function that renders (app) may bundle them. */
const RENDERER_PACKAGES = ["node_modules/markdown-it/", "node_modules/sanitize-html/"];

/** The logical ID's part of the function whose entry is `name` (EventsFunction…). */
const logicalIdOf = (name: string) => `${name[0]?.toUpperCase()}${name.slice(1)}Function`;

/** The folder the run's `cdk synth` bundled the (one) function whose entry is `name` into. */
function assetDirOf(synth: Awaited<ReturnType<typeof synthesized>>, name: string) {
  const functions = Object.entries(synth.template.Resources).filter(
    ([id, resource]) => resource.Type === "AWS::Lambda::Function" && id.includes(logicalIdOf(name)),
  );
  expect(functions).toHaveLength(1);
  return join(synth.outDir, functions[0]?.[1].Metadata?.["aws:asset:path"] as string);
}

/** Loads a bundle in a fresh Node process: its `handler` export's type. */
const handlerType = async (outfile: string) =>
  (
    await promisify(execFile)(process.execPath, [
      "--input-type=module",
      "-e",
      `const m = await import(${JSON.stringify(outfile)}); console.log(typeof m.handler);`,
    ])
  ).stdout.trim();

describe("function bundles", () => {
  let synth: Awaited<ReturnType<typeof synthesized>>;
  beforeAll(async () => {
    synth = await synthesized();
  }, 240_000);

  it.each(Object.keys(functionEntries))(
    "%s: the bundle `cdk synth` made for the stack loads in a fresh Node process, within its guard over its floor",
    async (name) => {
      const assetDir = assetDirOf(synth, name);
      const outfile = join(assetDir, "index.mjs");
      const { size } = await stat(outfile);
      expect(await handlerType(outfile)).toBe("function");
      // What it reads at run time sits beside the bundle: the transformations' engine runs a
      // payload in its thread, from the bundle's folder alone.
      const files = runtimeFilesOf("webhooks", webhooks, name);
      for (const file of files?.copy ?? []) {
        const copied = join(assetDir, basename(file));
        expect((await stat(copied)).size, copied).toBe((await stat(file)).size);
      }
      if (files?.bundle["sandbox-worker.mjs"]) {
        const worker = join(assetDir, "sandbox-worker.mjs");
        const { stdout: reply } = await promisify(execFile)(process.execPath, [
          "--input-type=module",
          "-e",
          `import { Worker } from "node:worker_threads";
           const worker = new Worker(${JSON.stringify(worker)}, { execArgv: [] });
           worker.on("message", (m) => {
             if (m.id === 0) worker.postMessage({ id: 1, code: "return { text: 'n=' + data.n };", dataJson: '{"n":2}', compileOnly: false });
             else { console.log(JSON.stringify(m)); void worker.terminate(); }
           });`,
        ]);
        expect(JSON.parse(reply)).toEqual({ id: 1, value: { text: "n=2" } });
      }
      // The same build, for the files it took, and the floor those files set.
      const dir = await tempDir("bundle-test-");
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
      // crypto-wasm in the functions that decrypt (events) and encrypt (outbox) alone; its
      // 7.8 MB of WebAssembly beside none, as this stack has encrypted rooms off (the bundle
      // loads without it: read on first use alone).
      const cryptoInputs = ours.inputs.filter((input) => input.includes("matrix-sdk-crypto-wasm"));
      expect(cryptoInputs.length > 0, "crypto-wasm bundled").toBe(CRYPTO_FUNCTIONS.has(name));
      expect(existsSync(join(assetDir, "pkg")), "pkg/ beside the bundle").toBe(false);
      // The webhooks' bundles hold none of the relay's code (cdk.json: application=relay).
      expect(
        ours.inputs.filter((input) => input.startsWith("functions/applications/relay/")),
      ).toEqual([]);
      if (name !== "app") {
        expect(
          ours.inputs.filter((input) => RENDERER_PACKAGES.some((p) => input.includes(p))),
        ).toEqual([]);
      }
    },
  );
});

describe("crypto-wasm's WebAssembly where encrypted rooms are on", () => {
  it("the commands a crypto function's bundling runs put it where the package reads it (`./pkg/`)", async () => {
    const outputDir = await tempDir("crypto-wasm-");
    await promisify(execFile)("sh", ["-c", cryptoWasmCommands(root, outputDir).join(" && ")]);
    expect((await stat(join(outputDir, "pkg", basename(CRYPTO_WASM)))).size).toBe(
      (await stat(join(root, CRYPTO_WASM))).size,
    );
  });
});

describe("a relay stack's bundles (cdk.json: application=relay)", () => {
  // Bundled in the background by the run's `cdk synth -c application=relay` (test/support/cdk-synth.ts).
  let synth: Awaited<ReturnType<typeof synthesized>>;
  beforeAll(async () => {
    synth = await synthesized("relay");
  }, 240_000);

  it.each(Object.keys(functionEntries))(
    "%s: loads, and holds the relay's part alone: no webhooks code, renderer or transformation engine",
    async (name) => {
      const assetDir = assetDirOf(synth, name);
      expect(await handlerType(join(assetDir, "index.mjs"))).toBe("function");
      // What went into the bundle, from its source map, relative to the project's root.
      const { sources } = JSON.parse(await readFile(join(assetDir, "index.mjs.map"), "utf8")) as {
        sources: string[];
      };
      const inputs = sources.map((source) => relative(root, resolve(assetDir, source)));
      const { size } = await stat(join(assetDir, "index.mjs"));
      console.log(`relay ${name}: ${(size / 1024).toFixed(0)} KB`);
      expect(
        inputs.filter((input) => input.startsWith("functions/applications/webhooks/")),
      ).toEqual([]);
      expect(
        inputs.filter((input) =>
          [...RENDERER_PACKAGES, "node_modules/quickjs-emscripten-core/"].some((p) =>
            input.includes(p),
          ),
        ),
      ).toEqual([]);
      const relayPart = { events: "events.ts", app: "routes.ts" }[name as string];
      // Every function holds the manifest (its settings, namespaces) and what it imports, no part.
      const manifestFiles = ["manifest.ts", "names.ts"].map(
        (f) => `functions/applications/relay/${f}`,
      );
      const partFiles = inputs.filter(
        (input) =>
          input.startsWith("functions/applications/relay/") && !manifestFiles.includes(input),
      );
      if (relayPart) expect(partFiles).toContain(`functions/applications/relay/${relayPart}`);
      else expect(partFiles).toEqual([]);
    },
  );
});

describe("the application's parts", () => {
  it.each(["webhooks", "echo-bot"])(
    "functions/applications/%s: each Lambda function's part holds what the whole application (local mode's) holds",
    async (folder) => {
      // Each part as its Lambda function loads it: through the manifest's loader.
      const module = (await import(
        `../../functions/applications/${folder}/manifest.ts`
      )) as ApplicationModule;
      const config = applicationConfig(module.manifest, {}, { local: true });
      const whole = (
        (await import(`../../functions/applications/${folder}/index.ts`)) as {
          application: Application;
        }
      ).application;
      const [events, queries, routes] = (await Promise.all(
        [module.events, module.queries, module.routes].map((load) => load?.(config)),
      )) as (Partial<Application> | undefined)[];
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
