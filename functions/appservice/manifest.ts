import type {
  Application,
  ApplicationEvents,
  ApplicationOperator,
  ApplicationQueries,
  ApplicationRoutes,
} from "./application.ts";

/** The Lambda functions that run an application's code. */
export type ApplicationFunction = "events" | "queries" | "app" | "admin";

/** A variable of the environment an application reads, declared in its manifest. */
export interface ApplicationSetting {
  /** What its value is, as `npm start` prints it before the value ("the remote service at"). */
  description: string;
  /** The functions that read it: the stack sets it on those alone. */
  functions: readonly ApplicationFunction[];
  /** The stack's context key it is taken from (`-c relayUrl=…`); the synth fails without it. */
  context: string;
  /** Local mode's value when the variable is unset. */
  localDefault?: string;
  /** Why a value is refused; undefined when it is fine. */
  problem?(value: string): string | undefined;
}

/** An application's settings, by the name of their environment variable. */
export type ApplicationSettings = Record<string, ApplicationSetting>;

/** What a function's bundle holds beside the bundle itself, read at run time. */
export interface BundleFiles {
  /** npm package specifiers of files copied beside the bundle (`pkg/wasm`). */
  copy?: string[];
  /** Extra bundles: output file name → entry, relative to the manifest's folder. */
  bundle?: Record<string, string>;
  /**
   * npm packages local mode leaves in node_modules instead of bundling: those that read a file of
   * their own package at run time, which the stack's bundle has beside it by `copy`.
   */
  localExternals?: string[];
}

/**
 * An application declares itself in `manifest.ts`, in its folder under `functions/applications/`:
 * the folder's name is the application's (`APPLICATION=`, `-c application=`). The module exports
 * `manifest` and one loader per part (`events`, `queries`, `routes`, `operator`), undefined for a
 * part it has not; separate exports, so that a function's bundle keeps its own part's loader and
 * the code it imports, and tree-shakes the others away.
 */
export interface ApplicationManifest<S extends ApplicationSettings = ApplicationSettings> {
  /** Its configuration: the environment variables it reads. */
  settings?: S;
  /** The localpart prefixes of the users and room aliases it acts as (the registration's). */
  namespaces?: { users?: string[]; aliases?: string[] };
  /**
   * It shares a secret with its remote service: its routes check requests with it, the outbox
   * signs deliveries, to the origin of the URL in the setting `urlSetting` alone. Locally the
   * variable `env` (`REMOTE_SECRET` by default) or a file beside the registration; in the stack a
   * Secrets Manager secret of its own.
   */
  remoteSecret?: { env?: string; urlSetting: keyof S & string };
  /** Files a function's bundle needs at run time, by function. */
  bundleFiles?: Partial<Record<ApplicationFunction, BundleFiles>>;
}

/** The variable that gives local mode the remote secret. */
export const remoteSecretVariable = (manifest: ApplicationManifest) =>
  manifest.remoteSecret?.env ?? "REMOTE_SECRET";

/** The settings' values, by variable name. */
export type ApplicationConfig<S extends ApplicationSettings = ApplicationSettings> = {
  [K in keyof S]: string;
};

/** Loads one part, given the configuration (only the settings of its function in Lambda). */
export type PartLoader<P, S extends ApplicationSettings = ApplicationSettings> = (
  config: ApplicationConfig<S>,
) => Promise<P>;

/** What a manifest module exports. */
export interface ApplicationModule<S extends ApplicationSettings = ApplicationSettings> {
  manifest: ApplicationManifest<S>;
  events: PartLoader<ApplicationEvents, S> | undefined;
  queries: PartLoader<ApplicationQueries, S> | undefined;
  routes: PartLoader<ApplicationRoutes, S> | undefined;
  operator: PartLoader<ApplicationOperator, S> | undefined;
}

/** Types a manifest, keeping its settings' names for the part loaders' configuration. */
export const defineApplication = <const S extends ApplicationSettings = Record<never, never>>(
  manifest: ApplicationManifest<S>,
): ApplicationManifest<S> => manifest;

/** A setting missing or refused: `variable` names it (the message starts with it too). */
export class SettingError extends Error {
  override readonly name = "SettingError";

  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The settings' values from `env`: those `fn` reads (all without it), local mode's defaults
 * where `local`. Throws a `SettingError` naming the variable when one is missing or refused.
 */
export function applicationConfig(
  manifest: ApplicationManifest,
  env: Record<string, string | undefined>,
  { fn, local = false }: { fn?: ApplicationFunction; local?: boolean } = {},
): ApplicationConfig {
  const config: ApplicationConfig = {};
  for (const [name, setting] of Object.entries(manifest.settings ?? {})) {
    if (fn && !setting.functions.includes(fn)) continue;
    const value = env[name] || (local ? setting.localDefault : undefined);
    if (value === undefined)
      throw new SettingError(name, `${name} is not set: ${setting.description}`);
    const problem = setting.problem?.(value);
    if (problem) throw new SettingError(name, `${name}=${value}: ${problem}`);
    config[name] = value;
  }
  remoteUrlProblem(manifest, config);
  return config;
}

/**
 * Throws when the manifest's `remoteSecret.urlSetting` is none of its settings, or its value (when
 * `config` has it) is not an http(s) URL: the outbox takes the remote service's origin from it,
 * and signs what goes there.
 */
function remoteUrlProblem(manifest: ApplicationManifest, config: ApplicationConfig): void {
  const name = manifest.remoteSecret?.urlSetting;
  if (name === undefined) return;
  if (!manifest.settings?.[name]) {
    throw new Error(`remoteSecret.urlSetting ${name} is none of the manifest's settings`);
  }
  const value = config[name];
  if (value === undefined) return;
  const protocol = URL.canParse(value) ? new URL(value).protocol : undefined;
  if (protocol !== "http:" && protocol !== "https:") {
    throw new SettingError(
      name,
      `${name}=${value}: not an http(s) URL (the remote service's, remoteSecret.urlSetting)`,
    );
  }
}

/** The whole application (local mode, the stack's routes): every part, and its namespaces. */
export async function wholeApplication(
  module: ApplicationModule,
  config: ApplicationConfig,
): Promise<Application> {
  const parts = await Promise.all(
    [module.events, module.queries, module.routes, module.operator].map((load) => load?.(config)),
  );
  const { users, aliases } = module.manifest.namespaces ?? {};
  return Object.assign(
    {},
    ...parts,
    users && { userPrefixes: users },
    aliases && { aliasPrefixes: aliases },
  ) as Application;
}
