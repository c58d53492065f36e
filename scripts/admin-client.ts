import { DescribeStacksCommand } from "@aws-sdk/client-cloudformation";
import { type StackClients, stackTokens } from "./registration-from-stack.ts";

/** Where the operator console is and the token it takes. */
export interface ConsoleTarget {
  url: string;
  token: string;
}

/**
 * The console of a deployed stack: its URL from the stack's `ApiUrl` output, its token from its
 * secret (`stackTokens`).
 */
export async function consoleOfStack(
  stackName: string,
  { cloudFormation, secretsManager }: StackClients,
): Promise<ConsoleTarget> {
  const { Stacks = [] } = await cloudFormation.send(
    new DescribeStacksCommand({ StackName: stackName }),
  );
  const outputs = new Map(
    (Stacks[0]?.Outputs ?? []).map((output) => [output.OutputKey, output.OutputValue]),
  );
  const url = outputs.get("ApiUrl");
  if (!url) throw new Error(`Stack ${stackName} has no ApiUrl: is it this project's?`);
  const { adminToken } = await stackTokens(stackName, outputs, secretsManager, ["adminToken"]);
  return { url, token: adminToken };
}

/** One request to the console's API; its JSON answer, or an error naming the status. */
export async function consoleRequest(
  target: ConsoleTarget,
  path: string,
  body?: unknown,
  operator?: string,
): Promise<unknown> {
  const response = await fetch(`${target.url.replace(/\/+$/, "")}/admin/api/${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: {
      authorization: `Bearer ${target.token}`,
      ...(operator && { "x-operator": operator }),
      ...(body !== undefined && { "content-type": "application/json" }),
    },
    ...(body !== undefined && { body: JSON.stringify(body) }),
    redirect: "error",
    signal: AbortSignal.timeout(60_000),
  });
  const answer = (await response.json().catch(() => ({}))) as {
    errcode?: string;
    error?: string;
  };
  if (!response.ok) {
    throw new Error(`${response.status} ${answer.errcode ?? ""}: ${answer.error ?? ""}`);
  }
  return answer;
}
