import { createRelay } from "../functions/applications/relay/index.ts";
import { application as webhooks } from "../functions/applications/webhooks/index.ts";
import type { Application } from "../functions/appservice/application.ts";
import { APPLICATION_NAMES } from "../functions/wiring/application.ts";

/** The application a stack runs, with what it needs to be told. */
export type ApplicationChoice = { name: "webhooks" } | { name: "relay"; relayUrl: string };

/** The whole application (its routes, the users and aliases it acts as), read at synth time. */
export const wholeApplication = (choice: ApplicationChoice): Application =>
  choice.name === "relay" ? createRelay({ remoteUrl: choice.relayUrl }) : webhooks;

/** cdk.json's `application` (the webhooks by default) and, for the relay, its `relayUrl`. */
export function applicationChoice(
  name: string | undefined,
  relayUrl: string | undefined,
): ApplicationChoice {
  if (name === undefined || name === "webhooks") return { name: "webhooks" };
  if (name !== "relay") {
    throw new Error(
      `The context value application=${name} is none of ${APPLICATION_NAMES.join(", ")}`,
    );
  }
  if (!relayUrl || !URL.canParse(relayUrl) || !/^https?:$/.test(new URL(relayUrl).protocol)) {
    throw new Error("application=relay needs relayUrl, its remote service's http(s) URL");
  }
  return { name, relayUrl };
}
