import { readFileSync } from "node:fs";
import { App, Aspects } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";
import { parse } from "yaml";
import { missingNamespaces } from "../functions/appservice/protocol/namespaces.ts";
import {
  parseRegistration,
  publicRegistration,
  type Registration,
} from "../functions/appservice/protocol/registration.ts";
import { parseAllowedRanges } from "../functions/remote/address-policy.ts";
import { applicationChoice } from "./application.ts";
import { AppserviceStack } from "./appservice-stack.ts";
import type { PublicRegistration } from "./matrix-appservice.ts";

// Settings come from cdk.json's context or `-c key=value`.
const app = new App();
const context = (key: string) => app.node.tryGetContext(key) as string | undefined;
const serverName = context("serverName") ?? "example.org";
const choice = await applicationChoice(context("application"), context);
const { application } = choice;

/** From a registration file (its tokens are ignored: the stack keeps its own in Secrets Manager). */
function publicRegistrationFromFile(path: string): PublicRegistration {
  const {
    as_token: _a,
    hs_token: _h,
    url: _u,
    ...rest
  } = parseRegistration(parse(readFileSync(path, "utf8")), path);
  return rest;
}

const registrationFile = context("registrationFile");
const registration: PublicRegistration = registrationFile
  ? publicRegistrationFromFile(registrationFile)
  : publicRegistration({
      id: context("registrationId") ?? "serverless-appservice",
      senderLocalpart: context("senderLocalpart") ?? "appservice",
      serverName,
      prefix: context("namespacePrefix") ?? "_as_",
      ...(application.userPrefixes && { userPrefixes: application.userPrefixes }),
      ...(application.aliasPrefixes && { aliasPrefixes: application.aliasPrefixes }),
    });

// Users and aliases both, as local mode checks: a missing alias namespace fails the portals.
const missing = missingNamespaces(
  (registration as Pick<Registration, "namespaces">).namespaces,
  serverName,
  application,
);
if (missing.length > 0) {
  throw new Error(
    `The registration's namespaces miss the users or aliases the application needs: add ${missing.join(", ")}`,
  );
}

/** A whole-number setting, if given. */
const numberContext = (key: string) => {
  const value = context(key);
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number)) throw new Error(`The context value ${key} must be a whole number`);
  return number;
};
const eventsMaxConcurrency = numberContext("eventsMaxConcurrency");
const outboxMaxConcurrency = numberContext("outboxMaxConcurrency");
const homeserverRateLimit = numberContext("homeserverRateLimit");
const transactionsReservedConcurrency = numberContext("transactionsReservedConcurrency");
const appReservedConcurrency = numberContext("appReservedConcurrency");
const alarmEmail = context("alarmEmail");
const alarmTopicArn = context("alarmTopicArn");

new AppserviceStack(app, context("stackName") ?? "MatrixAppservice", {
  appservice: {
    homeserverUrl: context("homeserverUrl") ?? "https://matrix.example.org",
    serverName,
    registration,
    application: choice,
    tableDeletionProtection: context("tableDeletionProtection") !== "false",
    ...(context("publicBaseUrl") && { publicBaseUrl: context("publicBaseUrl") }),
    botProfile: {
      ...(context("botDisplayName") && { displayName: context("botDisplayName") }),
      ...(context("botAvatarUrl") && { avatarUrl: context("botAvatarUrl") }),
    },
    ...(eventsMaxConcurrency !== undefined && { eventsMaxConcurrency }),
    ...(outboxMaxConcurrency !== undefined && { outboxMaxConcurrency }),
    ...(homeserverRateLimit !== undefined && { homeserverRateLimit }),
    ...(transactionsReservedConcurrency !== undefined && { transactionsReservedConcurrency }),
    ...(appReservedConcurrency !== undefined && { appReservedConcurrency }),
    ...((alarmEmail || alarmTopicArn) && {
      alarmAction: {
        ...(alarmEmail && { email: alarmEmail }),
        ...(alarmTopicArn && { topicArn: alarmTopicArn }),
      },
    }),
    ...(context("deliveryAllowedAddresses") && {
      deliveryAllowedAddresses: parseAllowedRanges(context("deliveryAllowedAddresses")),
    }),
    tracing: String(context("tracing")) === "true",
    // `readEncryptedRooms`: the name from when encrypted rooms were only read, accepted too.
    encryptedRooms:
      String(context("encryptedRooms")) === "true" ||
      String(context("readEncryptedRooms")) === "true",
  },
});
Aspects.of(app).add(new AwsSolutionsChecks());
