import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { requiredEnv } from "./lambda-handler.ts";

let client: SecretsManagerClient | undefined;

/**
 * A token kept in Secrets Manager, its ARN in the environment variable `envName`: read once
 * per cold start, never put in the environment itself.
 */
export async function secretFromEnv(envName: string): Promise<string> {
  // One client for every secret a cold start reads.
  client ??= new SecretsManagerClient({});
  const { SecretString } = await client.send(
    new GetSecretValueCommand({ SecretId: requiredEnv(envName) }),
  );
  if (!SecretString) throw new Error(`The secret named by ${envName} has no string value`);
  return SecretString;
}
