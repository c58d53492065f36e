import { randomUUID } from "node:crypto";
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { Template } from "aws-cdk-lib/assertions";
import type { Context } from "aws-lambda";
import { mockClient } from "aws-sdk-client-mock";
import { interceptLocalhostDns } from "fauxqs";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import { localDynamoDb, localSqs } from "../../functions/local/aws-clients.ts";
import { toRecord } from "../../functions/local/poller.ts";
import { ensureFifoQueue } from "../../functions/local/queues.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { ENV } from "../../functions/wiring/env.ts";
import { defaultApplicationChoice } from "../../infra/application.ts";
import { AppserviceStack } from "../../infra/appservice-stack.ts";
import { functionEntries } from "../../infra/bundling.ts";
import { unbundledApp } from "../support/cdk-app.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

const SERVER = "test.local";
const bot = `@bot:${SERVER}`;
/** A secret a token, as the stack makes them (plain strings). */
const TOKEN_ARNS = {
  as: "arn:aws:secretsmanager:us-east-1:123456789012:secret:as",
  hs: "arn:aws:secretsmanager:us-east-1:123456789012:secret:hs",
  admin: "arn:aws:secretsmanager:us-east-1:123456789012:secret:admin",
};

/**
 * Every Lambda `handler` export, invoked as Lambda invokes it: the environment the synthesized
 * stack gives its function, the AWS endpoints pointed at DynamoDB Local and fauxqs. Secrets
 * Manager, an AWS-only API that cannot run here, is mocked (aws-sdk-client-mock).
 */
