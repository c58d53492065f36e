import { readFileSync } from "node:fs";
import { App, Aspects } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";
import { parse } from "yaml";
import { parseRegistration, publicRegistration } from "../functions/appservice/registration.ts";
import { AppserviceStack } from "./appservice-stack.ts";
import type { PublicRegistration } from "./matrix-appservice.ts";

// Settings come from cdk.json's context or `-c key=value`.
const app = new App();
const context = (key: string) => app.node.tryGetContext(key) as string | undefined;
const serverName = context("serverName") ?? "example.org";

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
    });

new AppserviceStack(app, context("stackName") ?? "MatrixAppservice", {
  appservice: {
    homeserverUrl: context("homeserverUrl") ?? "https://matrix.example.org",
    serverName,
    registration,
    tableDeletionProtection: context("tableDeletionProtection") !== "false",
  },
});
Aspects.of(app).add(new AwsSolutionsChecks());
