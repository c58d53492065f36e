import { CloudFormationClient, DescribeStackResourceCommand } from "@aws-sdk/client-cloudformation";
import {
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import type { CloudFormationCustomResourceEvent, Context } from "aws-lambda";
import { parseTokensSecret, type TokenName } from "../wiring/env.ts";
import { createLogger } from "./shared/logger.ts";

/** How CloudFormation generates each token's secret (as the stacks always generated them). */
export const TOKEN_GENERATION = { PasswordLength: 64, ExcludePunctuation: true } as const;

/**
 * The upgrade from the layout in which one secret held every token as JSON (its logical ID
 * `legacyLogicalId`): while the stack still holds that secret (the deploy that replaces it, until
 * CloudFormation's clean-up), each token's own secret is given the token it held, so that no
 * token the homeserver knows changes. Resolves the tokens it wrote. Once the old secret has left
 * the stack (retained in the account), it finds nothing and writes nothing: a later rotation is
 * never undone.
 */
export async function carryOverTokens(
  clients: {
    cloudFormation: Pick<CloudFormationClient, "send">;
    secretsManager: Pick<SecretsManagerClient, "send">;
  },
  {
    stackId,
    legacyLogicalId,
    targets,
  }: { stackId: string; legacyLogicalId: string; targets: Record<TokenName, string> },
): Promise<TokenName[]> {
  let legacyArn: string | undefined;
  try {
    const { StackResourceDetail } = await clients.cloudFormation.send(
      new DescribeStackResourceCommand({ StackName: stackId, LogicalResourceId: legacyLogicalId }),
    );
    legacyArn = StackResourceDetail?.PhysicalResourceId;
  } catch (error) {
    // "Resource … does not exist for stack …": a stack made after the split, or already carried.
    if ((error as Error).name === "ValidationError") return [];
    throw error;
  }
  if (!legacyArn) return [];
  const read = async (secretId: string) =>
    (await clients.secretsManager.send(new GetSecretValueCommand({ SecretId: secretId })))
      .SecretString;
  const legacy = parseTokensSecret((await read(legacyArn)) ?? "");
  const written: TokenName[] = [];
  for (const [name, secretId] of Object.entries(targets) as [TokenName, string][]) {
    if ((await read(secretId)) === legacy[name]) continue;
    await clients.secretsManager.send(
      new PutSecretValueCommand({ SecretId: secretId, SecretString: legacy[name] }),
    );
    written.push(name);
  }
  return written;
}

/**
 * The stack's custom resource that carries the tokens over from the one-secret layout at deploy
 * time. It always answers CloudFormation, which would otherwise wait an hour; a deletion leaves
 * every secret as it is (retained with the stack's other state).
 */
export async function handler(
  event: CloudFormationCustomResourceEvent,
  context: Context,
): Promise<void> {
  const properties = event.ResourceProperties;
  const log = createLogger();
  let failure: string | undefined;
  try {
    if (event.RequestType !== "Delete") {
      const written = await carryOverTokens(
        {
          cloudFormation: new CloudFormationClient({}),
          secretsManager: new SecretsManagerClient({}),
        },
        {
          stackId: event.StackId,
          legacyLogicalId: String(properties.LegacyLogicalId),
          targets: {
            asToken: String(properties.AsTokenSecretId),
            hsToken: String(properties.HsTokenSecretId),
            adminToken: String(properties.AdminTokenSecretId),
          },
        },
      );
      // The tokens' names, never a token.
      log.info("tokens carried over from the one-secret layout", { written });
    }
  } catch (error) {
    failure = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    log.error("carrying the tokens over failed", { failure });
  }
  // The presigned URL signs no content type: send none.
  const response = await fetch(event.ResponseURL, {
    method: "PUT",
    headers: { "content-type": "" },
    body: JSON.stringify({
      Status: failure ? "FAILED" : "SUCCESS",
      Reason: failure ?? `See ${context.logGroupName} ${context.logStreamName}`,
      PhysicalResourceId: `${event.LogicalResourceId}-tokens`,
      StackId: event.StackId,
      RequestId: event.RequestId,
      LogicalResourceId: event.LogicalResourceId,
    }),
  });
  if (!response.ok) throw new Error(`CloudFormation's response URL answered ${response.status}`);
}
