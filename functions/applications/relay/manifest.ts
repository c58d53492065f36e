import {
  type ApplicationEvents,
  defineApplication,
  type PartLoader,
} from "../../appservice/api.ts";
import { RELAY_PREFIX } from "./names.ts";

const httpUrl = (value: string) =>
  URL.canParse(value) && /^https?:$/.test(new URL(value).protocol)
    ? undefined
    : "not an http(s) URL";

/**
 * "relay", the bridge kit's worked example (docs/bridge.md): its remote service's URL, the secret
 * it shares with it, its puppets and portals' namespace. It answers no query and adds nothing to
 * the operator console.
 */
export const manifest = defineApplication({
  settings: {
    RELAY_URL: {
      description: "the remote service at",
      functions: ["events"],
      context: "relayUrl",
      localDefault: "http://127.0.0.1:9100",
      problem: httpUrl,
    },
  },
  namespaces: { users: [RELAY_PREFIX], aliases: [RELAY_PREFIX] },
  // The variable docs/bridge.md and the README give the remote side.
  remoteSecret: { env: "RELAY_SECRET", urlSetting: "RELAY_URL" },
});

type Settings = NonNullable<(typeof manifest)["settings"]>;

export const events: PartLoader<ApplicationEvents, Settings> = async (config) =>
  (await import("./events.ts")).relayEvents({ remoteUrl: config.RELAY_URL });
export const queries = undefined;
export const routes = async () => (await import("./routes.ts")).application;
export const operator = undefined;
