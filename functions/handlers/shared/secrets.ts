import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import type { SecretSource } from "../../wiring/deps.ts";
import { parseTokensSecret } from "../../wiring/env.ts";

/**
 * The tokens kept in the one Secrets Manager secret of the function's configuration: read once
 * per cold start, and only if a token is asked for; never put in the environment itself.
 */
export function secretsManagerSource({
  tokensSecretArn,
}: {
  tokensSecretArn?: string;
}): SecretSource {
  let tokens: Promise<ReturnType<typeof parseTokensSecret>> | undefined;
  const read = async () => {
    if (!tokensSecretArn) throw new Error("This function is given no tokens secret");
    const { SecretString } = await new SecretsManagerClient({}).send(
      new GetSecretValueCommand({ SecretId: tokensSecretArn }),
    );
    if (!SecretString) throw new Error("The tokens secret has no string value");
    return parseTokensSecret(SecretString);
  };
  return async (token) => {
    // A failed read is not kept: the next call reads again.
    tokens ??= read().catch((error: unknown) => {
      tokens = undefined;
      throw error;
    });
    return (await tokens)[token];
  };
}

/**
 * A secret of its own holding one plain string (the relay's, shared with its remote service):
 * read once per cold start, and again after a failed read.
 */
export function secretStringSource(secretArn: string): () => Promise<string> {
  let value: Promise<string> | undefined;
  const read = async () => {
    const { SecretString } = await new SecretsManagerClient({}).send(
      new GetSecretValueCommand({ SecretId: secretArn }),
    );
    if (!SecretString) throw new Error("The secret has no string value");
    return SecretString;
  };
  return () =>
    (value ??= read().catch((error: unknown) => {
      value = undefined;
      throw error;
    }));
}
