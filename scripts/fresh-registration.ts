import {
  newRegistration,
  type Registration,
} from "../functions/appservice/protocol/registration.ts";
import { applicationModuleOf, importApplicationModule } from "../functions/local/applications.ts";

/** `npm run registration`'s options for a fresh registration. */
export interface FreshRegistrationOptions {
  url: string;
  id?: string | undefined;
  serverName: string;
  localpart: string;
  prefix: string;
}

/**
 * A new registration for the application `application` names (`APPLICATION`, as npm start reads
 * it; the default when undefined), with its users and aliases; throws naming the applications
 * when it names none.
 */
export async function freshRegistration(
  application: string | undefined,
  options: FreshRegistrationOptions,
): Promise<Registration> {
  const { namespaces } = (await importApplicationModule(applicationModuleOf(application))).manifest;
  return newRegistration({
    id: options.id,
    url: options.url,
    serverName: options.serverName,
    senderLocalpart: options.localpart,
    prefix: options.prefix,
    ...(namespaces?.users && { userPrefixes: namespaces.users }),
    ...(namespaces?.aliases && { aliasPrefixes: namespaces.aliases }),
  });
}
