import type { Application } from "../../appservice/api.ts";
import { type RelayOptions, relayEvents } from "./events.ts";
import { RELAY_PREFIX } from "./names.ts";
import { application as routes } from "./routes.ts";

/**
 * "relay": a bridge to a toy remote chat service, the bridge kit's worked example (README,
 * docs/bridge.md). A remote channel is a portal room `#_relay_<channel>:<server>`; a remote user
 * is a puppet `@_relay_<user>:<server>`. The remote service posts its messages, edits,
 * deletions, reactions and typing under `/relay/{channel}/…`; what Matrix users do in a portal
 * is delivered under `{remoteUrl}/channels/{channel}/…` through the outbound queue.
 * Each Lambda function runs its part (`events.ts`, `routes.ts`; it answers no query and adds
 * nothing to the operator console); local mode and the stack read the whole.
 */
export function createRelay(options: RelayOptions): Application {
  return {
    ...relayEvents(options),
    ...routes,
    userPrefixes: [RELAY_PREFIX],
    aliasPrefixes: [RELAY_PREFIX],
  };
}
