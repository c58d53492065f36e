import { createRequire } from "node:module";
import { join } from "node:path";
import type { BuildOptions } from "esbuild";
import type { ApplicationManifest, BundleFiles } from "../functions/appservice/manifest.ts";

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

/** The project's root: esbuild runs there, and the paths below are relative to it. */
const PROJECT_ROOT = join(import.meta.dirname, "..");

/** The manifest module of the application `name`, relative to the project's root. */
export const manifestPathOf = (application: string) =>
  `functions/applications/${application}/manifest.ts`;

/**
 * What makes a bundle the chosen application's and no other's (functions/wiring/application.ts):
 * esbuild's alias of `#application` to its manifest module.
 */
export const applicationAlias = (application: string) => ({
  "#application": join(PROJECT_ROOT, manifestPathOf(application)),
});

/** The same, as esbuild's own options, for one application (the benchmark, the bundling test). */
export const esbuildOptionsFor = (application: string): BuildOptions => ({
  bundle: true,
  platform: "node",
  format: "esm",
  target: bundling.target,
  minify: bundling.minify,
  sourcemap: bundling.sourceMap,
  mainFields: [...bundling.mainFields],
  banner: { js: bundling.banner },
  alias: applicationAlias(application),
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

/** `text` as one word of a POSIX shell command. */
const quote = (text: string) => `'${text.replaceAll("'", "'\\''")}'`;

/**
 * The functions that do crypto (the events function decrypts, the outbox encrypts): only their
 * bundles hold crypto-wasm, and only they get its WebAssembly beside them, where encrypted rooms
 * are on (`AppserviceFunction`'s `cryptoWasm`). Its WebAssembly is compiled only where encrypted
 * rooms are on (the outbox imports the crypto only then; the events function evaluates
 * crypto-wasm's JavaScript at load, but initialises it only then).
 */
export const CRYPTO_FUNCTIONS: ReadonlySet<string> = new Set(["events", "outbox"]);

/** crypto-wasm's WebAssembly, relative to the project (its package exports no path to it). */
export const CRYPTO_WASM =
  "node_modules/@matrix-org/matrix-sdk-crypto-wasm/pkg/matrix_sdk_crypto_wasm_bg.wasm";

/**
 * The shell commands that put crypto-wasm's 7.8 MB of WebAssembly beside a bundle, where its
 * `node.mjs` reads it (`./pkg/…` relative to `import.meta.url`, the bundle's own URL).
 */
export function cryptoWasmCommands(inputDir: string, outputDir: string): string[] {
  return [
    `mkdir -p ${quote(`${outputDir}/pkg`)}`,
    `cp ${quote(`${inputDir}/${CRYPTO_WASM}`)} ${quote(`${outputDir}/pkg/`)}`,
  ];
}

/** The deploy-time function that completes the generated tokens secret (not part of the API). */
export const TOKENS_SECRET_ENTRY = "functions/handlers/tokens-secret.ts";

/**
 * What a function needs beside its bundle at run time, as the application's manifest declares it
 * (the webhooks' app function: the transformations' worker thread and QuickJS's WebAssembly):
 * files copied, resolved as npm packages, and extra bundles, built with the same settings.
 */
export function runtimeFilesOf(
  application: string,
  manifest: ApplicationManifest,
  name: string,
): { copy: string[]; bundle: Record<string, string> } | undefined {
  const files: BundleFiles | undefined =
    manifest.bundleFiles?.[name as keyof NonNullable<ApplicationManifest["bundleFiles"]>];
  if (!files) return undefined;
  const folder = `functions/applications/${application}`;
  return {
    copy: (files.copy ?? []).map((file) => createRequire(import.meta.url).resolve(file)),
    bundle: Object.fromEntries(
      Object.entries(files.bundle ?? {}).map(([outfile, entry]) => [outfile, join(folder, entry)]),
    ),
  };
}

/** The shell commands that put a function's runtime files in its bundle's folder. */
export function runtimeFileCommands(
  files: ReturnType<typeof runtimeFilesOf>,
  inputDir: string,
  outputDir: string,
): string[] {
  if (!files) return [];
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