describe("the Lambda entries, with the stack's environment", () => {
  const dynamodbEndpoint = inject("dynamodbEndpoint");
  const dynamodb = localDynamoDb(dynamodbEndpoint);
  const tableName = `entries-${randomUUID().slice(0, 8)}`;
  const homeserver = new ScriptedHomeserver("as-token", SERVER, bot);
  const secrets = mockClient(SecretsManagerClient);
  const savedEnv = { ...process.env };
  let sqsLocal: Awaited<ReturnType<typeof startSqsLocal>>;
  let sqs: ReturnType<typeof localSqs>;
  let template: Template;
  const local: Record<string, string> = {};
  const queues: Record<"inbound" | "outbound", { url: string; arn: string }> = {
    inbound: { url: "", arn: "" },
    outbound: { url: "", arn: "" },
  };

  let restoreDns: () => void;

  beforeAll(async () => {
    // fauxqs's queue URLs are on sqs.<region>.localhost, and the SDK sends to the queue URL's
    // host as in AWS: fauxqs's own DNS patch makes *.localhost resolve to 127.0.0.1.
    restoreDns = interceptLocalhostDns();
    sqsLocal = await startSqsLocal();
    sqs = localSqs(sqsLocal.endpoint);
    await homeserver.start();
    const prefix = `entries-${randomUUID().slice(0, 8)}`;
    const options = { visibilityTimeoutSeconds: 30, maxReceiveCount: 5 };
    const [, inbound, outbound] = await Promise.all([
      ensureTable(dynamodb, tableName),
      ensureFifoQueue(sqs, `${prefix}-inbound`, options),
      ensureFifoQueue(sqs, `${prefix}-outbound`, options),
    ]);
    queues.inbound = inbound;
    queues.outbound = outbound;
    // What the stack's references resolve to when deployed: here, the local resources.
    Object.assign(local, {
      [ENV.tableName]: tableName,
      [ENV.inboundQueueUrl]: inbound.url,
      [ENV.inboundDeadLetterQueueUrl]: inbound.deadLetterUrl,
      [ENV.outboundQueueUrl]: outbound.url,
      [ENV.outboundDeadLetterQueueUrl]: outbound.deadLetterUrl,
      [ENV.asTokenSecretArn]: TOKEN_ARNS.as,
      [ENV.hsTokenSecretArn]: TOKEN_ARNS.hs,
      [ENV.adminTokenSecretArn]: TOKEN_ARNS.admin,
      [ENV.publicBaseUrl]: "https://appservice.example.org/",
    });
    secrets
      .on(GetSecretValueCommand, { SecretId: TOKEN_ARNS.as })
      .resolves({ SecretString: "as-token" })
      .on(GetSecretValueCommand, { SecretId: TOKEN_ARNS.hs })
      .resolves({ SecretString: "hs-token" })
      .on(GetSecretValueCommand, { SecretId: TOKEN_ARNS.admin })
      .resolves({ SecretString: "admin-token" });
    // Bundling skipped: only the environment is read here.
    const app = unbundledApp();
    const stack = new AppserviceStack(app, "Entries", {
      appservice: {
        homeserverUrl: homeserver.url,
        serverName: SERVER,
        registration: {
          id: "entries",
          sender_localpart: "bot",
          namespaces: {
            users: [{ regex: "@_as_.*:test\\.local", exclusive: true }],
            aliases: [],
            rooms: [],
          },
        },
        application: await defaultApplicationChoice(),
      },
    });
    template = Template.fromStack(stack);
  }, 120_000);
  afterAll(async () => {
    process.env = savedEnv;
    restoreDns();
    secrets.restore();
    await homeserver.stop();
    sqs.destroy();
    dynamodb.destroy();
    await sqsLocal.stop();
  });

  /** A function of the synthesized stack. */
  const functionResource = (name: keyof typeof functionEntries) =>
    (
      Object.entries(template.findResources("AWS::Lambda::Function")).find(([id]) =>
        id.includes(`${name[0]?.toUpperCase()}${name.slice(1)}Function`),
      ) as [
        string,
        { Properties: { Timeout: number; Environment: { Variables: Record<string, unknown> } } },
      ]
    )[1];

  /** The `handler` of a function's entry, freshly imported, in the environment the stack gives it. */
  async function entry(name: keyof typeof functionEntries) {
    const fn = functionResource(name);
    const environment = Object.fromEntries(
      Object.entries(fn.Properties.Environment.Variables).map(([key, value]) => {
        if (typeof value === "string") return [key, value];
        const resolved = local[key];
        if (!resolved) throw new Error(`No local value for ${key} of ${name}`);
        return [key, resolved];
      }),
    );
    process.env = {
      ...savedEnv,
      ...environment,
      // In this test only: the SDK's clients reach the local emulators.
      AWS_ENDPOINT_URL_DYNAMODB: dynamodbEndpoint,
      AWS_ENDPOINT_URL_SQS: sqsLocal.endpoint,
    };
    // Each entry keeps its dependencies per process: a fresh module, a fresh cold start.
    vi.resetModules();
    // Named inside functions/handlers/, the one folder LOADERS lets this file load from, and
    // with its extension written, as Vite's dynamic imports want.
    const file = functionEntries[name].replace(/^functions\/handlers\/(.*)\.ts$/, "$1");
    const module = (await import(`../../functions/handlers/${file}.ts`)) as {
      handler: (event: unknown, context: Context) => Promise<unknown>;
    };
    return module.handler;
  }

  /** A fresh invocation's context: the whole timeout the stack gives the function is left. */
  const context = (name: keyof typeof functionEntries) => {
    const deadline = Date.now() + functionResource(name).Properties.Timeout * 1000;
    return {
      functionName: name,
      awsRequestId: randomUUID(),
      getRemainingTimeInMillis: () => deadline - Date.now(),
    } as unknown as Context;
  };

  const httpEvent = (method: string, routeKey: string, rawPath: string, extra: object = {}) => ({
    version: "2.0",
    routeKey,
    rawPath,
    rawQueryString: "",
    headers: {},
    isBase64Encoded: false,
    requestContext: { requestId: randomUUID(), http: { method, path: rawPath } },
    ...extra,
  });

  /** The messages waiting on a queue, as the SQS event Lambda's event source mapping builds. */
  async function sqsEvent(queue: "inbound" | "outbound") {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queues[queue].url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    return { Records: Messages.map((message) => toRecord(message, queues[queue].arn)) };
  }

  it("transactions → events → outbox: the bot's invite is acknowledged, handled and joined", async () => {
    const roomId = `!${randomUUID().slice(0, 8)}:${SERVER}`;
    homeserver.createRoom(roomId, [`@alice:${SERVER}`]);
    const transactions = await entry("transactions");
    const put = (token: string) =>
      transactions(
        httpEvent(
          "PUT",
          "PUT /_matrix/app/v1/transactions/{txnId}",
          "/_matrix/app/v1/transactions/t1",
          {
            headers: { authorization: `Bearer ${token}` },
            pathParameters: { txnId: "t1" },
            body: JSON.stringify({
              events: [
                {
                  type: "m.room.member",
                  state_key: bot,
                  content: { membership: "invite" },
                  room_id: roomId,
                  sender: `@alice:${SERVER}`,
                  event_id: `$${randomUUID()}`,
                  origin_server_ts: Date.now(),
                },
              ],
            }),
          },
        ),
        context("transactions"),
      ) as Promise<{ statusCode: number; body: string }>;
    expect((await put("wrong-token")).statusCode).toBe(403);
    const acked = await put("hs-token");
    expect(acked.statusCode, acked.body).toBe(200);

    const inbound = await sqsEvent("inbound");
    expect(inbound.Records).toHaveLength(1);
    const events = await entry("events");
    expect(await events(inbound, context("events"))).toEqual({ batchItemFailures: [] });

    const outbound = await sqsEvent("outbound");
    expect(outbound.Records).toHaveLength(1);
    const outbox = await entry("outbox");
    expect(await outbox(outbound, context("outbox"))).toEqual({ batchItemFailures: [] });
    const joins = homeserver.requests.filter(
      (request) =>
        request.method === "POST" &&
        request.path === `/_matrix/client/v3/join/${encodeURIComponent(roomId)}` &&
        request.authorization === "Bearer as-token",
    );
    expect(joins.map((join) => join.status)).toEqual([200]);
  });

  it("queries: a user query is authenticated with the secret's hs_token and answered", async () => {
    const queries = await entry("queries");
    const userId = `@_as_${randomUUID().slice(0, 8)}:${SERVER}`;
    const query = (token: string) =>
      queries(
        httpEvent("GET", "GET /_matrix/app/v1/users/{userId}", `/_matrix/app/v1/users/${userId}`, {
          headers: { authorization: `Bearer ${token}` },
          pathParameters: { userId },
        }),
        context("queries"),
      ) as Promise<{ statusCode: number; body: string }>;
    expect((await query("wrong-token")).statusCode).toBe(403);
    // The default application creates no users on demand: the spec's 404.
    const response = await query("hs-token");
    expect(response.statusCode, response.body).toBe(404);
    expect(JSON.parse(response.body).errcode).toBe("M_NOT_FOUND");
  });

  it("app: a webhook POST for an unknown id → 404", async () => {
    const app = await entry("app");
    const response = (await app(
      httpEvent("POST", "POST /webhook/{id}", "/webhook/unknown", {
        pathParameters: { id: "unknown" },
        body: JSON.stringify({ text: "hi" }),
      }),
      context("app"),
    )) as { statusCode: number; body: string };
    expect(response.statusCode, response.body).toBe(404);
    expect(JSON.parse(response.body).errcode).toBeTypeOf("string");
  });

  it("fallback: an unknown path → 404 M_UNRECOGNIZED", async () => {
    const fallback = await entry("fallback");
    const response = (await fallback(
      httpEvent("GET", "$default", "/nowhere"),
      context("fallback"),
    )) as { statusCode: number; body: string };
    expect(response.statusCode).toBe(404);
    expect(JSON.parse(response.body).errcode).toBe("M_UNRECOGNIZED");
  });
});
