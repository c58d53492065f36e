import {
  GetSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import type { HsTokenVersions } from "../../appservice/protocol/auth.ts";
import type { SecretSource } from "../../wiring/deps.ts";
import { TOKEN_SECRET_FIELDS, type TokenName } from "../../wiring/env.ts";

/**
 * The tokens kept in Secrets Manager, a secret each, by the ARNs of the function's configuration
 * (only those it uses): each read once per cold start, and only if asked for; never put in the
 * environment itself.
 */
export function secretsManagerSource(
  arns: Partial<Record<(typeof TOKEN_SECRET_FIELDS)[TokenName], string>>,
): SecretSource {
  const client = new SecretsManagerClient({});
  const tokens = new Map<TokenName, Promise<string>>();
  const read = async (token: TokenName) => {
    const arn = arns[TOKEN_SECRET_FIELDS[token]];
    if (!arn) throw new Error(`This function is given no ${token} secret`);
    const { SecretString } = await client.send(new GetSecretValueCommand({ SecretId: arn }));
    if (!SecretString) throw new Error(`The ${token} secret has no string value`);
    return SecretString;
  };
  return (token) => {
    let value = tokens.get(token);
    if (!value) {
      // A failed read is not kept: the next call reads again.
      value = read(token).catch((error: unknown) => {
        tokens.delete(token);
        throw error;
      });
      tokens.set(token, value);
    }
    return value;
  };
}

/**
 * The hs_token's secret, both stages (`AWSCURRENT` and, after a rotation, `AWSPREVIOUS`) and when
 * the current one was put: read anew at each call (`HsTokens` bounds how often).
 */
export function hsTokenVersionsSource(hsTokenSecretArn: string): () => Promise<HsTokenVersions> {
  const client = new SecretsManagerClient({});
  const stage = (VersionStage: "AWSCURRENT" | "AWSPREVIOUS") =>
    client.send(new GetSecretValueCommand({ SecretId: hsTokenSecretArn, VersionStage }));
  return async () => {
    const [current, previous] = await Promise.all([
      stage("AWSCURRENT"),
      // A secret never rotated has no previous version.
      stage("AWSPREVIOUS").catch((error: unknown) => {
        if (error instanceof ResourceNotFoundException) return undefined;
        throw error;
      }),
    ]);
    if (!current.SecretString) throw new Error("The hsToken secret has no string value");
    return {
      current: current.SecretString,
      ...(previous?.SecretString && { previous: previous.SecretString }),
      ...(current.CreatedDate && { currentSince: current.CreatedDate.getTime() }),
    };
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
