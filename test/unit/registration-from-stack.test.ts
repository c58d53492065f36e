import { CloudFormationClient, DescribeStacksCommand } from "@aws-sdk/client-cloudformation";
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { mockClient } from "aws-sdk-client-mock";
import { describe, expect, it } from "vitest";
import { consoleOfStack } from "../../scripts/admin-client.ts";
import { registrationFromStack } from "../../scripts/registration-from-stack.ts";

// CloudFormation and Secrets Manager exist only in AWS: their answers are mocked here.
describe("registrationFromStack", () => {
  const publicFields = {
    id: "bridge",
    sender_localpart: "bot",
    namespaces: {
      users: [{ regex: "@_b_.*:example\\.org", exclusive: true }],
      aliases: [],
      rooms: [],
    },
  };
  const outputs = [
    { OutputKey: "ApiUrl", OutputValue: "https://abc.execute-api.eu-west-1.amazonaws.com" },
    { OutputKey: "TokensSecretArn", OutputValue: "arn:tokens" },
    { OutputKey: "Registration", OutputValue: JSON.stringify(publicFields) },
  ];

  const tokens = JSON.stringify({
    as_token: "A".repeat(64),
    hs_token: "H".repeat(64),
    admin_token: "D".repeat(64),
  });
  const clients = (stackOutputs: typeof outputs, secretString = tokens) => {
    const cloudFormation = mockClient(CloudFormationClient);
    cloudFormation.on(DescribeStacksCommand, { StackName: "MatrixAppservice" }).resolves({
      Stacks: [
        {
          StackName: "MatrixAppservice",
          StackStatus: "CREATE_COMPLETE",
          CreationTime: new Date(),
          Outputs: stackOutputs,
        },
      ],
    });
    const secretsManager = mockClient(SecretsManagerClient);
    secretsManager
      .on(GetSecretValueCommand, { SecretId: "arn:tokens" })
      .resolves({ SecretString: secretString })
      // Since the split: a secret a token, a plain string each.
      .on(GetSecretValueCommand, { SecretId: "arn:as" })
      .resolves({ SecretString: "a".repeat(64) })
      .on(GetSecretValueCommand, { SecretId: "arn:hs" })
      .resolves({ SecretString: "h".repeat(64) })
      .on(GetSecretValueCommand, { SecretId: "arn:admin" })
      .resolves({ SecretString: "d".repeat(64) });
    return {
      cloudFormation: new CloudFormationClient({ region: "eu-west-1" }),
      secretsManager: new SecretsManagerClient({ region: "eu-west-1" }),
    };
  };

  it("gives npm run admin -- --stack the console's URL and the admin_token, nothing else", async () => {
    expect(await consoleOfStack("MatrixAppservice", clients(outputs))).toEqual({
      url: "https://abc.execute-api.eu-west-1.amazonaws.com",
      token: "D".repeat(64),
    });
    const withoutAdmin = JSON.stringify({ as_token: "A".repeat(64), hs_token: "H".repeat(64) });
    await expect(
      consoleOfStack("MatrixAppservice", clients(outputs, withoutAdmin)),
    ).rejects.toThrow(/admin_token/);
  });

  it("reads each token from its own secret once the stack has one a token (AsTokenSecretArn, …)", async () => {
    const split = [
      ...outputs.filter((output) => output.OutputKey !== "TokensSecretArn"),
      { OutputKey: "AsTokenSecretArn", OutputValue: "arn:as" },
      { OutputKey: "HsTokenSecretArn", OutputValue: "arn:hs" },
      { OutputKey: "AdminTokenSecretArn", OutputValue: "arn:admin" },
    ];
    expect(await registrationFromStack("MatrixAppservice", clients(split))).toMatchObject({
      as_token: "a".repeat(64),
      hs_token: "h".repeat(64),
    });
    expect((await consoleOfStack("MatrixAppservice", clients(split))).token).toBe("d".repeat(64));
    await expect(
      consoleOfStack(
        "MatrixAppservice",
        clients(split.filter((output) => output.OutputKey !== "AdminTokenSecretArn")),
      ),
    ).rejects.toThrow("has no output AdminTokenSecretArn");
  });

  it("joins the stack's outputs and its secrets into a valid registration (a stack of the one-secret layout)", async () => {
    const registration = await registrationFromStack("MatrixAppservice", clients(outputs));
    expect(registration).toMatchObject({
      ...publicFields,
      url: "https://abc.execute-api.eu-west-1.amazonaws.com",
      as_token: "A".repeat(64),
      hs_token: "H".repeat(64),
    });
  });

  it("asks for ephemeral events under both names when the stack's registration names one", async () => {
    const olderStack = outputs.map((output) =>
      output.OutputKey === "Registration"
        ? { ...output, OutputValue: JSON.stringify({ ...publicFields, receive_ephemeral: true }) }
        : output,
    );
    const registration = await registrationFromStack("MatrixAppservice", clients(olderStack));
    expect(registration).toMatchObject({
      receive_ephemeral: true,
      "de.sorunome.msc2409.push_ephemeral": true,
    });
    // A registration that asks for none is left so.
    const plain = await registrationFromStack("MatrixAppservice", clients(outputs));
    expect(plain.receive_ephemeral).toBeUndefined();
    expect(plain["de.sorunome.msc2409.push_ephemeral"]).toBeUndefined();
  });

  it("says which token the secret lacks, never a token", async () => {
    const withoutHs = JSON.stringify({ as_token: "A".repeat(64), admin_token: "D".repeat(64) });
    const failure = registrationFromStack("MatrixAppservice", clients(outputs, withoutHs));
    await expect(failure).rejects.toThrow("The tokens secret lacks hs_token");
    await expect(failure).rejects.not.toThrow("AAAA");
    await expect(
      registrationFromStack("MatrixAppservice", clients(outputs, "A".repeat(64))),
    ).rejects.toThrow("The tokens secret is not JSON");
  });

  it("says which output is missing", async () => {
    await expect(
      registrationFromStack(
        "MatrixAppservice",
        clients(outputs.filter((o) => o.OutputKey !== "ApiUrl")),
      ),
    ).rejects.toThrow(/no output ApiUrl/);
  });
});
