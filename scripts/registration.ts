// `npm run registration -- [options]`: writes a registration file for the homeserver, either
// fresh (random tokens) or, with --stack, the one of a deployed stack.
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import {
  newRegistration,
  registrationYaml,
} from "../functions/appservice/protocol/registration.ts";
import { applicationModuleOf, importApplicationModule } from "../functions/local/applications.ts";
import { defaultStackClients, registrationFromStack } from "./registration-from-stack.ts";

const usage = `Usage: npm run registration -- [options]
  --out FILE            where to write it (default: print to stdout); never overwrites
  --stack NAME          the registration of this deployed stack (AWS credentials needed)
  --region REGION       the stack's region (default: the AWS SDK's)
Fresh registrations (without --stack), for the application APPLICATION names as npm start
reads it (a folder of functions/applications/; webhooks by default), whose users and aliases
it adds:
  --url URL             where the homeserver reaches the appservice (default: http://127.0.0.1:9000)
  --id ID               the appservice's unique ID (default: serverless-appservice-<8 random
                        hex digits>: a homeserver refuses two registrations with one ID)
  --server-name NAME    the homeserver's server name (default: localhost)
  --localpart NAME      the bot's localpart, sender_localpart (default: appservice)
  --prefix PREFIX       localpart prefix of the users and aliases it owns (default: _as_);
                        the application's user prefixes are added`;

const { values } = parseArgs({
  options: {
    out: { type: "string" },
    stack: { type: "string" },
    region: { type: "string" },
    url: { type: "string", default: "http://127.0.0.1:9000" },
    id: { type: "string" },
    "server-name": { type: "string", default: "localhost" },
    localpart: { type: "string", default: "appservice" },
    prefix: { type: "string", default: "_as_" },
    help: { type: "boolean", short: "h" },
  },
});

/** A new registration for the application local mode would run (`APPLICATION`). */
async function freshRegistration() {
  let module: string;
  try {
    module = applicationModuleOf(process.env.APPLICATION);
  } catch (error) {
    console.error((error as Error).message);
    process.exit(1);
  }
  const { namespaces } = (await importApplicationModule(module)).manifest;
  return newRegistration({
    id: values.id,
    url: values.url,
    serverName: values["server-name"],
    senderLocalpart: values.localpart,
    prefix: values.prefix,
    ...(namespaces?.users && { userPrefixes: namespaces.users }),
    ...(namespaces?.aliases && { aliasPrefixes: namespaces.aliases }),
  });
}

if (values.help) {
  console.log(usage);
} else {
  const registration = values.stack
    ? await registrationFromStack(values.stack, defaultStackClients(values.region))
    : await freshRegistration();
  const yaml = registrationYaml(registration);
  if (values.out) {
    await writeFile(values.out, yaml, { mode: 0o600, flag: "wx" });
    console.error(`Wrote ${values.out}`);
  } else {
    process.stdout.write(yaml);
  }
}
