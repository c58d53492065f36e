import { App, Aspects } from "aws-cdk-lib";
import { Annotations, Match, Template } from "aws-cdk-lib/assertions";
import { AwsSolutionsChecks } from "cdk-nag";
import { beforeAll, describe, expect, it } from "vitest";
import { application } from "../../functions/app/index.ts";
import { routeTable } from "../../functions/appservice/routes.ts";
import { OUTBOUND_MAX_RECEIVE_COUNT } from "../../functions/matrix/backoff.ts";
import { AppserviceStack } from "../../infra/appservice-stack.ts";
import {
  EVENTS_FUNCTION_TIMEOUT,
  MAX_RECEIVE_COUNT,
  OUTBOX_FUNCTION_TIMEOUT,
} from "../../infra/matrix-appservice.ts";
import { synthesized } from "../support/cdk-synth.ts";

type Resource = { Type: string; Properties: Record<string, unknown> };

describe("AppserviceStack", () => {
  let stack: AppserviceStack;
  let template: Template;
  const resources = (type: string) =>
    Object.entries(template.findResources(type) as Record<string, Resource>);
  /** The logical ID of the function whose entry is `name` (TransactionsFunction…). */
  const functionId = (name: string) =>
    resources("AWS::Lambda::Function").find(([id]) =>
      id.includes(`${name}Function`),
    )?.[0] as string;
  const policyOf = (name: string) => {
    const roleId = functionId(name).replace(/Function.*$/, "Function");
    const policies = resources("AWS::IAM::Policy").filter(([id]) => id.startsWith(roleId));
    return policies.flatMap(
      ([, p]) =>
        (
          p.Properties.PolicyDocument as {
            Statement: { Action: string | string[]; Resource: unknown }[];
          }
        ).Statement,
    );
  };

  beforeAll(() => {
    // No bundling here: the run's one `cdk synth` bundles each function (test/support/cdk-synth.ts),
    // and bundles.test.ts loads what it made.
    const app = new App({ context: { "aws:cdk:bundling-stacks": [] } });
    stack = new AppserviceStack(app, "Test", {
      appservice: {
        homeserverUrl: "https://matrix.example.org",
        serverName: "example.org",
        registration: {
          id: "test",
          sender_localpart: "bot",
          namespaces: {
            users: [{ regex: "@_t_.*:example\\.org", exclusive: true }],
            aliases: [],
            rooms: [],
          },
        },
      },
    });
    Aspects.of(app).add(new AwsSolutionsChecks());
    template = Template.fromStack(stack);
  }, 120_000);

  it("passes the cdk-nag AwsSolutions checks (every suppression carries a reason)", () => {
    const findings = [
      ...Annotations.fromStack(stack).findError("*", Match.stringLikeRegexp("AwsSolutions-.*")),
      ...Annotations.fromStack(stack).findWarning("*", Match.stringLikeRegexp("AwsSolutions-.*")),
    ];
    expect(findings.map((f) => `${f.id}: ${String(f.entry.data).split("\n")[0]}`)).toEqual([]);
  });

  it("serves every route of the route table, and the rest through the $default fallback", () => {
    const routeKeys = resources("AWS::ApiGatewayV2::Route").map(([, r]) => r.Properties.RouteKey);
    for (const route of routeTable(application.routes ?? []))
      expect(routeKeys).toContain(`${route.method} ${route.path}`);
    expect(routeKeys).toContain("$default");
    template.hasResourceProperties("AWS::ApiGatewayV2::Stage", {
      StageName: "$default",
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 },
      AccessLogSettings: Match.objectLike({ DestinationArn: Match.anyValue() }),
      // The application's webhook route, open to the internet, has a throttle of its own.
      RouteSettings: {
        "POST /webhook/{id}": { ThrottlingRateLimit: 20, ThrottlingBurstLimit: 40 },
      },
    });
    const stage = resources("AWS::ApiGatewayV2::Stage")[0]?.[1] as Resource & {
      DependsOn?: string[];
    };
    const webhookRoute = resources("AWS::ApiGatewayV2::Route").find(
      ([, r]) => r.Properties.RouteKey === "POST /webhook/{id}",
    )?.[0];
    expect(stage.DependsOn).toContain(webhookRoute);
  });

  it("gives the application's functions its public base URL (the API's) and the fallback its routes", () => {
    const fns = template.findResources("AWS::Lambda::Function");
    for (const name of ["Events", "App"]) {
      const env = (fns[functionId(name)] as Resource).Properties.Environment as {
        Variables: Record<string, unknown>;
      };
      expect(env.Variables.PUBLIC_BASE_URL).toEqual({
        "Fn::GetAtt": [expect.stringMatching(/^AppserviceApi/), "ApiEndpoint"],
      });
      expect(env.Variables).toMatchObject({
        BOT_USER_ID: "@bot:example.org",
        HOMESERVER_URL: "https://matrix.example.org",
      });
    }
    const fallback = (fns[functionId("Fallback")] as Resource).Properties.Environment as {
      Variables: Record<string, string>;
    };
    expect(JSON.parse(fallback.Variables.APP_ROUTES as string)).toEqual([
      { method: "POST", path: "/webhook/{id}" },
    ]);
  });

  it("runs each function on nodejs22.x, ARM64, ESM with source maps, its logs kept for a month", () => {
    const functions = resources("AWS::Lambda::Function");
    expect(functions).toHaveLength(6);
    for (const [, fn] of functions) {
      expect(fn.Properties).toMatchObject({
        Runtime: "nodejs22.x",
        Architectures: ["arm64"],
        Handler: "index.handler",
      });
      expect(JSON.stringify(fn.Properties.Environment)).toContain("--enable-source-maps");
    }
    for (const [, group] of resources("AWS::Logs::LogGroup"))
      expect(group.Properties.RetentionInDays).toBe(30);
  });

  it("keeps the tokens in generated secrets, never in environment variables or outputs", () => {
    template.resourceCountIs("AWS::SecretsManager::Secret", 2);
    template.allResourcesProperties("AWS::SecretsManager::Secret", {
      GenerateSecretString: { PasswordLength: 64, ExcludePunctuation: true },
    });
    const transactions = template.findResources("AWS::Lambda::Function")[
      functionId("Transactions")
    ] as Resource;
    const env = (transactions.Properties.Environment as { Variables: Record<string, unknown> })
      .Variables;
    expect(Object.keys(env)).not.toContain("HS_TOKEN");
    expect(env.HS_TOKEN_SECRET_ARN).toEqual({ Ref: expect.stringMatching(/^AppserviceHsToken/) });
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(Object.keys(outputs)).toEqual(
      expect.arrayContaining(["ApiUrl", "AsTokenSecretArn", "HsTokenSecretArn", "Registration"]),
    );
    expect(JSON.stringify(outputs)).not.toMatch(/SecretString|resolve:secretsmanager/);
  });

  it("has the single table: pk/sk strings, TTL on expiresAt, on-demand, PITR, deletion protection", () => {
    template.hasResourceProperties("AWS::DynamoDB::Table", {
      KeySchema: [
        { AttributeName: "pk", KeyType: "HASH" },
        { AttributeName: "sk", KeyType: "RANGE" },
      ],
      BillingMode: "PAY_PER_REQUEST",
      TimeToLiveSpecification: { AttributeName: "expiresAt", Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      DeletionProtectionEnabled: true,
    });
  });

  it("has encrypted, SSL-only FIFO queues, inbound and outbound, each redriving to a FIFO dead-letter queue", () => {
    template.resourceCountIs("AWS::SQS::Queue", 4);
    template.allResourcesProperties("AWS::SQS::Queue", {
      FifoQueue: true,
      SqsManagedSseEnabled: true,
    });
    template.hasResourceProperties("AWS::SQS::Queue", {
      VisibilityTimeout: EVENTS_FUNCTION_TIMEOUT.toSeconds() * 6,
      RedrivePolicy: { maxReceiveCount: MAX_RECEIVE_COUNT, deadLetterTargetArn: Match.anyValue() },
    });
    template.hasResourceProperties("AWS::SQS::Queue", {
      VisibilityTimeout: OUTBOX_FUNCTION_TIMEOUT.toSeconds() * 6,
      RedrivePolicy: {
        maxReceiveCount: OUTBOUND_MAX_RECEIVE_COUNT,
        deadLetterTargetArn: Match.anyValue(),
      },
    });
    template.resourceCountIs("AWS::SQS::QueuePolicy", 4);
    template.allResourcesProperties("AWS::SQS::QueuePolicy", {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: "Deny",
            Condition: { Bool: { "aws:SecureTransport": "false" } },
          }),
        ]),
      },
    });
    template.resourceCountIs("AWS::Lambda::EventSourceMapping", 2);
    template.allResourcesProperties("AWS::Lambda::EventSourceMapping", {
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      BatchSize: 10,
    });
  });

  it("grants each function only what its adapters call", () => {
    const actions = (name: string) =>
      policyOf(name)
        .flatMap((s) => [s.Action].flat())
        .sort();
    expect(actions("Transactions")).toEqual(
      [
        "dynamodb:PutItem",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
      ].sort(),
    );
    // The application's data and room-state reads: GetItem, Query, the writes, the as_token.
    const applicationGrants = [
      "dynamodb:ConditionCheckItem",
      "dynamodb:DeleteItem",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "secretsmanager:DescribeSecret",
      "secretsmanager:GetSecretValue",
    ];
    expect(actions("Events")).toEqual(
      [
        ...applicationGrants,
        "dynamodb:UpdateItem",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
      ].sort(),
    );
    expect(actions("Outbox")).toEqual(
      [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
      ].sort(),
    );
    expect(actions("Queries")).toEqual(
      [
        "dynamodb:DeleteItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "secretsmanager:DescribeSecret",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetSecretValue",
        "secretsmanager:GetSecretValue",
      ].sort(),
    );
    expect(actions("App")).toEqual(
      [...applicationGrants, "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"].sort(),
    );
    expect(actions("Fallback")).toEqual([]);
    for (const statement of ["Transactions", "Events", "Outbox", "Queries", "App"].flatMap(
      policyOf,
    )) {
      expect(JSON.stringify(statement.Resource)).not.toBe('"*"');
    }
  });

  it("alarms on dead letters, API 5xx and each function's errors", () => {
    const metrics = resources("AWS::CloudWatch::Alarm").map(([, a]) => a.Properties.MetricName);
    expect(metrics.sort()).toEqual([
      "5xx",
      "ApproximateNumberOfMessagesVisible",
      "ApproximateNumberOfMessagesVisible",
      "Errors",
      "Errors",
      "Errors",
      "Errors",
      "Errors",
      "Errors",
    ]);
  });

  it("gives the outbox the homeserver, the bot and the namespaces, and the token only by its secret", () => {
    const outbox = template.findResources("AWS::Lambda::Function")[
      functionId("Outbox")
    ] as Resource;
    const env = (outbox.Properties.Environment as { Variables: Record<string, unknown> }).Variables;
    expect(env).toMatchObject({
      HOMESERVER_URL: "https://matrix.example.org",
      BOT_USER_ID: "@bot:example.org",
      AS_TOKEN_SECRET_ARN: { Ref: expect.stringMatching(/^AppserviceAsToken/) },
    });
    // Whom the outbox may act as.
    expect(JSON.parse(env.REGISTRATION_JSON as string).namespaces.users).toEqual([
      { regex: "@_t_.*:example\\.org", exclusive: true },
    ]);
  });
});

describe("cdk synth", () => {
  it("runs with the CDK CLI, offline and without credentials", async () => {
    const { template } = await synthesized();
    const types = Object.values(template.Resources).map((r) => r.Type);
    expect(types).toEqual(
      expect.arrayContaining([
        "AWS::ApiGatewayV2::Api",
        "AWS::Lambda::Function",
        "AWS::DynamoDB::Table",
      ]),
    );
  }, 240_000);
});
