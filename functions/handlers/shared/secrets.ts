import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import type { SecretSource } from "../../wiring/deps.ts";

/**
 * The tokens kept in Secrets Manager, by the ARNs in the function's configuration: read once
 * per cold start, never put in the environment itself.
 */
export function secretsManagerSource(arns: {
  asTokenSecretArn?: string;
  hsTokenSecretArn?: string;
}): SecretSource {
  // One client for every secret a cold start reads, made only if one is read.
  let client: SecretsManagerClient | undefined;
  return async (token) => {
    const arn = token === "asToken" ? arns.asTokenSecretArn : arns.hsTokenSecretArn;
    if (!arn) throw new Error(`This function is given no secret for its ${token}`);
    client ??= new SecretsManagerClient({});
    const { SecretString } = await client.send(new GetSecretValueCommand({ SecretId: arn }));
    if (!SecretString) throw new Error(`The secret of the ${token} has no string value`);
    return SecretString;
  };
}
