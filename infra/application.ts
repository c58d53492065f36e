import { pathToFileURL } from "node:url";
import type { Application } from "../functions/appservice/application.ts";
import {
  type ApplicationConfig,
  type ApplicationFunction,
  type ApplicationModule,
  applicationConfig,
  SettingError,
  wholeApplication,
} from "../functions/appservice/manifest.ts";
import {
  applicationNames,
  DEFAULT_APPLICATION,
  manifestPathOf,
} from "../functions/local/applications.ts";

/** The application a stack runs, by name, with its settings' values and its whole (read at synth). */
export interface ApplicationChoice {
  name: string;
  module: ApplicationModule;
  /** Its settings, by environment variable, from their context values. */
  config: ApplicationConfig;
  /** Its routes, the users and aliases it acts as. */
  application: Application;
}

/**
 * cdk.json's `application` (the default application's folder by default) and the context values
 * its manifest's settings are taken from (`relayUrl` for the relay).
 */
export async function applicationChoice(
  name: string | undefined,
  context: (key: string) => string | undefined,
): Promise<ApplicationChoice> {
  const chosen = name ?? DEFAULT_APPLICATION;
  if (!applicationNames().includes(chosen)) {
    throw new Error(
      `The context value application=${chosen} is none of ${applicationNames().join(", ")}`,
    );
  }
  const module = (await import(pathToFileURL(manifestPathOf(chosen)).href)) as ApplicationModule;
  const settings = Object.entries(module.manifest.settings ?? {});
  const config = Object.fromEntries(
    settings.flatMap(([variable, setting]) => {
      const value = context(setting.context);
      return value === undefined ? [] : [[variable, value]];
    }),
  );
  try {
    applicationConfig(module.manifest, config);
  } catch (error) {
    if (!(error instanceof SettingError)) throw error;
    const setting = module.manifest.settings?.[error.variable];
    throw new Error(
      `application=${chosen} needs ${setting?.context ?? "a setting"} (${error.variable}): ${error.message}`,
      { cause: error },
    );
  }
  return { name: chosen, module, config, application: await wholeApplication(module, config) };
}

let defaultChoice: Promise<ApplicationChoice> | undefined;

/**
 * The default application (package.json's, `DEFAULT_APPLICATION`) with no context values: what
 * `cdk synth` runs given no `application`. Read when first asked for (its manifest and every
 * part loaded), then kept: importing this module loads no application. A failure is not kept:
 * the next call reads it again.
 */
export const defaultApplicationChoice = (): Promise<ApplicationChoice> => {
  defaultChoice ??= applicationChoice(undefined, () => undefined).catch((error: unknown) => {
    defaultChoice = undefined;
    throw error;
  });
  return defaultChoice;
};

/** The environment a function gets for the application's settings it reads. */
export const settingsEnvironment = (choice: ApplicationChoice, fn: ApplicationFunction) =>
  Object.fromEntries(
    Object.entries(choice.module.manifest.settings ?? {})
      .filter(([, setting]) => setting.functions.includes(fn))
      .map(([variable]) => [variable, choice.config[variable] as string]),
  );
