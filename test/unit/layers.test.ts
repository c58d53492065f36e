import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, posix } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(dirname(new URL(import.meta.url).pathname), "../..");

/**
 * The layers of functions/, top down (docs/architecture.md). A file imports files of its own
 * layer or of a lower one; an application imports its own folder and API_MODULE alone.
 */
const LAYERS: { name: string; rank: number; paths: string[]; application?: true }[] = [
  {
    name: "edges",
    rank: 7,
    paths: ["functions/handlers/", "functions/local/", "functions/wiring/"],
  },
  {
    name: "applications",
    rank: 6,
    paths: ["functions/app/", "functions/echo-bot/", "functions/relay/"],
    application: true,
  },
  { name: "pipeline", rank: 5, paths: ["functions/appservice/pipeline/"] },
  // The operator console's core: it reads and replays what the pipeline and the outbox queued.
  { name: "operator console", rank: 5, paths: ["functions/operator/"] },
  { name: "application API", rank: 4, paths: ["functions/appservice/"] },
  // End-to-end encryption: below the appservice (its pipeline decrypts), above the homeserver
  // calls and the stores it uses (design.md).
  { name: "crypto", rank: 3.5, paths: ["functions/crypto/"] },
  { name: "protocol", rank: 3, paths: ["functions/appservice/protocol/"] },
  { name: "client-server", rank: 2, paths: ["functions/matrix/"] },
  { name: "adapters", rank: 1, paths: ["functions/store/", "functions/queue/"] },
  { name: "shared", rank: 0, paths: ["functions/shared/"] },
];
const API_MODULE = "functions/appservice/api.ts";

/** The layer of a path (the longest matching prefix), and the folder that places it there. */
function layerOf(file: string) {
  let best: { layer: (typeof LAYERS)[number]; folder: string } | undefined;
  for (const layer of LAYERS) {
    for (const folder of layer.paths) {
      if (file.startsWith(folder) && folder.length > (best?.folder.length ?? 0)) {
        best = { layer, folder };
      }
    }
  }
  return best;
}

/** Relative specifiers of static imports and re-exports, side-effect imports and `import()`. */
const relativeImports = (source: string): string[] =>
  [...source.matchAll(/(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"']+)["']/g)].map(
    (match) => match[1] as string,
  );

/** Every import of `files` (repository path → source) that breaks the layer rule. */
function layerViolations(files: Record<string, string>): string[] {
  const violations: string[] = [];
  for (const [file, source] of Object.entries(files)) {
    const from = layerOf(file);
    if (!from) {
      violations.push(`${file} is in no layer: add its folder to LAYERS`);
      continue;
    }
    for (const specifier of relativeImports(source)) {
      const target = posix.normalize(posix.join(posix.dirname(file), specifier));
      const to = layerOf(target);
      const edge = `${file} imports ${target}`;
      if (!target.startsWith("functions/")) {
        violations.push(`${edge}: outside functions/`);
      } else if (!to) {
        violations.push(`${edge}, which is in no layer`);
      } else if (from.layer.application) {
        if (to.folder !== from.folder && target !== API_MODULE) {
          violations.push(`${edge}: an application imports ${API_MODULE} alone`);
        }
      } else if (to.layer.rank > from.layer.rank) {
        violations.push(`${edge}: ${from.layer.name} may not import ${to.layer.name} (above it)`);
      }
    }
  }
  return violations;
}

const sourceFiles = (folder: string): string[] =>
  readdirSync(join(root, folder), { recursive: true, encoding: "utf8" })
    .filter((name) => /\.[cm]?[jt]s$/.test(name))
    .map((name) => posix.join(folder, name.split("\\").join("/")));

describe("the layer rule", () => {
  it("holds over every file under functions/", () => {
    const files = sourceFiles("functions");
    expect(files).toContain(API_MODULE);
    const sources = Object.fromEntries(
      files.map((file) => [file, readFileSync(join(root, file), "utf8")]),
    );
    expect(layerViolations(sources)).toEqual([]);
  });

  it("sees the imports the tree has: a layer's files import the ones below", () => {
    const edges = sourceFiles("functions").flatMap((file) =>
      relativeImports(readFileSync(join(root, file), "utf8")).map((specifier) =>
        posix.normalize(posix.join(posix.dirname(file), specifier)),
      ),
    );
    // Static, type-only, multi-line and dynamic imports are all read.
    expect(edges).toContain("functions/shared/hash.ts");
    expect(edges).toContain("functions/appservice/api.ts");
    expect(edges).toContain("functions/app/webhooks/render.ts");
  });

  it("fails on an upward import, static or dynamic", () => {
    expect(
      layerViolations({
        "functions/matrix/actions.ts": 'import { sha256 } from "../appservice/api.ts";',
        "functions/store/dynamodb/store.ts": 'const m = await import("../../matrix/request.ts");',
        "functions/appservice/protocol/auth.ts":
          'export { claimKey } from "../pipeline/process-inbound.ts";',
        "functions/shared/log.ts": 'import type {\n  Metrics,\n} from "../queue/queue.ts";',
      }),
    ).toEqual([
      "functions/matrix/actions.ts imports functions/appservice/api.ts: client-server may not import application API (above it)",
      "functions/store/dynamodb/store.ts imports functions/matrix/request.ts: adapters may not import client-server (above it)",
      "functions/appservice/protocol/auth.ts imports functions/appservice/pipeline/process-inbound.ts: protocol may not import pipeline (above it)",
      "functions/shared/log.ts imports functions/queue/queue.ts: shared may not import adapters (above it)",
    ]);
  });

  it("fails on an application importing anything of functions/ but the API module", () => {
    expect(
      layerViolations({
        "functions/app/webhooks/store.ts": [
          'import { type AppDataStore, sha256 } from "../../appservice/api.ts";',
          'import { forgetBucket } from "./rate-limit.ts";',
          'import { sha256 } from "../../shared/hash.ts";',
        ].join("\n"),
        "functions/echo-bot/index.ts": 'import { application } from "../app/index.ts";',
      }),
    ).toEqual([
      "functions/app/webhooks/store.ts imports functions/shared/hash.ts: an application imports functions/appservice/api.ts alone",
      "functions/echo-bot/index.ts imports functions/app/index.ts: an application imports functions/appservice/api.ts alone",
    ]);
  });

  it("allows imports within a layer and downward, and fails on files of no layer", () => {
    expect(
      layerViolations({
        "functions/local/local.ts": 'import { x } from "../handlers/shared/services.ts";',
        "functions/handlers/events.ts": 'import { application } from "../app/index.ts";',
        "functions/appservice/pipeline/queries.ts":
          'import { y } from "../../store/claim-keys.ts";',
        "functions/unplaced/lambda.ts": 'import { z } from "../shared/log.ts";',
        "functions/queue/queue.ts": 'import { w } from "../../infra/app.ts";',
      }),
    ).toEqual([
      "functions/unplaced/lambda.ts is in no layer: add its folder to LAYERS",
      "functions/queue/queue.ts imports infra/app.ts: outside functions/",
    ]);
  });
});
