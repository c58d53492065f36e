import { defineApplication } from "../../appservice/api.ts";
import { WEBHOOK_USER_PREFIX } from "./webhooks/user.ts";

/**
 * "webhooks", the default application (package.json's `#application`): incoming and outgoing
 * webhooks (`!webhook help`), and a bot that answers `!ping`. Each function loads its part alone:
 * markdown-it and sanitize-html are the app function's, which renders.
 */
export const manifest = defineApplication({
  namespaces: { users: [WEBHOOK_USER_PREFIX] },
  // The transformations' engine: a worker thread's bundle, and QuickJS's WebAssembly, which it
  // reads at the first transformation of a process.
  bundleFiles: {
    app: {
      copy: ["@jitl/quickjs-wasmfile-release-sync/wasm"],
      bundle: { "sandbox-worker.mjs": "webhooks/sandbox-worker.ts" },
      localExternals: ["@jitl/quickjs-wasmfile-release-sync", "quickjs-emscripten-core"],
    },
  },
});

export const events = async () => (await import("./events.ts")).application;
export const queries = async () => (await import("./queries.ts")).application;
export const routes = async () => (await import("./routes.ts")).application;
export const operator = async () => (await import("./operator.ts")).application;
