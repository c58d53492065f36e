import {
  GetRandomPasswordCommand,
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import { fillTokensSecret, TOKEN_GENERATION } from "../../functions/handlers/tokens-secret.ts";
import { parseTokensSecret } from "../../functions/wiring/env.ts";

// Secrets Manager exists only in AWS: its answers are mocked here.
describe("the tokens secret", () => {
  const secrets = mockClient(SecretsManagerClient);
  const client = new SecretsManagerClient({ region: "us-east-1" });
  afterEach(() => secrets.reset());

  it("gets each missing token from Secrets Manager's generator and keeps the one there", async () => {
    let generated = 0;
    secrets
      .on(GetSecretValueCommand, { SecretId: "arn:tokens" })
      .resolves({ SecretString: JSON.stringify({ as_token: "A".repeat(64) }) })
      .on(GetRandomPasswordCommand, TOKEN_GENERATION)
      .callsFake(() => ({ RandomPassword: String(++generated).repeat(64) }));
    expect(await fillTokensSecret(client, "arn:tokens")).toEqual(["hs_token", "admin_token"]);
    const [put] = secrets.commandCalls(PutSecretValueCommand);
    expect(put?.args[0].input.SecretId).toBe("arn:tokens");
    expect(parseTokensSecret(put?.args[0].input.SecretString as string)).toEqual({
      asToken: "A".repeat(64),
      hsToken: "1".repeat(64),
      adminToken: "2".repeat(64),
    });
  });

  it("writes nothing when every token is there (a stack update changes no token)", async () => {
    secrets.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({ as_token: "a", hs_token: "h", admin_token: "d" }),
    });
    expect(await fillTokensSecret(client, "arn:tokens")).toEqual([]);
    expect(secrets.commandCalls(GetRandomPasswordCommand)).toHaveLength(0);
    expect(secrets.commandCalls(PutSecretValueCommand)).toHaveLength(0);
  });
});
