// The application a Lambda bundle runs, fixed when it is built: `#application` is its manifest
// module, functions/applications/<name>/manifest.ts, by esbuild's alias (infra/bundling.ts); in
// sources (tests, tsc) package.json's `imports` maps it to the default application's.
// Each part is read off the module's own export, never the module as an object: esbuild then
// keeps that part's loader, and the code it imports, and drops the other parts.
import * as bundled from "#application";
import type {
  ApplicationEvents,
  ApplicationOperator,
  ApplicationQueries,
  ApplicationRoutes,
} from "../appservice/application.ts";
import {
  type ApplicationFunction,
  applicationConfig,
  type PartLoader,
} from "../appservice/manifest.ts";

/** The bundled application's settings that `fn` reads, from the environment the stack set. */
const configOf = (fn: ApplicationFunction) =>
  applicationConfig(bundled.manifest, process.env, { fn });

const eventsLoader: PartLoader<ApplicationEvents> | undefined = bundled.events;
const routesLoader: PartLoader<ApplicationRoutes> | undefined = bundled.routes;
const queriesLoader: PartLoader<ApplicationQueries> | undefined = bundled.queries;
const operatorLoader: PartLoader<ApplicationOperator> | undefined = bundled.operator;

/** The events function's part of the bundled application. */
export const eventsPart = async (): Promise<ApplicationEvents> =>
  (await eventsLoader?.(configOf("events"))) ?? {};

/** The app function's part: the application's own HTTP routes. */
export const routesPart = async (): Promise<ApplicationRoutes> =>
  (await routesLoader?.(configOf("app"))) ?? {};

/** The queries function's part. */
export const queriesPart = async (): Promise<ApplicationQueries> =>
  (await queriesLoader?.(configOf("queries"))) ?? {};

/** The operator console's part. */
export const operatorPart = async (): Promise<ApplicationOperator> =>
  (await operatorLoader?.(configOf("admin"))) ?? {};
