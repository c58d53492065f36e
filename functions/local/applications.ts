// The applications local mode, `npm run registration` and the bench choose from by name
// (`APPLICATION`): the folders under functions/applications/ with a manifest.ts. Apart from
// main.ts (which starts on import) and local.ts (which loads the AWS SDK), so that the
// registration script reads the same list.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Application } from "../appservice/application.ts";
import {
  type ApplicationConfig,
  type ApplicationModule,
  applicationConfig,
  wholeApplication,
} from "../appservice/manifest.ts";

const APPLICATIONS_FOLDER = fileURLToPath(new URL("../applications/", import.meta.url));

/**
 * Names the stack turns into its remote secret's id (`<Name>Secret`) and local mode into a file
 * beside the registration: lower case, digits and dashes, from a letter.
 */
const APPLICATION_NAME = /^[a-z][a-z0-9-]*$/;
/** Names whose secret would be named as a token's (`AsToken`, `HsToken`, `AdminToken`). */
const RESERVED_NAMES = ["as-token", "hs-token", "admin-token"];

/** Why `name` cannot be an application's, or undefined when it can. */
export function applicationNameProblem(name: string): string | undefined {
  if (!APPLICATION_NAME.test(name)) {
    return "is not lower-case letters, digits and dashes, starting with a letter";
  }
  if (RESERVED_NAMES.includes(name)) {
    return `is reserved: its secret would be named as a token's (${RESERVED_NAMES.join(", ")})`;
  }
  return undefined;
}

/**
 * The names of the applications: the folders with a manifest, sorted. Throws on a folder whose
 * name `applicationNameProblem` refuses.
 */
export function applicationNames(folder: string = APPLICATIONS_FOLDER): string[] {
  const names = readdirSync(folder, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .filter((name) => existsSync(join(folder, name, "manifest.ts")))
    .sort();
  for (const name of names) {
    const problem = applicationNameProblem(name);
    if (problem) throw new Error(`The application folder ${join(folder, name)} ${problem}`);
  }
  return names;
}

/** The default application: the one package.json's `#application` names (the tests' too). */
export const DEFAULT_APPLICATION = (() => {
  const { imports } = JSON.parse(
    readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
  ) as { imports: Record<string, string> };
  return /applications\/([^/]+)\/manifest\.ts$/.exec(imports["#application"] ?? "")?.[1] as string;
})();

/** The path of the manifest of the application `name`; throws naming the others. */
export function manifestPathOf(name = DEFAULT_APPLICATION): string {
  const names = applicationNames();
  if (!names.includes(name)) {
    throw new Error(`APPLICATION=${name} is none of ${names.join(", ")}`);
  }
  return join(APPLICATIONS_FOLDER, name, "manifest.ts");
}

/** The URL of the manifest module of the application `name` (the default when undefined). */
export const applicationModuleOf = (name?: string): string =>
  pathToFileURL(manifestPathOf(name)).href;

/** A manifest module, by its URL. */
export const importApplicationModule = async (module: string): Promise<ApplicationModule> =>
  (await import(module)) as ApplicationModule;

/** An application as local mode runs it: whole, its settings from `env` or their defaults. */
export async function loadApplication(
  module: string,
  env: Record<string, string | undefined> = process.env,
): Promise<{ application: Application; config: ApplicationConfig; module: ApplicationModule }> {
  const loaded = await importApplicationModule(module);
  const config = applicationConfig(loaded.manifest, env, { local: true });
  return { application: await wholeApplication(loaded, config), config, module: loaded };
}
