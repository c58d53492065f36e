import { CloudFormationClient, DescribeStackResourceCommand } from "@aws-sdk/client-cloudformation";
import {
  GetSecretValueCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import { carryOverTokens } from "../../functions/handlers/tokens-secret.ts";

// CloudFormation and Secrets Manager exist only in AWS: their answers are mocked here.
describe("the upgrade from the one-secret layout", () => {
  const cloudFormation = mockClient(CloudFormationClient);
  const secretsManager = mockClient(SecretsManagerClient);
  const clients = {
    cloudFormation: new CloudFormationClient({ region: "us-east-1" }),
    secretsManager: new SecretsManagerClient({ region: "us-east-1" }),
  };
  const request = {
    stackId: "arn:stack",
    legacyLogicalId: "AppserviceTokens1234ABCD",
    targets: { asToken: "arn:as", hsToken: "arn:hs", adminToken: "arn:admin" },
  };
  afterEach(() => {
    cloudFormation.reset();
    secretsManager.reset();
  });

  it("gives each token's secret the token the old secret held, while the stack still holds it", async () => {
    cloudFormation
      .on(DescribeStackResourceCommand, {
        StackName: "arn:stack",
        LogicalResourceId: "AppserviceTokens1234ABCD",
      })
      .resolves({ StackResourceDetail: { PhysicalResourceId: "arn:legacy" } as never });
    secretsManager
      .on(GetSecretValueCommand, { SecretId: "arn:legacy" })
      .resolves({
        SecretString: JSON.stringify({ as_token: "A", hs_token: "H", admin_token: "D" }),
      })
      // CloudFormation generated new values; the admin token was carried by an earlier attempt.
      .on(GetSecretValueCommand, { SecretId: "arn:as" })
      .resolves({ SecretString: "new-a" })
      .on(GetSecretValueCommand, { SecretId: "arn:hs" })
      .resolves({ SecretString: "new-h" })
      .on(GetSecretValueCommand, { SecretId: "arn:admin" })
      .resolves({ SecretString: "D" });
    expect(await carryOverTokens(clients, request)).toEqual(["asToken", "hsToken"]);
    expect(
      secretsManager.commandCalls(PutSecretValueCommand).map((call) => call.args[0].input),
    ).toEqual([
      { SecretId: "arn:as", SecretString: "A" },
      { SecretId: "arn:hs", SecretString: "H" },
    ]);
  });

  it("writes nothing once the old secret has left the stack (a new stack, or a rotation since)", async () => {
    const gone = new Error("Resource AppserviceTokens1234ABCD does not exist for stack arn:stack");
    gone.name = "ValidationError";
    cloudFormation.on(DescribeStackResourceCommand).rejects(gone);
    expect(await carryOverTokens(clients, request)).toEqual([]);
    expect(secretsManager.calls()).toHaveLength(0);
  });

  it("fails, naming the key and no value, when the old secret lacks a token; other errors fail too", async () => {
    cloudFormation
      .on(DescribeStackResourceCommand)
      .resolves({ StackResourceDetail: { PhysicalResourceId: "arn:legacy" } as never });
    secretsManager.on(GetSecretValueCommand, { SecretId: "arn:legacy" }).resolves({
      SecretString: JSON.stringify({ as_token: "secret-A", hs_token: "secret-H" }),
    });
    const error = await carryOverTokens(clients, request).catch((thrown: Error) => thrown);
    expect(String(error)).toContain("lacks admin_token");
    expect(String(error)).not.toContain("secret-");
    expect(secretsManager.commandCalls(PutSecretValueCommand)).toHaveLength(0);
    cloudFormation.on(DescribeStackResourceCommand).rejects(new Error("throttled"));
    await expect(carryOverTokens(clients, request)).rejects.toThrow("throttled");
  });
});
