import { createRequire } from "node:module";
import type { BuildOptions } from "esbuild";
import {
  type ApplicationName,
  BUNDLED_APPLICATION_CONSTANT,
} from "../functions/wiring/application.ts";

/**
 * How every function is bundled: by the local esbuild (no Docker), ESM for Node 24 on Lambda (`nodejs24.x`),
 * minified, with source maps, the AWS SDK included (pinned by our lock file, and tree-shaken).
 * The CDK stack and the bundle benchmark use the same settings.
 */
export const bundling = {
  target: "node24",
  minify: true,
  sourceMap: true,
  mainFields: ["module", "main"],
  // Some dependencies still call require(); ESM output needs it defined.
  banner: "import { createRequire } from 'module'; const require = createRequire(import.meta.url);",
} as const;

/**
 * What makes a bundle the chosen application's and no other's (functions/wiring/application.ts):
 * esbuild's `define`.
 */
export const applicationDefine = (application: ApplicationName) => ({
  [BUNDLED_APPLICATION_CONSTANT]: JSON.stringify(application),
});

/** The same, as esbuild's own options, for one application (the benchmark, the bundling test). */
export const esbuildOptionsFor = (application: ApplicationName): BuildOptions => ({
  bundle: true,
  platform: "node",
  format: "esm",
  target: bundling.target,
  minify: bundling.minify,
  sourcemap: bundling.sourceMap,
  mainFields: [...bundling.mainFields],
  banner: { js: bundling.banner },
  define: applicationDefine(application),
  logLevel: "silent",
});

/** The Lambda entry points, by the name the route table uses. */
export const functionEntries = {
  transactions: "functions/handlers/transactions.ts",
  events: "functions/handlers/events.ts",
  outbox: "functions/handlers/outbox.ts",
  queries: "functions/handlers/queries.ts",
  fallback: "functions/handlers/fallback.ts",
  app: "functions/handlers/app.ts",
  admin: "functions/handlers/admin.ts",
} as const;

/** The deploy-time function that completes the generated tokens secret (not part of the API). */
export const TOKENS_SECRET_ENTRY = "functions/handlers/tokens-secret.ts";

const QUICKJS_WASM = createRequire(import.meta.url).resolve(
  "@jitl/quickjs-wasmfile-release-sync/wasm",
);

/**
 * What a function needs beside its bundle at run time, by application: for the webhooks' app
 * function, the transformation engine, a worker thread's bundle (`sandbox-worker.mjs`, built
 * with the same settings) and QuickJS's WebAssembly, which it reads when it starts, at the
 * first transformation of a process. The relay needs nothing beside its bundles.
 */
export const runtimeFiles: Record<
  ApplicationName,
  Partial<Record<keyof typeof functionEntries, { copy: string[]; bundle: Record<string, string> }>>
> = {
  webhooks: {
    app: {
      copy: [QUICKJS_WASM],
      bundle: {
        "sandbox-worker.mjs": "functions/applications/webhooks/webhooks/sandbox-worker.ts",
      },
    },
  },
  relay: {},
};

/** The shell commands that put a function's runtime files in its bundle's folder. */
export function runtimeFileCommands(
  application: ApplicationName,
  name: string,
  inputDir: string,
  outputDir: string,
): string[] {
  const files = runtimeFiles[application][name as keyof typeof functionEntries];
  if (!files) return [];
  const quote = (text: string) => `'${text.replaceAll("'", "'\\''")}'`;
  return [
    ...files.copy.map((file) => `cp ${quote(file)} ${quote(`${outputDir}/`)}`),
    ...Object.entries(files.bundle).map(([outfile, entry]) =>
      [
        quote(`${inputDir}/node_modules/.bin/esbuild`),
        quote(`${inputDir}/${entry}`),
        "--bundle",
        "--platform=node",
        "--format=esm",
        `--target=${bundling.target}`,
        "--minify",
        quote(`--banner:js=${bundling.banner}`),
        quote(`--outfile=${outputDir}/${outfile}`),
        "--log-level=warning",
      ].join(" "),
    ),
  ];
}
