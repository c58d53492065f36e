// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the cases quote template literals as source
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { describe, expect, it } from "vitest";
import { API_MODULE, LAYERS, layerViolations, references, sourceFiles } from "../support/layers.ts";

const root = join(dirname(new URL(import.meta.url).pathname), "../..");

const packageImports = (): Record<string, string> =>
  Object.fromEntries(
    Object.entries(
      (
        JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
          imports: Record<string, string>;
        }
      ).imports,
    ).map(([name, path]) => [name, posix.normalize(path)]),
  );

const PACKAGE_IMPORTS = { "#application": "functions/applications/webhooks/manifest.ts" };
/** The checker's answer on a synthetic tree. */
const check = (files: Record<string, string>) =>
  layerViolations({ files, packageImports: PACKAGE_IMPORTS });

describe("the layer table", () => {
  it("has distinct ranks, top down, and folders that exist", () => {
    const ranks = LAYERS.map((layer) => layer.rank);
    expect(ranks).toEqual([...ranks].sort((a, b) => b - a));
    expect(new Set(ranks).size).toBe(ranks.length);
    const folders = LAYERS.flatMap((layer) => layer.folders);
    expect(new Set(folders).size).toBe(folders.length);
    for (const folder of folders) expect(readdirSync(join(root, folder)).length).toBeGreaterThan(0);
  });

  it("is the one docs/architecture.md shows", () => {
    const doc = readFileSync(join(root, "docs/architecture.md"), "utf8");
    const section = doc.slice(
      doc.indexOf("## Layers"),
      doc.indexOf("\n## ", doc.indexOf("## Layers") + 1),
    );
    const rows = [...section.matchAll(/^\| ([^|]+) \| ([^|]+) \| [^|]+ \|$/gm)]
      .slice(1) // the header row (the |---| line does not match)
      .map(([, name, folders]) => ({
        name: name?.trim(),
        folders: [...(folders ?? "").matchAll(/`([^`]+)`/g)].map((match) => match[1]),
      }));
    expect(rows).toEqual(LAYERS.map(({ name, folders }) => ({ name, folders })));
  });
});

describe("the layer rule", () => {
  it("holds over every source file of the checkout, in whatever folder", () => {
    const files = Object.fromEntries(
      sourceFiles(root).map((file) => [file, readFileSync(join(root, file), "utf8")]),
    );
    for (const folder of ["functions/", "infra/", "scripts/", "bench/", "test/"]) {
      expect(Object.keys(files).some((file) => file.startsWith(folder))).toBe(true);
    }
    expect(files).toHaveProperty([API_MODULE]);
    expect(layerViolations({ files, packageImports: packageImports() })).toEqual([]);
  });

  it("reads every kind of reference, and none inside strings", () => {
    const source = [
      'import { a } from "./a.ts";',
      'import type {\n  B,\n} from "./b.ts";',
      'export { c } from "./c.ts";',
      'import "./d.ts";',
      'const e = await import("./e.ts");',
      "type F = import('./f.ts').F;",
      'const g = require("./g.cjs");',
      'const h = new URL(flag ? "./h.ts" : "./h.mjs", import.meta.url);',
      "const i = await import(`./${name}.ts`);",
      'const code = `await import("./not-a-reference.ts")`;',
      'const j = import.meta.resolve("./j.ts");',
      'const load = createRequire(import.meta.url);\nload("./k.cjs");',
      'createRequire(import.meta.url)("./l.cjs");',
      'const m = require.resolve("./m.json");',
      'new Worker("./n.ts");',
      'new threads.Worker(new URL("./o.ts", import.meta.url));',
      'new Worker(\'import("./p.ts"); require("q")\', { eval: true });',
      'const r = new URL("./r.ts", import.meta.url);\nnew Worker(r);',
      "new Worker(`import(${JSON.stringify(r.href)})`, { eval: true });",
    ].join("\n");
    expect(references("x.ts", source)).toEqual([
      { specifier: "./a.ts", kind: "literal", via: "import" },
      { specifier: "./b.ts", kind: "literal", via: "import" },
      { specifier: "./c.ts", kind: "literal", via: "import" },
      { specifier: "./d.ts", kind: "literal", via: "import" },
      { specifier: "./e.ts", kind: "literal", via: "import" },
      { specifier: "./f.ts", kind: "literal", via: "import" },
      { specifier: "./g.cjs", kind: "literal", via: "import" },
      { specifier: "./h.ts", kind: "literal", via: "url" },
      { specifier: "./h.mjs", kind: "literal", via: "url" },
      { specifier: "`./${name}.ts`", kind: "computed", via: "import" },
      { specifier: "./j.ts", kind: "literal", via: "import" },
      { specifier: "./k.cjs", kind: "literal", via: "import" },
      { specifier: "./l.cjs", kind: "literal", via: "import" },
      { specifier: "./n.ts", kind: "literal", via: "worker" },
      { specifier: "./o.ts", kind: "literal", via: "url" },
      { specifier: "./p.ts", kind: "literal", via: "worker" },
      { specifier: "q", kind: "literal", via: "worker" },
      { specifier: "./r.ts", kind: "literal", via: "url" },
    ]);
  });

  // Each case is a violation the old test let through (issue 25, item 7).
  it("fails on a handler importing local mode", () => {
    expect(
      check({ "functions/handlers/http.ts": 'import { x } from "../local/gateway.ts";' }),
    ).toEqual([
      "functions/handlers/http.ts imports functions/local/gateway.ts: handlers may not import local (above it)",
    ]);
  });

  it("fails on same-layer folders importing each other without a declared edge", () => {
    expect(
      check({
        "functions/store/dynamodb/store.ts": 'import { q } from "../../queue/sqs/queue.ts";',
        "functions/store/store.ts": 'import { r } from "../queue/queue.ts";',
      }),
    ).toEqual([
      "functions/store/dynamodb/store.ts imports functions/queue/sqs/queue.ts: functions/store/dynamodb/ → functions/queue/sqs/ is no declared sibling edge",
      "functions/store/store.ts imports functions/queue/queue.ts: functions/store/ → functions/queue/ is no declared sibling edge",
    ]);
  });

  it("fails on a URL or a computed import() that dodges the rule", () => {
    expect(
      check({
        "functions/matrix/actions.ts":
          'const worker = new URL("../appservice/pipeline/inbound.ts", import.meta.url);',
        "functions/shared/log.ts": "const m = await import(`../handlers/${name}.ts`);",
        "functions/queue/queue.ts": "const n = require(moduleName);",
        "functions/store/store.ts": "const p = new URL(`./${name}.ts`, import.meta.url);",
      }),
    ).toEqual([
      "functions/matrix/actions.ts refers by URL to functions/appservice/pipeline/inbound.ts: client-server may not import pipeline (above it)",
      "functions/shared/log.ts loads `../handlers/${name}.ts`, a computed name the checker cannot follow: use a literal or declare it in LOADERS",
      "functions/queue/queue.ts loads moduleName, a computed name the checker cannot follow: use a literal or declare it in LOADERS",
      "functions/store/store.ts loads `./${name}.ts`, a computed name the checker cannot follow: use a literal or declare it in LOADERS",
    ]);
  });

  it("fails on a worker thread started from a path, a URL or eval'd code that dodges the rule", () => {
    expect(
      check({
        "functions/handlers/events.ts": 'new Worker("./functions/local/gateway.ts");',
        "functions/matrix/intent.ts":
          'new Worker(new URL("../handlers/http.ts", import.meta.url), { execArgv: [] });',
        "functions/queue/queue.ts":
          "new Worker(\"import('./functions/local/main.ts')\", { eval: true });",
        "functions/store/store.ts": "new Worker(workerPath);",
        "functions/remote/delivery.ts": 'new Worker("/opt/worker.mjs");',
        "functions/shared/log.ts": "new Worker(`import(${name})`, { eval: true });",
        // A URL made from a literal is checked where it is made, whatever starts it.
        "functions/shared/hash.ts": [
          'const file = new URL("./hash-worker.ts", import.meta.url);',
          "new Worker(file);",
          "new Worker(`import(${JSON.stringify(file.href)})`, { eval: true });",
        ].join("\n"),
      }),
    ).toEqual([
      "functions/handlers/events.ts starts a worker from functions/local/gateway.ts: handlers may not import local (above it)",
      "functions/matrix/intent.ts refers by URL to functions/handlers/http.ts: client-server may not import handlers (above it)",
      "functions/queue/queue.ts starts a worker from functions/local/main.ts: ports may not import local (above it)",
      "functions/store/store.ts loads workerPath, a computed name the checker cannot follow: use a literal or declare it in LOADERS",
      'functions/remote/delivery.ts loads "/opt/worker.mjs", a computed name the checker cannot follow: use a literal or declare it in LOADERS',
      "functions/shared/log.ts loads `import(${name})`, a computed name the checker cannot follow: use a literal or declare it in LOADERS",
    ]);
  });

  it("fails on a declared loader whose template starts outside the folders it may reach", () => {
    expect(
      check({
        "functions/local/applications.ts": [
          "const a = await import(`../applications/${name}/manifest.ts`);",
          "const b = await import(`../../infra/${name}.ts`);",
          "const c = await import(`../../../${name}.ts`);",
        ].join("\n"),
        "test/integration/lambda-entries.test.ts": "const d = await import(`../../${entry}`);",
      }),
    ).toEqual([
      "functions/local/applications.ts loads `../../infra/${name}.ts`, outside the folders LOADERS lets it reach (functions/applications/)",
      "functions/local/applications.ts loads `../../../${name}.ts`, outside the folders LOADERS lets it reach (functions/applications/)",
      "test/integration/lambda-entries.test.ts loads `../../${entry}`, outside the folders LOADERS lets it reach (functions/handlers/)",
    ]);
  });

  // A template starting above a reached folder (the repository's root, `functions/`) could name
  // any layer in its computed rest: only one starting inside a reached folder passes.
  it("fails on a declared loader whose template starts above the folders it may reach", () => {
    expect(
      check({
        "test/integration/lambda-entries.test.ts": [
          "const a = await import(`../../${entry}`);",
          "const b = await import(`../../functions/${entry}`);",
          "const c = await import(`../../functions/handlers${entry}`);",
          "const d = await import(`../../functions/handlers/${entry}`);",
          "const e = await import(`../../functions/handlers/shared/${entry}`);",
        ].join("\n"),
      }),
    ).toEqual([
      "test/integration/lambda-entries.test.ts loads `../../${entry}`, outside the folders LOADERS lets it reach (functions/handlers/)",
      "test/integration/lambda-entries.test.ts loads `../../functions/${entry}`, outside the folders LOADERS lets it reach (functions/handlers/)",
      "test/integration/lambda-entries.test.ts loads `../../functions/handlers${entry}`, outside the folders LOADERS lets it reach (functions/handlers/)",
    ]);
  });

  it("follows #application to the manifest it names", () => {
    expect(
      check({
        "functions/wiring/application.ts": 'import * as bundled from "#application";',
        "functions/matrix/intent.ts": 'import * as bundled from "#application";',
        "functions/shared/hash.ts": 'import * as other from "#other";',
      }),
    ).toEqual([
      "functions/matrix/intent.ts imports #application = functions/applications/webhooks/manifest.ts: client-server may not import applications (above it)",
      "functions/shared/hash.ts imports #other, which package.json does not map",
    ]);
  });

  it("fails on infra/, scripts/ and bench/ importing upward", () => {
    expect(
      check({
        "infra/app.ts": 'import { ping } from "../scripts/ping.ts";',
        "scripts/ping.ts": 'import { soak } from "../bench/soak.ts";',
        "bench/soak.ts": 'import { x } from "../test/unit/layers.test.ts";',
        "functions/local/main.ts": 'import { app } from "../../infra/app.ts";',
      }),
    ).toEqual([
      "infra/app.ts imports scripts/ping.ts: infra may not import scripts (above it)",
      "scripts/ping.ts imports bench/soak.ts: scripts may not import bench (above it)",
      "bench/soak.ts imports test/unit/layers.test.ts: bench may not import tests (above it)",
      "functions/local/main.ts imports infra/app.ts: local may not import infra (above it)",
    ]);
  });

  it("fails on a cycle, between folders and between files", () => {
    const violations = check({
      "functions/wiring/deps.ts": 'import type { EventsDeps } from "../handlers/events.ts";',
      "functions/handlers/events.ts": 'import { eventsDeps } from "../wiring/deps.ts";',
      "functions/matrix/a.ts": 'import { b } from "./b.ts";',
      "functions/matrix/b.ts": 'import { a } from "./a.ts";',
    });
    expect(violations).toEqual([
      "functions/wiring/deps.ts imports functions/handlers/events.ts: wiring may not import handlers (above it)",
      "a cycle of folders: functions/handlers/, functions/wiring/",
      "a cycle of files: functions/handlers/events.ts, functions/wiring/deps.ts",
      "a cycle of files: functions/matrix/a.ts, functions/matrix/b.ts",
    ]);
  });

  it("fails on the platform's packages outside adapters and edges", () => {
    expect(
      check({
        "functions/operator/cloudwatch.ts":
          'import { CloudWatchClient } from "@aws-sdk/client-cloudwatch";',
        "functions/matrix/outbox.ts": 'import type { SQSEvent } from "aws-lambda";',
        "functions/store/dynamodb/table.ts":
          'import { DynamoDBClient } from "@aws-sdk/client-dynamodb";',
        "functions/handlers/events.ts": 'import middy from "@middy/core";',
        "infra/app.ts": 'import { App } from "aws-cdk-lib";',
      }),
    ).toEqual([
      "functions/operator/cloudwatch.ts imports @aws-sdk/client-cloudwatch: only adapters and edges use the platform (operator console may not)",
      "functions/matrix/outbox.ts imports aws-lambda: only adapters and edges use the platform (client-server may not)",
    ]);
  });

  it("fails on an application importing anything of ours but the API module", () => {
    expect(
      check({
        "functions/applications/webhooks/webhooks/store.ts": [
          'import { sha256 } from "../../../appservice/api.ts";',
          'import { forgetBucket } from "./rate-limit.ts";',
          'import { sha256 } from "../../../shared/hash.ts";',
        ].join("\n"),
        "functions/applications/echo-bot/index.ts":
          'import { application } from "../webhooks/index.ts";',
      }),
    ).toEqual([
      "functions/applications/webhooks/webhooks/store.ts imports functions/shared/hash.ts: an application imports functions/appservice/api.ts alone",
      "functions/applications/echo-bot/index.ts imports functions/applications/webhooks/index.ts: an application imports functions/appservice/api.ts alone",
    ]);
  });

  it("fails on a load by import.meta.resolve() or a require made by createRequire", () => {
    expect(
      check({
        "functions/handlers/events.ts": [
          'import { createRequire } from "node:module";',
          'const worker = import.meta.resolve("../local/gateway.ts");',
          "const load = createRequire(import.meta.url);",
          'const { x } = load("../local/workers.ts");',
        ].join("\n"),
      }),
    ).toEqual([
      "functions/handlers/events.ts imports functions/local/gateway.ts: handlers may not import local (above it)",
      "functions/handlers/events.ts imports functions/local/workers.ts: handlers may not import local (above it)",
    ]);
  });

  it("fails on a root file importing ours, and passes the root files that import packages", () => {
    expect(
      check({
        "vitest.config.ts": 'import { defineConfig } from "vitest/config";',
        "cdk.config.ts": 'import { a } from "./infra/app.ts";',
      }),
    ).toEqual(["cdk.config.ts is in no layer: add its folder to LAYERS"]);
    expect(check({ "vitest.config.ts": 'import { x } from "./test/support/wait.ts";' })).toEqual([
      "vitest.config.ts imports ./test/support/wait.ts: a root file imports packages alone",
    ]);
  });

  it("finds the source files of every folder, skipping installed, generated and hidden ones", () => {
    const dir = mkdtempSync(join(tmpdir(), "layers-"));
    try {
      for (const path of [
        "tools/deep/x.ts",
        "functions/shared/y.tsx",
        "functions/shared/z.mts",
        "functions/shared/notes.md",
        "vitest.config.ts",
        "node_modules/p/index.js",
        "cdk.out/asset/index.mjs",
        ".scratch/w.ts",
      ]) {
        mkdirSync(join(dir, dirname(path)), { recursive: true });
        writeFileSync(join(dir, path), "");
      }
      expect(sourceFiles(dir).sort()).toEqual([
        "functions/shared/y.tsx",
        "functions/shared/z.mts",
        "tools/deep/x.ts",
        "vitest.config.ts",
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("fails on files of no layer and imports leaving the repository, not on data URLs", () => {
    expect(
      check({
        "functions/unplaced/lambda.ts": 'import { z } from "../shared/log.ts";',
        "functions/queue/queue.ts": 'import { w } from "../../../elsewhere/app.ts";',
        "functions/local/local.ts": 'const pkg = new URL("../../package.json", import.meta.url);',
      }),
    ).toEqual([
      "functions/unplaced/lambda.ts is in no layer: add its folder to LAYERS",
      "functions/queue/queue.ts imports ../elsewhere/app.ts, outside the repository's layers",
    ]);
  });
});
