import { createHash, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import {
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { build, type Plugin } from "esbuild";
import type { LogLine } from "../operator/traffic.ts";
import type { Log } from "../shared/log.ts";
import type { CountingMetrics } from "../shared/metrics.ts";
import { importApplicationModule } from "./applications.ts";
import type { FunctionWorkerData, FunctionWorkerMessage } from "./function-worker.ts";

const source = (path: string) => fileURLToPath(new URL(path, import.meta.url));
/**
 * Inside node_modules, so that what a bundle leaves out resolves from the project's packages; one
 * folder per bundle's content, so that concurrent starts share it and never see half of one.
 */
const BUNDLES = source("../../node_modules/.cache/local-functions/");
/**
 * crypto-wasm's WebAssembly, which its `node.mjs` reads beside the bundle (`./pkg/`), as the
 * stack copies it beside the events and outbox bundles (infra/bundling.ts `cryptoWasmCommands`).
 */
const CRYPTO_WASM = source(
  "../../node_modules/@matrix-org/matrix-sdk-crypto-wasm/pkg/matrix_sdk_crypto_wasm_bg.wasm",
);
/** Bundles of other contents are removed once no start has used them for this long. */
const BUNDLE_KEPT_MS = 7 * 24 * 60 * 60 * 1000;
/** The entry of a worker's bundle: its application module, and the function that runs it. */
const ENTRY = "local-function-entry";

const entryPlugin = (applicationModule: string): Plugin => ({
  name: ENTRY,
  setup(builder) {
    builder.onResolve({ filter: new RegExp(`^${ENTRY}$`) }, () => ({
      path: ENTRY,
      namespace: ENTRY,
    }));
    builder.onLoad({ filter: /.*/, namespace: ENTRY }, () => ({
      contents: [
        `import * as module from ${JSON.stringify(fileURLToPath(applicationModule))};`,
        `import { applicationConfig, wholeApplication } from ${JSON.stringify(source("../appservice/manifest.ts"))};`,
        `import { runFunctionWorker } from ${JSON.stringify(source("./function-worker.ts"))};`,
        "const config = applicationConfig(module.manifest, process.env, { local: true });",
        "await runFunctionWorker(await wholeApplication(module, config));",
      ].join("\n"),
      resolveDir: source("."),
      loader: "ts",
    }));
  },
});

/**
 * What the application's manifest adds to local mode's build: its extra bundles (by name without
 * `.mjs`, as esbuild's entry points) and the packages left in node_modules.
 */
async function manifestBuild(applicationModule: string) {
  const { manifest } = await importApplicationModule(applicationModule);
  const files = Object.values(manifest.bundleFiles ?? {});
  return {
    entryPoints: Object.fromEntries(
      files.flatMap((declared) =>
        Object.entries(declared.bundle ?? {}).map(([outfile, entry]) => [
          outfile.replace(/\.mjs$/, ""),
          fileURLToPath(new URL(entry, applicationModule)),
        ]),
      ),
    ),
    external: [...new Set(files.flatMap((declared) => declared.localExternals ?? []))],
  };
}

/**
 * The functions' code and their application's, bundled with esbuild as the stack bundles each
 * function: a worker loads one file in about a second where loading the sources through tsx took
 * several. Beside it, the extra bundles its manifest declares (a worker thread's, started from
 * beside the bundle); the packages it keeps external stay in node_modules, where they read their
 * own files.
 */
export async function buildFunctions(applicationModule: string) {
  const declared = await manifestBuild(applicationModule);
  return build({
    entryPoints: { "function-worker": ENTRY, ...declared.entryPoints },
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    mainFields: ["module", "main"],
    outdir: "/",
    outExtension: { ".js": ".mjs" },
    // Some dependencies still call require(); ESM output needs it defined.
    banner: {
      js: "import { createRequire } from 'module'; const require = createRequire(import.meta.url);",
    },
    external: declared.external,
    // The chosen application's manifest where the code imports `#application`, as the stack's
    // bundles have it (infra/bundling.ts's `applicationAlias`): not package.json's default.
    alias: { "#application": fileURLToPath(applicationModule) },
    plugins: [entryPlugin(applicationModule)],
    write: false,
    metafile: true,
    logLevel: "silent",
  });
}

/** Each file's path, size and modification time, as a bundle's record keeps them. */
type Stamps = [path: string, size: number, mtimeMs: number][];

const stampsOf = (paths: string[]): Promise<Stamps> =>
  Promise.all(
    paths.map(async (path): Promise<Stamps[number]> => {
      const { size, mtimeMs } = await stat(path);
      return [path, size, mtimeMs];
    }),
  );

/** Where the last bundle of an application module is recorded, with what it was built from. */
const recordOf = (folder: string, applicationModule: string) =>
  join(folder, `${createHash("sha256").update(applicationModule).digest("hex").slice(0, 16)}.json`);

/**
 * The bundle `record` names, if none of the files it was built from has changed since (as make
 * decides: size and modification time), else undefined.
 */
async function recordedBundle(record: string) {
  try {
    const { bundle, stamps } = JSON.parse(await readFile(record, "utf8")) as {
      bundle: string;
      stamps: Stamps;
    };
    const now = await stampsOf(stamps.map(([path]) => path));
    return existsSync(bundle) && JSON.stringify(now) === JSON.stringify(stamps)
      ? bundle
      : undefined;
  } catch {
    // None recorded, a file gone, or a record half-written by an older start: built again.
    return undefined;
  }
}

/**
 * The functions' bundle of the application module in `folder`: the one recorded if nothing it was
 * built from has changed (building took ~2 s of CPU at each `npm start`), else built and recorded.
 */
export async function bundleFunctions(
  applicationModule: string,
  folder = BUNDLES,
): Promise<{ bundle: string; reused: boolean }> {
  const record = recordOf(folder, applicationModule);
  const recorded = await recordedBundle(record);
  if (recorded) {
    await keep(folder, [dirname(recorded), record]);
    return { bundle: recorded, reused: true };
  }
  const started = Date.now();
  const { outputFiles, metafile } = await buildFunctions(applicationModule);
  const hash = createHash("sha256");
  // The WebAssembly beside the bundle is part of its folder (folders made before it was lack it).
  hash.update(CRYPTO_WASM);
  for (const file of outputFiles) hash.update(file.path).update(file.contents);
  const bundleFolder = join(folder, hash.digest("hex").slice(0, 16));
  const bundle = join(bundleFolder, "function-worker.mjs");
  if (!existsSync(bundle)) {
    await mkdir(folder, { recursive: true });
    // Written aside and renamed into place, as the DynamoDB Local launcher is.
    const building = await mkdtemp(join(folder, "building-"));
    try {
      for (const file of outputFiles)
        await writeFile(join(building, file.path.slice(1)), file.contents);
      await mkdir(join(building, "pkg"));
      await copyFile(CRYPTO_WASM, join(building, "pkg", "matrix_sdk_crypto_wasm_bg.wasm"));
      await rename(building, bundleFolder).catch((error) => {
        if (!existsSync(bundle)) throw error;
      });
    } finally {
      await rm(building, { recursive: true, force: true });
    }
  }
  await recordBundle(record, bundle, Object.keys(metafile.inputs), started);
  await keep(folder, [bundleFolder, record]);
  return { bundle, reused: false };
}

/**
 * Records what the bundle was built from: the inputs esbuild read (paths from the working folder;
 * not the entry made in memory), the files it reads besides (tsconfig.json, package.json), this
 * file (the build's options), the lock file (esbuild's version) and the WebAssembly copied beside
 * it. Not recorded when one changed since a moment before the build (timestamps may be coarse):
 * the next start builds again. Only a cache: a failure to write it is no failure to start.
 */
async function recordBundle(record: string, bundle: string, inputs: string[], started: number) {
  try {
    const stamps = await stampsOf([
      ...inputs.filter((input) => !input.startsWith(`${ENTRY}:`)).map((input) => resolve(input)),
      source("../../tsconfig.json"),
      source("../../package.json"),
      fileURLToPath(import.meta.url),
      source("../../package-lock.json"),
      CRYPTO_WASM,
    ]);
    if (stamps.some(([, , mtimeMs]) => mtimeMs >= started - RECORD_MARGIN_MS)) return;
    // Its own name aside: concurrent starts each write theirs, and the last rename wins whole.
    const partial = `${record}.${randomUUID()}.partial`;
    await writeFile(partial, JSON.stringify({ bundle, stamps }));
    await rename(partial, record).catch(() => rm(partial, { force: true }));
  } catch {
    // A file gone since the build, or the folder unwritable: the next start builds again.
  }
}

/** How long before a build a file must have last changed for the build to be recorded. */
const RECORD_MARGIN_MS = 2000;

/**
 * Marks the bundle and its record as used now (a record may be missing), and removes what no
 * start used for `BUNDLE_KEPT_MS`.
 */
async function keep(folder: string, used: string[]) {
  const now = new Date();
  await Promise.all(used.map((path) => utimes(path, now, now).catch(() => {})));
  await removeOldBundles(folder, used);
}

/** Removes the bundles (and any left half-built, and records) no start used for `BUNDLE_KEPT_MS`. */
async function removeOldBundles(folder: string, kept: string[]) {
  const now = Date.now();
  for (const name of await readdir(folder)) {
    const path = join(folder, name);
    if (kept.includes(path)) continue;
    const { mtimeMs } = await stat(path).catch(() => ({ mtimeMs: now }));
    if (now - mtimeMs > BUNDLE_KEPT_MS) await rm(path, { recursive: true, force: true });
  }
}

/** One bundle per application module and process, shared by its functions and their restarts. */
const bundles = new Map<string, Promise<string>>();
const functionBundle = (applicationModule: string) => {
  let bundle = bundles.get(applicationModule);
  if (!bundle) {
    bundle = bundleFunctions(applicationModule).then((built) => built.bundle);
    // A failed build is not kept: the next function's start (or restart) tries again.
    bundle.catch(() => bundles.delete(applicationModule));
    bundles.set(applicationModule, bundle);
  }
  return bundle;
};

/** How long a crashed function waits before it is started again. */
export const RESTART_DELAY_MS = 1000;
/** How long a stopping function may take to finish what it is doing before it is cut off. */
const STOP_WAIT_MS = 10_000;

export interface SupervisedFunction {
  /** Batches the consumer is handling now (0 for the HTTP functions). */
  busy(): number;
  /** Hands the function a line of recent traffic written elsewhere. */
  addLogLine(line: LogLine): void;
  stop(): Promise<void>;
}

/** The threads whose functions read the remote secret: the HTTP one (the app function's) and the outbox. */
const REMOTE_SECRET_ROLES: ReadonlySet<FunctionWorkerData["role"]> = new Set(["http", "outbox"]);

/** The threads whose functions read the crypto state's secret: the events one and the outbox. */
const CRYPTO_ROLES: ReadonlySet<FunctionWorkerData["role"]> = new Set(["events", "outbox"]);

/**
 * What the thread of `data.role` is given: the remote secret only where, in AWS, a function of
 * that thread reads it; the events thread runs the application's code, and never sees it. The
 * crypto state's secret goes to the events thread (it decrypts) and the outbox's (it encrypts).
 */
export function workerDataFor(data: FunctionWorkerData): FunctionWorkerData {
  const { remoteSecret, cryptoStoreSecret, ...tokens } = data.tokens;
  return {
    ...data,
    tokens: {
      ...tokens,
      ...(REMOTE_SECRET_ROLES.has(data.role) && remoteSecret !== undefined && { remoteSecret }),
      // The crypto state's secret: only the events function decrypts, only the outbox encrypts.
      ...(CRYPTO_ROLES.has(data.role) && cryptoStoreSecret !== undefined && { cryptoStoreSecret }),
    },
  };
}

/**
 * Runs one of local mode's functions in a worker thread of its own, as Lambda runs each function
 * apart, and starts it again (after `RESTART_DELAY_MS`) whenever it crashes: its crash is logged,
 * and the messages it was handling reappear on their queue after their visibility timeout, as in
 * AWS. Its counts are added to `metrics`. Resolves once the function is ready.
 */
export async function superviseFunction(
  data: FunctionWorkerData,
  log: Log,
  metrics: CountingMetrics,
  /** Where its lines of recent traffic go. */
  onLogLine: (line: LogLine) => void,
): Promise<SupervisedFunction> {
  let worker: Worker;
  let running = false;
  let busy = 0;
  let stopping = false;
  let restartTimer: NodeJS.Timeout | undefined;

  const bundle = await functionBundle(data.applicationModule);
  const start = () =>
    new Promise<void>((resolve, reject) => {
      // Plain JavaScript: no loader of the parent's (`--import tsx`) is wanted in the thread.
      worker = new Worker(bundle, { workerData: workerDataFor(data), execArgv: [] });
      running = true;
      busy = 0;
      let ready = false;
      let crash: unknown;
      worker.on("message", (message: FunctionWorkerMessage) => {
        if ("ready" in message) {
          ready = true;
          resolve();
        } else if ("counts" in message) {
          for (const [name, value] of message.counts) metrics.count(name, value);
        } else if ("busy" in message) busy = message.busy;
        else if ("log" in message) onLogLine(message.log);
      });
      worker.on("error", (error) => {
        crash = error;
      });
      worker.on("exit", (code) => {
        running = false;
        busy = 0;
        if (!ready) {
          reject(new Error(`The ${data.role} function failed to start`, { cause: crash ?? code }));
          return;
        }
        if (stopping) return;
        log.error(`the ${data.role} function crashed; starting it again`, {
          function: data.role,
          exitCode: code,
          error: crash,
        });
        const restart = () => {
          restartTimer = undefined;
          if (stopping) return;
          start().catch((error) => {
            log.error(`the ${data.role} function could not start again; trying again`, {
              function: data.role,
              error,
            });
            if (!stopping) restartTimer = setTimeout(restart, RESTART_DELAY_MS);
          });
        };
        restartTimer = setTimeout(restart, RESTART_DELAY_MS);
      });
    });

  await start();
  return {
    busy: () => busy,
    addLogLine(line) {
      if (running) worker.postMessage({ log: line });
    },
    async stop() {
      stopping = true;
      clearTimeout(restartTimer);
      if (!running) return;
      const current = worker;
      const stopped = new Promise<void>((resolve) => {
        current.on("message", (message: FunctionWorkerMessage) => {
          if ("stopped" in message) resolve();
        });
        current.once("exit", () => resolve());
      });
      current.postMessage("stop");
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        stopped.then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), STOP_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (!finished) log.warn(`the ${data.role} function did not stop in time: cut off`);
      await current.terminate();
    },
  };
}
