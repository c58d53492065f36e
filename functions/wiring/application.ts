import type {
  ApplicationEvents,
  ApplicationOperator,
  ApplicationQueries,
  ApplicationRoutes,
} from "../appservice/application.ts";
import type { Config } from "./env.ts";

/** The applications a stack can run: cdk.json's `application` (local mode: `APPLICATION`). */
export const APPLICATION_NAMES = ["webhooks", "relay"] as const;
export type ApplicationName = (typeof APPLICATION_NAMES)[number];

/**
 * The application a Lambda bundle runs, fixed when it is built: the stack has esbuild `define`
 * this name (infra/bundling.ts), so every branch below but the chosen one is dead code, and an
 * `import()` in dead code is never bundled: a bundle holds one application's code and packages.
 * The tests, which import the handlers from their sources, define it too (vitest.config.ts).
 */
declare const BUNDLED_APPLICATION: ApplicationName;
export const BUNDLED_APPLICATION_CONSTANT = "BUNDLED_APPLICATION";

// Each part is one conditional expression: esbuild drops its dead branch, but not the code after
// an `if` that returns.

/** The events function's part of the bundled application. */
export const eventsPart = async (config: Config<"events">): Promise<ApplicationEvents> =>
  BUNDLED_APPLICATION === "relay"
    ? (await import("../applications/relay/events.ts")).relayEvents({
        remoteUrl: relayUrlOf(config),
      })
    : (await import("../applications/webhooks/events.ts")).application;

/** The app function's part: the application's own HTTP routes. */
export const routesPart = async (): Promise<ApplicationRoutes> =>
  BUNDLED_APPLICATION === "relay"
    ? (await import("../applications/relay/routes.ts")).application
    : (await import("../applications/webhooks/routes.ts")).application;

/** The queries function's part: the relay answers no query. */
export const queriesPart = async (): Promise<ApplicationQueries> =>
  BUNDLED_APPLICATION === "relay"
    ? {}
    : (await import("../applications/webhooks/queries.ts")).application;

/** The operator console's part: the relay adds nothing to it. */
export const operatorPart = async (): Promise<ApplicationOperator> =>
  BUNDLED_APPLICATION === "relay"
    ? {}
    : (await import("../applications/webhooks/operator.ts")).application;

function relayUrlOf(config: Config<"events">): string {
  if (!config.relayUrl) throw new Error("The relay's events function needs RELAY_URL");
  return config.relayUrl;
}
