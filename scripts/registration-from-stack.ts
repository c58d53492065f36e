import { CloudFormationClient, DescribeStacksCommand } from "@aws-sdk/client-cloudformation";
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import {
  ephemeralFlagToAdd,
  parseRegistration,
  type Registration,
} from "../functions/appservice/protocol/registration.ts";
import { parseTokensSecret, type TokenName } from "../functions/wiring/env.ts";
import { TOKEN_OUTPUTS } from "../infra/matrix-appservice.ts";

export interface StackClients {
  cloudFormation: Pick<CloudFormationClient, "send">;
  secretsManager: Pick<SecretsManagerClient, "send">;
}

export const defaultStackClients = (region?: string): StackClients => ({
  cloudFormation: new CloudFormationClient(region ? { region } : {}),
  secretsManager: new SecretsManagerClient(region ? { region } : {}),
});

/**
 * The tokens `names` of a deployed stack, from its outputs: a secret each (`AsTokenSecretArn`, …),
 * or, from a stack not updated since, the one secret that held them all (`TokensSecretArn`).
 */
export async function stackTokens<N extends TokenName>(
  stackName: string,
  outputs: Map<string | undefined, string | undefined>,
  secretsManager: StackClients["secretsManager"],
  names: N[],
): Promise<Record<N, string>> {
  const read = async (secretId: string) => {
    const { SecretString } = await secretsManager.send(
      new GetSecretValueCommand({ SecretId: secretId }),
    );
    if (!SecretString) throw new Error("The stack's token secret is empty");
    return SecretString;
  };
  const legacy = outputs.get("TokensSecretArn");
  if (legacy && !outputs.has(TOKEN_OUTPUTS.asToken.output)) {
    const tokens = parseTokensSecret(await read(legacy));
    return Object.fromEntries(names.map((name) => [name, tokens[name]])) as Record<N, string>;
  }
  const entries = await Promise.all(
    names.map(async (name) => {
      const arn = outputs.get(TOKEN_OUTPUTS[name].output);
      if (!arn) {
        throw new Error(
          `Stack ${stackName} has no output ${TOKEN_OUTPUTS[name].output}: is it this project's stack?`,
        );
      }
      return [name, await read(arn)] as const;
    }),
  );
  return Object.fromEntries(entries) as Record<N, string>;
}

/**
 * The registration file of a deployed stack: its public fields and API URL from the stack's
 * outputs, its tokens from their secrets (`stackTokens`).
 */
export async function registrationFromStack(
  stackName: string,
  { cloudFormation, secretsManager }: StackClients,
): Promise<Registration> {
  const { Stacks = [] } = await cloudFormation.send(
    new DescribeStacksCommand({ StackName: stackName }),
  );
  const outputs = new Map(
    (Stacks[0]?.Outputs ?? []).map((output) => [output.OutputKey, output.OutputValue]),
  );
  const output = (key: string) => {
    const value = outputs.get(key);
    if (!value)
      throw new Error(`Stack ${stackName} has no output ${key}: is it this project's stack?`);
    return value;
  };
  const { asToken, hsToken } = await stackTokens(stackName, outputs, secretsManager, [
    "asToken",
    "hsToken",
  ]);
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
