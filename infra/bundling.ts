import type { BuildOptions } from "esbuild";

/**
 * How every function is bundled: by the local esbuild (no Docker), ESM for Node 22 on Lambda,
 * minified, with source maps, the AWS SDK included (pinned by our lock file, and tree-shaken).
 * The CDK stack and the bundle benchmark use the same settings.
 */
export const bundling = {
  target: "node22",
  minify: true,
  sourceMap: true,
  mainFields: ["module", "main"],
  // Some dependencies still call require(); ESM output needs it defined.
  banner: "import { createRequire } from 'module'; const require = createRequire(import.meta.url);",
} as const;

/** The same, as esbuild's own options (for the benchmark and the bundling test). */
export const esbuildOptions: BuildOptions = {
  bundle: true,
  platform: "node",
  format: "esm",
  target: bundling.target,
  minify: bundling.minify,
  sourcemap: bundling.sourceMap,
  mainFields: [...bundling.mainFields],
  banner: { js: bundling.banner },
  logLevel: "silent",
};

/** The Lambda entry points, by the name the route table uses. */
export const functionEntries = {
  transactions: "functions/handlers/transactions.ts",
  events: "functions/handlers/events.ts",
  outbox: "functions/handlers/outbox.ts",
  queries: "functions/handlers/queries.ts",
  fallback: "functions/handlers/fallback.ts",
  app: "functions/handlers/app.ts",
} as const;

/** The deploy-time function that completes the generated tokens secret (not part of the API). */
export const TOKENS_SECRET_ENTRY = "functions/handlers/tokens-secret.ts";
