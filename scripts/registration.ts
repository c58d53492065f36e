// `npm run registration -- [options]`: writes a registration file for the homeserver, either
// fresh (random tokens) or, with --stack, the one of a deployed stack.
import { writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { registrationYaml } from "../functions/appservice/protocol/registration.ts";
import { freshRegistration } from "./fresh-registration.ts";

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

/**
 * A deployed stack's registration. Imported only then: the module loads the AWS SDK's clients and
 * the CDK stack's code (its output names), seconds of a fresh registration's start otherwise.
 */
async function stackRegistration(stack: string) {
  const { defaultStackClients, registrationFromStack } = await import(
    "./registration-from-stack.ts"
  );
  return registrationFromStack(stack, defaultStackClients(values.region));
}

/** A new registration for the application local mode would run (`APPLICATION`). */
async function freshRegistrationOrExit() {
  try {
    return await freshRegistration(process.env.APPLICATION, {
      url: values.url,
      id: values.id,
      serverName: values["server-name"],
      localpart: values.localpart,
      prefix: values.prefix,
    });
  } catch (error) {
    console.error((error as Error).message);
    process.exit(1);
  }
}

if (values.help) {
  console.log(usage);
} else {
  const registration = values.stack
    ? await stackRegistration(values.stack)
    : await freshRegistrationOrExit();
  const yaml = registrationYaml(registration);
  if (values.out) {
    await writeFile(values.out, yaml, { mode: 0o600, flag: "wx" });
    console.error(`Wrote ${values.out}`);
  } else {
    process.stdout.write(yaml);
  }
}
