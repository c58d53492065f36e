import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { requiredEnv } from "./lambda-handler.ts";

/**
 * A token kept in Secrets Manager, its ARN in the environment variable `envName`: read once
 * per cold start, never put in the environment itself.
 */
export async function secretFromEnv(envName: string): Promise<string> {
  const client = new SecretsManagerClient({});
  try {
    const { SecretString } = await client.send(
      new GetSecretValueCommand({ SecretId: requiredEnv(envName) }),
    );
    if (!SecretString) throw new Error(`The secret named by ${envName} has no string value`);
    return SecretString;
  } finally {
    client.destroy();
  }
}
