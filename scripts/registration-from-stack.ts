import { CloudFormationClient, DescribeStacksCommand } from "@aws-sdk/client-cloudformation";
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import {
  ephemeralFlagToAdd,
  parseRegistration,
  type Registration,
} from "../functions/appservice/protocol/registration.ts";
import { parseTokensSecret } from "../functions/wiring/env.ts";

export interface StackClients {
  cloudFormation: Pick<CloudFormationClient, "send">;
  secretsManager: Pick<SecretsManagerClient, "send">;
}

export const defaultStackClients = (region?: string): StackClients => ({
  cloudFormation: new CloudFormationClient(region ? { region } : {}),
  secretsManager: new SecretsManagerClient(region ? { region } : {}),
});

/**
 * The registration file of a deployed stack: its public fields and API URL from the stack's
 * outputs, its tokens from the stack's one Secrets Manager secret (`TokensSecretArn`).
 */
export async function registrationFromStack(
  stackName: string,
  { cloudFormation, secretsManager }: StackClients,
): Promise<Registration> {
  const { Stacks = [] } = await cloudFormation.send(
    new DescribeStacksCommand({ StackName: stackName }),
  );
  const outputs = Object.fromEntries(
    (Stacks[0]?.Outputs ?? []).map((output) => [output.OutputKey, output.OutputValue]),
  );
  const output = (key: string) => {
    const value = outputs[key];
    if (!value)
      throw new Error(`Stack ${stackName} has no output ${key}: is it this project's stack?`);
    return value;
  };
  const { SecretString } = await secretsManager.send(
    new GetSecretValueCommand({ SecretId: output("TokensSecretArn") }),
  );
  if (!SecretString) throw new Error("The stack's tokens secret is empty");
  const { asToken, hsToken } = parseTokensSecret(SecretString);
  const registration = parseRegistration(
    {
      ...JSON.parse(output("Registration")),
      url: output("ApiUrl"),
      as_token: asToken,
      hs_token: hsToken,
    },
    `stack ${stackName}`,
  );
  // A stack deployed before both names were written, or from a file with one of them.
  const missing = ephemeralFlagToAdd(registration);
  return missing ? { ...registration, [missing]: true } : registration;
}
