import {
  GetRandomPasswordCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import type { CloudFormationCustomResourceEvent, Context } from "aws-lambda";
import { TOKENS_SECRET_KEYS } from "../wiring/env.ts";
import { createLogger } from "./shared/logger.ts";

/** How every token is generated: as CloudFormation generates the secret's first one. */
export const TOKEN_GENERATION = { PasswordLength: 64, ExcludePunctuation: true } as const;

/**
 * Completes the tokens secret's JSON: each of `TOKENS_SECRET_KEYS` it lacks gets a token from
 * Secrets Manager's generator; tokens already there are kept, so a stack update never changes
 * a token the homeserver knows. Writes only when one was missing. Resolves the keys it added.
 */
export async function fillTokensSecret(
  client: Pick<SecretsManagerClient, "send">,
  secretId: string,
): Promise<string[]> {
  const { SecretString } = await client.send(new GetSecretValueCommand({ SecretId: secretId }));
  const tokens = JSON.parse(SecretString || "{}") as Record<string, string>;
  const missing = Object.values(TOKENS_SECRET_KEYS).filter((key) => !tokens[key]);
  for (const key of missing) {
    const { RandomPassword } = await client.send(new GetRandomPasswordCommand(TOKEN_GENERATION));
    if (!RandomPassword) throw new Error("Secrets Manager generated no password");
    tokens[key] = RandomPassword;
  }
  if (missing.length > 0) {
    await client.send(
      new PutSecretValueCommand({ SecretId: secretId, SecretString: JSON.stringify(tokens) }),
    );
  }
  return missing;
}

/**
 * The stack's custom resource that completes the tokens secret at deploy time (CloudFormation
 * generates one value per secret). It always answers CloudFormation, which would otherwise wait
 * an hour; a deletion leaves the secret as it is (retained with the stack's other state).
 */
export async function handler(
  event: CloudFormationCustomResourceEvent,
  context: Context,
): Promise<void> {
  const secretId = String(event.ResourceProperties.SecretId);
  const log = createLogger();
  let failure: string | undefined;
  try {
    if (event.RequestType !== "Delete") {
      const added = await fillTokensSecret(new SecretsManagerClient({}), secretId);
      // The keys added, never a token.
      log.info("tokens secret completed", { added });
    }
  } catch (error) {
    failure = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    log.error("completing the tokens secret failed", { failure });
  }
  // The presigned URL signs no content type: send none.
  const response = await fetch(event.ResponseURL, {
    method: "PUT",
    headers: { "content-type": "" },
    body: JSON.stringify({
      Status: failure ? "FAILED" : "SUCCESS",
      Reason: failure ?? `See ${context.logGroupName} ${context.logStreamName}`,
      PhysicalResourceId: secretId,
      StackId: event.StackId,
      RequestId: event.RequestId,
      LogicalResourceId: event.LogicalResourceId,
    }),
  });
  if (!response.ok) throw new Error(`CloudFormation's response URL answered ${response.status}`);
}
