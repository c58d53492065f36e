// The applications local mode and `npm run registration` choose from by name (`APPLICATION`),
// apart from main.ts (which starts on import) and local.ts (which loads the AWS SDK), so that
// the registration script reads the same list.
import type { Application } from "../appservice/application.ts";
import type { ApplicationName } from "../wiring/application.ts";

/** The module whose `application` export local mode runs by default. */
export const DEFAULT_APPLICATION_MODULE = new URL(
  "../applications/webhooks/index.ts",
  import.meta.url,
).href;

/**
 * `APPLICATION`: the module each function loads its application from: the webhooks
 * (`functions/applications/webhooks/`) by default, or the relay bridge's example (its remote service at `RELAY_URL`).
 */
export const APPLICATION_MODULES: Record<ApplicationName, string> = {
  webhooks: DEFAULT_APPLICATION_MODULE,
  relay: new URL("../applications/relay/from-environment.ts", import.meta.url).href,
};

/** The module of the application `name` (the webhooks when undefined); throws on another name. */
export function applicationModuleOf(name = "webhooks"): string {
  if (!Object.hasOwn(APPLICATION_MODULES, name)) {
    throw new Error(
      `APPLICATION=${name} is none of ${Object.keys(APPLICATION_MODULES).join(", ")}`,
    );
  }
  return APPLICATION_MODULES[name as ApplicationName];
}

/** The `application` a module exports. */
export const loadApplication = async (module: string): Promise<Application> =>
  ((await import(module)) as { application: Application }).application;
