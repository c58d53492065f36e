import { spawn } from "node:child_process";
import { once } from "node:events";
import { accessSync, constants, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import { text } from "node:stream/consumers";
import { App, Aspects, type CfnElement, Stack } from "aws-cdk-lib";
import { Annotations, Match, Template } from "aws-cdk-lib/assertions";
import { Secret } from "aws-cdk-lib/aws-secretsmanager";
import { AwsSolutionsChecks } from "cdk-nag";
import { Construct } from "constructs";
import { beforeAll, describe, expect, it } from "vitest";
import { application } from "../../functions/applications/webhooks/index.ts";
import { applicationConfig } from "../../functions/appservice/manifest.ts";
import { INBOUND_MAX_RECEIVE_COUNT } from "../../functions/appservice/pipeline/process-inbound.ts";
import { routeTable } from "../../functions/appservice/protocol/routes.ts";
import { TOKEN_GENERATION } from "../../functions/handlers/tokens-secret.ts";
import { OUTCOME_LOG_MESSAGES } from "../../functions/outbox/decide.ts";
import {
  DEFAULT_BACKOFF,
  OUTBOUND_MAX_RECEIVE_COUNT,
  retriesCovering,
} from "../../functions/shared/backoff.ts";
import {
  configSchemas,
  ENV,
  envNamesOf,
  type FunctionName,
  PLATFORM_ENV,
  readConfig,
} from "../../functions/wiring/env.ts";
import { actionBudgetMs, HOMESERVER_TIMEOUT_MS } from "../../functions/wiring/timeouts.ts";
import { applicationChoice, defaultApplicationChoice } from "../../infra/application.ts";
import { AppserviceFunction } from "../../infra/appservice-function.ts";
import { AppserviceStack } from "../../infra/appservice-stack.ts";
import type { MatrixAppserviceProps } from "../../infra/matrix-appservice.ts";
import {
  ALARM_CLEAR_PERIODS,
  APP_FUNCTION_MEMORY_MB,
  EVENTS_FUNCTION_TIMEOUT,
  FUNCTION_MEMORY_MB,
  OUTBOX_FUNCTION_TIMEOUT,
  OUTBOX_RETRIES_BEFORE_ALARM,
  QUEUE_AGE_ALARM,
} from "../../infra/matrix-appservice.ts";
import { unbundledApp } from "../support/cdk-app.ts";
import { synthesized } from "../support/cdk-synth.ts";
import { tempDir } from "../support/temp-dirs.ts";

type Resource = {
  Type: string;
  Properties: Record<string, unknown>;
  DeletionPolicy?: string;
  UpdateReplacePolicy?: string;
};
type Statement = { Action: string | string[]; Resource: unknown; Condition?: unknown };

const registration = {
  id: "test",
  sender_localpart: "bot",
  namespaces: {
    users: [{ regex: "@_t_.*:example\\.org", exclusive: true }],
    aliases: [],
    rooms: [],
  },
};

/** The default application (the webhooks), as `cdk synth` runs it given no `application`. */
const defaultChoice = await defaultApplicationChoice();

/** The stacks `synthesize` made with options, for cfn-lint (CDK's own validation is off in process). */
const synthesizedVariants: { id: string; json: string }[] = [];

/**
 * The stack with these options (the default application unless they say), cdk-nag's checks
 * applied. No bundling: the run's one `cdk synth` bundles each function
 * (test/support/cdk-synth.ts), and bundles.test.ts loads what it made.
 */
function synthesize(id: string, options: Partial<MatrixAppserviceProps> = {}) {
  const app = unbundledApp();
  const stack = new AppserviceStack(app, id, {
    appservice: {
      homeserverUrl: "https://matrix.example.org",
      serverName: "example.org",
      registration,
      application: defaultChoice,
      ...options,
    },
  });
  Aspects.of(app).add(new AwsSolutionsChecks());
  const template = Template.fromStack(stack);
  // Each other than the default stack (the CLI's `cdk synth` of cdk.json's is linted), once:
  // cfn-lint takes ~1 s of CPU a template.
  const json = JSON.stringify(template.toJSON());
  if (Object.keys(options).length > 0 && !synthesizedVariants.some((v) => v.json === json)) {
    synthesizedVariants.push({ id, json });
  }
  return { stack, template };
}

/** The functions of `stack` that get crypto-wasm's WebAssembly beside their bundle. */
const copyingCryptoWasm = (stack: Stack) =>
  stack.node
    .findAll()
    .filter((c): c is AppserviceFunction => c instanceof AppserviceFunction && c.cryptoWasm)
    .map((fn) => fn.node.id)
    .sort();

/** cdk-nag's errors and warnings: unsuppressed findings (a suppression carries its reason). */
const nagFindings = (stack: AppserviceStack) =>
  [
    ...Annotations.fromStack(stack).findError("*", Match.stringLikeRegexp("AwsSolutions-.*")),
    ...Annotations.fromStack(stack).findWarning("*", Match.stringLikeRegexp("AwsSolutions-.*")),
  ].map((f) => `${f.id}: ${String(f.entry.data).split("\n")[0]}`);

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
  /** The environment variables of the function whose entry is `name`. */
  const environmentOf = (name: string) =>
    (
      (template.findResources("AWS::Lambda::Function")[functionId(name)] as Resource).Properties
        .Environment as { Variables: Record<string, unknown> }
    ).Variables;
  const policyOf = (name: string) => {
    const roleId = functionId(name).replace(/Function.*$/, "Function");
    const policies = resources("AWS::IAM::Policy").filter(([id]) => id.startsWith(roleId));
    return policies.flatMap(
      ([, p]) => (p.Properties.PolicyDocument as { Statement: Statement[] }).Statement,
    );
  };

  beforeAll(() => {
    ({ stack, template } = synthesize("Test"));
  }, 120_000);

  it("keeps the logical ID deployed stacks know each retained resource by (the construct's parts make them in its own scope)", () => {
    const retained = Object.entries(template.toJSON().Resources as Record<string, Resource>)
      .filter(([, resource]) => resource.DeletionPolicy === "Retain")
      .map(([id, resource]) => [id, resource.Type]);
    expect(Object.fromEntries(retained)).toEqual({
      AppserviceTable90F7AAE2: "AWS::DynamoDB::Table",
      AppserviceInboundDeadLetterQueueC307453C: "AWS::SQS::Queue",
      AppserviceInboundQueue1AA35BAD: "AWS::SQS::Queue",
      AppserviceOutboundDeadLetterQueueD144A917: "AWS::SQS::Queue",
      AppserviceOutboundQueue791F0B98: "AWS::SQS::Queue",
      AppserviceAsToken579C4E86: "AWS::SecretsManager::Secret",
      AppserviceHsToken22B47E27: "AWS::SecretsManager::Secret",
      AppserviceAdminTokenCABAEF92: "AWS::SecretsManager::Secret",
    });
  });

  it("passes the cdk-nag AwsSolutions checks (every suppression carries a reason)", () => {
    expect(nagFindings(stack)).toEqual([]);
  });

  it("serves every route of the route table, and the rest through the $default fallback", () => {
    const routeKeys = resources("AWS::ApiGatewayV2::Route").map(([, r]) => r.Properties.RouteKey);
    for (const route of routeTable(application.routes ?? []))
      expect(routeKeys).toContain(`${route.method} ${route.path}`);
    expect(routeKeys).toContain("$default");
  });

  it("throttles each route on its own: the homeserver's apart from the application's public ones", () => {
    const table = routeTable(application.routes ?? []);
    template.hasResourceProperties("AWS::ApiGatewayV2::Stage", {
      StageName: "$default",
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 },
      RouteSettings: Object.fromEntries(
        table.map((route) => [
          `${route.method} ${route.path}`,
          route.handler === "app"
            ? { ThrottlingRateLimit: 20, ThrottlingBurstLimit: 40 }
            : route.handler === "admin"
              ? { ThrottlingRateLimit: 5, ThrottlingBurstLimit: 10 }
              : { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 },
        ]),
      ),
    });
    expect(table.filter((r) => r.handler !== "app").map((r) => r.path)).toEqual(
      expect.arrayContaining([
        "/_matrix/app/v1/transactions/{txnId}",
        "/_matrix/app/v1/users/{userId}",
        "/_matrix/app/v1/rooms/{roomAlias}",
        "/_matrix/app/v1/thirdparty/user",
        "/_matrix/app/v1/ping",
      ]),
    );
    // The route settings name the routes: the stage waits for every one of them.
    const stage = resources("AWS::ApiGatewayV2::Stage")[0]?.[1] as Resource & {
      DependsOn?: string[];
    };
    const routeIds = resources("AWS::ApiGatewayV2::Route")
      .filter(([, r]) => r.Properties.RouteKey !== "$default")
      .map(([id]) => id);
    expect(routeIds).toHaveLength(table.length);
    expect(stage.DependsOn).toEqual(expect.arrayContaining(routeIds));
  });

  it("writes a JSON access log line per request: route key, status (a number), latencies, integration error", () => {
    const stage = resources("AWS::ApiGatewayV2::Stage")[0]?.[1] as Resource;
    const { Format, DestinationArn } = stage.Properties.AccessLogSettings as {
      Format: string;
      DestinationArn: unknown;
    };
    expect(DestinationArn).toEqual({
      "Fn::GetAtt": [expect.stringMatching(/^AppserviceApiAccessLogs/), "Arn"],
    });
    // As API Gateway writes it: each variable replaced by its value.
    const line = JSON.parse(
      Format.replace("$context.status", "403").replace(/\$context\.[\w.]+/g, "value"),
    );
    expect(line).toMatchObject({
      requestId: "value",
      routeKey: "value",
      status: 403,
      latencyMs: "value",
      integrationLatencyMs: "value",
      integrationError: "value",
    });
  });

  it("copies crypto-wasm's WebAssembly beside no bundle: encrypted rooms are off", () => {
    expect(copyingCryptoWasm(stack)).toEqual([]);
  });

  it("sets for each function exactly the variables its configuration reads, and the platform's", () => {
    for (const name of Object.keys(configSchemas) as FunctionName[]) {
      const id = `${name[0]?.toUpperCase()}${name.slice(1)}`;
      const set = Object.keys(environmentOf(id)).sort();
      // BOT_AVATAR_URL, DELIVERY_ALLOWED_ADDRESSES, REMOTE_SECRET_ARN and REMOTE_SERVICE_URL
      // (an application's with a remote secret, as the relay) and CRYPTO_STORE_SECRET_ARN
      // (`encryptedRooms`) are optional, and this stack sets none of them.
      const optional: string[] = [
        ENV.botAvatarUrl,
        ENV.deliveryAllowedAddresses,
        ENV.remoteSecretArn,
        ENV.remoteServiceUrl,
        ENV.cryptoStoreSecretArn,
      ];
      const read = envNamesOf(name).filter((variable) => !optional.includes(variable));
      expect(set, name).toEqual([...read, ...PLATFORM_ENV].sort());
      // What the stack sets, the function accepts (a reference stands for its deployed value;
      // the log groups' names, references joined into JSON, for a JSON object).
      const values = Object.entries(environmentOf(id)).map(([key, value]) => [
        key,
        typeof value === "string" ? value : key === ENV.logGroups ? "{}" : "deployed",
      ]);
      expect(() => readConfig(name, Object.fromEntries(values))).not.toThrow();
    }
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

  it("runs each function on nodejs24.x, ARM64, ESM with source maps, its logs kept for a month", () => {
    const functions = resources("AWS::Lambda::Function");
    // The seven of the API and the queues (the operator console's among them), and the one that
    // completes the tokens secret.
    expect(functions).toHaveLength(8);
    const fns = template.findResources("AWS::Lambda::Function");
    expect((fns[functionId("Outbox")] as Resource).Properties.Timeout).toBe(
      OUTBOX_FUNCTION_TIMEOUT.toSeconds(),
    );
    // Two actions at their worst (every call waiting the homeserver's timeout) fit.
    expect(OUTBOX_FUNCTION_TIMEOUT.toMilliseconds()).toBeGreaterThanOrEqual(
      2 * actionBudgetMs(HOMESERVER_TIMEOUT_MS),
    );
    expect((fns[functionId("Events")] as Resource).Properties.TracingConfig).toBeUndefined();
    // The application function's memory from its measurement; no reserved concurrency unless asked.
    expect((fns[functionId("App")] as Resource).Properties.MemorySize).toBe(APP_FUNCTION_MEMORY_MB);
    expect(APP_FUNCTION_MEMORY_MB).toBe(512);
    for (const [id, fn] of functions) {
      expect(fn.Properties).toMatchObject({
        Runtime: "nodejs24.x",
        Architectures: ["arm64"],
        Handler: "index.handler",
      });
      if (id !== functionId("App")) expect(fn.Properties.MemorySize, id).toBe(FUNCTION_MEMORY_MB);
      expect(fn.Properties.ReservedConcurrentExecutions, id).toBeUndefined();
      expect(JSON.stringify(fn.Properties.Environment)).toContain("--enable-source-maps");
    }
    for (const [, group] of resources("AWS::Logs::LogGroup"))
      expect(group.Properties.RetentionInDays).toBe(30);
  });

  it("keeps each token in a secret of its own, generated whole by CloudFormation, never in environment variables or outputs", () => {
    template.resourceCountIs("AWS::SecretsManager::Secret", 3);
    const secretIds = Object.fromEntries(
      resources("AWS::SecretsManager::Secret").map(([id, secret]) => {
        // Replacing a secret would change a token the homeserver knows.
        expect([secret.DeletionPolicy, secret.UpdateReplacePolicy], id).toEqual([
          "Retain",
          "Retain",
        ]);
        // A whole token each: a change of these settings regenerates a whole token, and no
        // function ever finds one missing (the one-secret layout's custom resource did not run
        // again when they changed).
        expect(secret.Properties.GenerateSecretString, id).toEqual({
          PasswordLength: TOKEN_GENERATION.PasswordLength,
          ExcludePunctuation: TOKEN_GENERATION.ExcludePunctuation,
        });
        return [id.replace(/^Appservice|[0-9A-F]{8}$/g, ""), id];
      }),
    );
    expect(Object.keys(secretIds).sort()).toEqual(["AdminToken", "AsToken", "HsToken"]);
    // The two-secret layout's as_token and hs_token: same logical IDs, same properties, so such
    // a stack keeps them, values and all.
    for (const [name, description] of [
      ["AsToken", "The appservice's as_token (registration file)"],
      ["HsToken", "The appservice's hs_token (registration file)"],
    ] as const) {
      expect(secretIds[name]).toBe(`Appservice${name}${secretIds[name]?.slice(-8)}`);
      expect(
        (template.toJSON().Resources[secretIds[name] as string] as Resource).Properties.Description,
      ).toBe(description);
    }
    // The one-secret layout's tokens carried over at deploy time, from the secret it had.
    const legacy = new Secret(new Construct(new Stack(new App(), "Old"), "Appservice"), "Tokens");
    const legacyId = Stack.of(legacy).getLogicalId(legacy.node.defaultChild as CfnElement);
    const [[carriedId, carried]] = resources("Custom::AppserviceTokensCarried") as [
      [string, Resource],
    ];
    expect(carried.Properties).toEqual({
      ServiceToken: { "Fn::GetAtt": [functionId("Tokens"), "Arn"] },
      LegacyLogicalId: legacyId,
      AsTokenSecretId: { Ref: secretIds.AsToken },
      HsTokenSecretId: { Ref: secretIds.HsToken },
      AdminTokenSecretId: { Ref: secretIds.AdminToken },
    });
    // No function of the API or the queues runs before the tokens are carried over.
    for (const name of [
      "Transactions",
      "Events",
      "Outbox",
      "Queries",
      "App",
      "Fallback",
      "Admin",
    ]) {
      const fn = template.toJSON().Resources[functionId(name)] as { DependsOn?: string[] };
      expect(fn.DependsOn, name).toContain(carriedId);
    }
    // It reads its own stack's record, the old secret alone, and writes the three.
    expect(
      policyOf("Tokens").map((statement) => [[statement.Action].flat().sort(), statement.Resource]),
    ).toEqual([
      [
        ["cloudformation:DescribeStackResource"],
        {
          "Fn::Join": ["", expect.arrayContaining([":cloudformation:", ":stack/Test/*"])],
        },
      ],
      [
        ["secretsmanager:GetSecretValue"],
        { "Fn::Join": ["", expect.arrayContaining([`:secret:${legacyId}-*`])] },
      ],
      [
        ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
        [{ Ref: secretIds.AsToken }, { Ref: secretIds.HsToken }, { Ref: secretIds.AdminToken }],
      ],
    ]);
    // Each function is given, and may read, only the tokens it uses.
    const variableOf = {
      AsToken: ENV.asTokenSecretArn,
      HsToken: ENV.hsTokenSecretArn,
      AdminToken: ENV.adminTokenSecretArn,
    };
    const uses: Record<string, (keyof typeof variableOf)[]> = {
      Transactions: ["HsToken"],
      Events: ["AsToken"],
      Outbox: ["AsToken"],
      Queries: ["AsToken", "HsToken"],
      App: ["AsToken"],
      Admin: ["AdminToken", "AsToken"],
      Fallback: [],
    };
    for (const [name, tokens] of Object.entries(uses)) {
      const env = environmentOf(name);
      const given = Object.entries(variableOf)
        .filter(([, variable]) => variable in env)
        .map(([token]) => token);
      expect(given.sort(), name).toEqual(tokens);
      for (const token of tokens) {
        expect(env[variableOf[token]], name).toEqual({ Ref: secretIds[token] });
      }
      const readable = policyOf(name)
        .filter((statement) => [statement.Action].flat().includes("secretsmanager:GetSecretValue"))
        .map((statement) => JSON.stringify(statement.Resource));
      expect(readable.sort(), name).toEqual(
        tokens
          // A generated secret's reference is its complete ARN.
          .map((token) => JSON.stringify({ Ref: secretIds[token] }))
          .sort(),
      );
      expect(JSON.stringify(env), name).not.toMatch(/_TOKEN"|resolve:secretsmanager/);
    }
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    for (const [output, token] of [
      ["AsTokenSecretArn", "AsToken"],
      ["HsTokenSecretArn", "HsToken"],
      ["AdminTokenSecretArn", "AdminToken"],
    ] as const) {
      expect(outputs[output]?.Value).toEqual({ Ref: secretIds[token] });
    }
    expect(outputs).not.toHaveProperty("TokensSecretArn");
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

  it("has encrypted, SSL-only, high-throughput FIFO queues, kept 14 days and retained, each redriving to a FIFO dead-letter queue as a last resort", () => {
    template.resourceCountIs("AWS::SQS::Queue", 4);
    template.allResourcesProperties("AWS::SQS::Queue", {
      FifoQueue: true,
      SqsManagedSseEnabled: true,
      MessageRetentionPeriod: 14 * 24 * 3600,
      DeduplicationScope: "messageGroup",
      FifoThroughputLimit: "perMessageGroupId",
      MaximumMessageSize: 1_048_576,
    });
    for (const [, queue] of resources("AWS::SQS::Queue")) {
      expect([queue.DeletionPolicy, queue.UpdateReplacePolicy]).toEqual(["Retain", "Retain"]);
    }
    template.hasResourceProperties("AWS::SQS::Queue", {
      VisibilityTimeout: EVENTS_FUNCTION_TIMEOUT.toSeconds() * 6,
      RedrivePolicy: {
        maxReceiveCount: INBOUND_MAX_RECEIVE_COUNT,
        deadLetterTargetArn: Match.anyValue(),
      },
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
  });

  it("bounds each queue's consumers: partial batch responses, at most 10 functions at once by default", () => {
    template.resourceCountIs("AWS::Lambda::EventSourceMapping", 2);
    template.allResourcesProperties("AWS::Lambda::EventSourceMapping", {
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      BatchSize: 10,
      ScalingConfig: { MaximumConcurrency: 10 },
    });
  });

  it("grants each function only what its adapters call", () => {
    const actions = (name: string) =>
      policyOf(name)
        .flatMap((s) => [s.Action].flat())
        .sort();
    expect(actions("Transactions")).toEqual(
      ["dynamodb:PutItem", "secretsmanager:GetSecretValue", "sqs:SendMessage"].sort(),
    );
    // The application's data, the tokens, the outbound queue.
    const applicationGrants = [
      "dynamodb:DeleteItem",
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:Query",
      "secretsmanager:GetSecretValue",
      "sqs:SendMessage",
    ];
    // What the event source mapping needs of its queue.
    const consumer = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
      "sqs:ReceiveMessage",
    ];
    expect(actions("Events")).toEqual(
      [
        ...applicationGrants,
        ...consumer,
        "dynamodb:UpdateItem",
        // The inbound items set aside (`INBOUND#`).
        "dynamodb:Query",
        // The encrypted events delivered without their room key (`UNDECRYPTABLE#`).
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "sqs:SendMessage",
      ].sort(),
    );
    expect(actions("Outbox")).toEqual(
      [
        ...consumer,
        "dynamodb:GetItem",
        // A user's items of the Intent's memory, in one request.
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "secretsmanager:GetSecretValue",
        "sqs:SendMessage",
      ].sort(),
    );
    // The as_token's secret and the hs_token's.
    expect(actions("Queries")).toEqual(
      [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "secretsmanager:GetSecretValue",
        "secretsmanager:GetSecretValue",
      ].sort(),
    );
    // And the event IDs the outbox recorded, read by a webhook request that waits for them.
    expect(actions("App")).toEqual([...applicationGrants, "dynamodb:GetItem"].sort());
    expect(actions("Fallback")).toEqual([]);
    for (const statement of ["Transactions", "Events", "Outbox", "Queries", "App"].flatMap(
      policyOf,
    )) {
      expect(JSON.stringify(statement.Resource)).not.toBe('"*"');
    }
  });

  it("serves the operator console (/admin and its API) by its own function, with only what it reads and replays", () => {
    // Every /admin route goes to the admin function.
    const integrationOf = (routeKey: string) => {
      const route = resources("AWS::ApiGatewayV2::Route").find(
        ([, r]) => r.Properties.RouteKey === routeKey,
      )?.[1] as Resource;
      const target = JSON.stringify(route.Properties.Target);
      const integration = resources("AWS::ApiGatewayV2::Integration").find(([id]) =>
        target.includes(id),
      )?.[1] as Resource;
      return JSON.stringify(integration.Properties.IntegrationUri);
    };
    const admin = routeTable([]).filter((route) => route.handler === "admin");
    expect(admin.map((route) => `${route.method} ${route.path}`)).toEqual([
      "GET /admin",
      "GET /admin/api/status",
      "GET /admin/api/traffic",
      "GET /admin/api/dead-letters",
      "GET /admin/api/sections",
      "GET /admin/api/sections/{id}",
      "POST /admin/api/dead-letters/replay",
      "POST /admin/api/dead-letters/discard",
    ]);
    for (const route of admin) {
      expect(integrationOf(`${route.method} ${route.path}`)).toContain(functionId("Admin"));
    }
    const statements = policyOf("Admin");
    const byAction = (action: string) =>
      statements.filter((s) => [s.Action].flat().includes(action));
    const leadingKeys = (statement: Statement) =>
      (
        statement.Condition as
          | { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": string[] } }
          | undefined
      )?.["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
    // The table: dead letters kept, claims reopened, server error counts forgotten, app data and
    // the outbox's delivery outcomes read.
    expect(
      statements
        .filter((s) => [s.Action].flat().some((a) => a.startsWith("dynamodb:")))
        .map((s) => [[s.Action].flat().join(","), leadingKeys(s)]),
    ).toEqual([
      ["dynamodb:Query,dynamodb:PutItem,dynamodb:DeleteItem,dynamodb:UpdateItem", ["DEADLETTER#*"]],
      ["dynamodb:UpdateItem", ["EVENT#*", "ITEM#*", "sha256:*"]],
      ["dynamodb:DeleteItem", ["OUTBOX#*"]],
      ["dynamodb:GetItem,dynamodb:Query", ["APP#*"]],
      ["dynamodb:GetItem", ["CALLS#delivery-outcomes*"]],
    ]);
    const queueArn = (id: string) => ({
      "Fn::GetAtt": [expect.stringMatching(new RegExp(`^${id}`)), "Arn"],
    });
    // Dead letters are taken off their queues; replays go to the queues.
    for (const id of ["AppserviceInboundDeadLetterQueue", "AppserviceOutboundDeadLetterQueue"]) {
      expect(byAction("sqs:ReceiveMessage")).toContainEqual(
        expect.objectContaining({
          Action: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
          Resource: queueArn(id),
        }),
      );
    }
    expect(byAction("sqs:SendMessage").map((s) => s.Resource)).toEqual([
      queueArn("AppserviceInboundQueue"),
      queueArn("AppserviceOutboundQueue"),
    ]);
    expect(byAction("sqs:ChangeMessageVisibility")).toEqual([]);
    // The other functions' log groups, not its own or any other; the queues' age metric.
    const logGroups = byAction("logs:FilterLogEvents").flatMap((s) => [s.Resource].flat());
    expect(logGroups).toHaveLength(6);
    expect(JSON.stringify(logGroups)).not.toContain("adminLogs");
    expect(byAction("cloudwatch:GetMetricData")).toEqual([
      expect.objectContaining({ Resource: "*" }),
    ]);
    const wildcards = statements.filter((s) => JSON.stringify(s.Resource) === '"*"');
    expect(wildcards.map((s) => s.Action)).toEqual(["cloudwatch:GetMetricData"]);
    // Its token (and the as_token, for the homeserver's ping), each from its secret.
    expect(byAction("secretsmanager:GetSecretValue")).toHaveLength(2);
    expect(environmentOf("Admin")).not.toHaveProperty("ADMIN_TOKEN");
    expect(environmentOf("Admin")[ENV.adminTokenSecretArn]).toEqual({
      Ref: expect.stringMatching(/^AppserviceAdminToken/),
    });
  });

  it("sweeps the dead letters every 5 minutes with the admin function: a schedule only it is the target of, no permission more", () => {
    const rules = resources("AWS::Events::Rule");
    expect(rules).toHaveLength(1);
    const [[, rule]] = rules as [[string, Resource]];
    expect(rule.Properties).toMatchObject({
      ScheduleExpression: "rate(5 minutes)",
      State: "ENABLED",
      Targets: [
        {
          Arn: { "Fn::GetAtt": [functionId("Admin"), "Arn"] },
          RetryPolicy: { MaximumRetryAttempts: 0 },
        },
      ],
    });
    // EventBridge may invoke the admin function, from that rule alone; no other function.
    const invokers = resources("AWS::Lambda::Permission")
      .map(([, p]) => p.Properties)
      .filter((p) => p.Principal === "events.amazonaws.com");
    expect(invokers).toEqual([
      expect.objectContaining({
        Action: "lambda:InvokeFunction",
        FunctionName: { "Fn::GetAtt": [functionId("Admin"), "Arn"] },
        SourceArn: { "Fn::GetAtt": [rules[0]?.[0], "Arn"] },
      }),
    ]);
    // The dead letters' items, kept (no expiry), counted, and an older expiry removed: on their
    // own partition only. The sweep's ERROR line ("dead letters waiting") is counted as any of
    // the admin function's ERROR lines (below), so the alarm fires while they wait.
    const updates = policyOf("Admin").filter((s) =>
      [s.Action].flat().includes("dynamodb:UpdateItem"),
    );
    expect(updates.map((s) => s.Condition)).toEqual([
      { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["DEADLETTER#*"] } },
      { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": ["EVENT#*", "ITEM#*", "sha256:*"] } },
    ]);
    expect(
      resources("AWS::Logs::MetricFilter").some(
        ([, f]) =>
          /^AppserviceadminLogs/.test((f.Properties.LogGroupName as { Ref: string }).Ref) &&
          f.Properties.FilterPattern === '{ $.level = "ERROR" }',
      ),
    ).toBe(true);
  });

  it("keeps the functions that run the application's code to their own items of the table", () => {
    const tableStatements = (name: string) =>
      policyOf(name).filter((s) => [s.Action].flat().some((a) => a.startsWith("dynamodb:")));
    const leadingKeys = (statement: Statement) =>
      (statement.Condition as { "ForAllValues:StringLike": { "dynamodb:LeadingKeys": string[] } })[
        "ForAllValues:StringLike"
      ]["dynamodb:LeadingKeys"];
    // The internet-facing application function: the application's data, what its immediate
    // calls remember (rooms by key, media by hash) and the Intent's memory they share with the
    // outbox (users registered, rooms joined); the outbox's records of actions, read only (the
    // event IDs of sends).
    expect(
      Object.fromEntries(
        tableStatements("App").map((s) => [[s.Action].flat().join(","), leadingKeys(s)]),
      ),
    ).toEqual({
      "dynamodb:GetItem,dynamodb:Query,dynamodb:PutItem,dynamodb:DeleteItem": [
        "APP#*",
        "CALLS#*",
        "USER#*",
        "ROOM#*",
      ],
      "dynamodb:GetItem": ["OUTBOX#*"],
    });
    // The events function: the same, the claim records of items, and the encrypted events
    // delivered without their room key.
    expect(
      Object.fromEntries(
        tableStatements("Events").map((s) => [[s.Action].flat().join(","), leadingKeys(s)]),
      ),
    ).toEqual({
      "dynamodb:GetItem,dynamodb:Query,dynamodb:PutItem,dynamodb:DeleteItem": [
        "APP#*",
        "CALLS#*",
        "USER#*",
        "ROOM#*",
      ],
      "dynamodb:UpdateItem": ["EVENT#*", "ITEM#*", "sha256:*"],
      "dynamodb:Query,dynamodb:PutItem,dynamodb:DeleteItem": ["UNDECRYPTABLE#*"],
      "dynamodb:Query": ["INBOUND#*"],
    });
  });

  it("alarms once, over problems and each queue's age: three alarm metrics", () => {
    const alarms = resources("AWS::CloudWatch::Alarm");
    expect(alarms.map(([id]) => id.replace(/[0-9A-F]{8}$/, ""))).toEqual(["AppserviceAlarm"]);
    const [[, alarm]] = alarms as [[string, Resource]];
    // Fires at one breaching period, clears after three clear ones (15 minutes: longer than the
    // outbox's longest wait between retries), so a call retried for a day keeps it firing.
    expect(alarm.Properties).toMatchObject({
      Threshold: 1,
      ComparisonOperator: "GreaterThanOrEqualToThreshold",
      EvaluationPeriods: ALARM_CLEAR_PERIODS,
      DatapointsToAlarm: 1,
      TreatMissingData: "notBreaching",
    });
    expect(ALARM_CLEAR_PERIODS * 300).toBeGreaterThan(DEFAULT_BACKOFF.capSeconds);
    // No action unless asked (alarmAction).
    expect(alarm.Properties.AlarmActions).toBeUndefined();
    template.resourceCountIs("AWS::SNS::Topic", 0);
    const metrics = alarm.Properties.Metrics as {
      Id: string;
      Expression?: string;
      MetricStat?: { Metric: Record<string, unknown>; Stat: string };
    }[];
    const age = QUEUE_AGE_ALARM.toSeconds();
    const expressions = Object.fromEntries(
      metrics.filter((m) => m.Expression).map((m) => [m.Id, m.Expression]),
    );
    expect(expressions).toEqual({
      expr_1: "MAX([problemsCount, inboundAgeShare, outboundAgeShare])",
      problemsCount: "FILL(problems, 0)",
      inboundAgeShare: `FILL(inboundAge, 0) / ${age}`,
      outboundAgeShare: `FILL(outboundAge, 0) / ${age}`,
    });
    // CloudWatch bills each metric an alarm reads ($0.10 a month): 3 in all.
    const read = Object.fromEntries(
      metrics.filter((m) => m.MetricStat).map((m) => [m.Id, m.MetricStat]),
    );
    expect(Object.keys(read).sort()).toEqual(["inboundAge", "outboundAge", "problems"]);
    expect(read.problems).toMatchObject({
      Metric: { Namespace: "MatrixAppservice/Test/Appservice", MetricName: "Problems" },
      Stat: "Sum",
    });
    for (const [id, queue] of [
      ["inboundAge", /^AppserviceInboundQueue/],
      ["outboundAge", /^AppserviceOutboundQueue/],
    ] as const) {
      expect(read[id]).toMatchObject({
        Metric: {
          MetricName: "ApproximateAgeOfOldestMessage",
          Dimensions: [
            {
              Name: "QueueName",
              Value: { "Fn::GetAtt": [expect.stringMatching(queue), "QueueName"] },
            },
          ],
        },
        Stat: "Maximum",
      });
    }
  });

  it("feeds the problems metric from free log filters: every function's errors and runtime failures (both timeout forms), late outbox retries, API 5xx, any answer but 200 on every transactions route", () => {
    const filters = resources("AWS::Logs::MetricFilter").map(([, f]) => f.Properties);
    for (const filter of filters) {
      expect(filter.MetricTransformations).toEqual([
        {
          MetricNamespace: "MatrixAppservice/Test/Appservice",
          MetricName: "Problems",
          MetricValue: "1",
        },
      ]);
    }
    const patternsOf = (logGroupId: RegExp) =>
      filters
        .filter((f) => logGroupId.test((f.LogGroupName as { Ref: string }).Ref))
        .map((f) => f.FilterPattern)
        .sort();
    for (const name of [
      "transactions",
      "events",
      "outbox",
      "queries",
      "fallback",
      "app",
      "admin",
    ]) {
      expect(patternsOf(new RegExp(`^Appservice${name}Logs`))).toEqual(
        [
          // Lambda's timeout as the runtime writes it, and as the REPORT line says it now.
          '?"Task timed out" ?"Status: timeout" ?"Invoke Error" ?"Uncaught Exception" ?"Runtime.ExitError"',
          '{ $.level = "ERROR" }',
          // An outbound call retried past the attempts that fill the queue age threshold.
          ...(name === "outbox"
            ? [
                `{ $.level = "WARN" && $.message = "${OUTCOME_LOG_MESSAGES.retry}" && $.attempt >= ${OUTBOX_RETRIES_BEFORE_ALARM} }`,
              ]
            : []),
        ].sort(),
      );
    }
    // The retries expected to fill the 15 minutes after which a queue's oldest message alarms.
    expect(OUTBOX_RETRIES_BEFORE_ALARM).toBe(
      retriesCovering(QUEUE_AGE_ALARM.toSeconds(), DEFAULT_BACKOFF),
    );
    expect(OUTBOX_RETRIES_BEFORE_ALARM).toBeGreaterThan(3);
    // Every transactions route, the legacy path's too, whatever the status but 200.
    const transactionRoutes = routeTable([])
      .filter((route) => route.handler === "transactions")
      .map((route) => `$.routeKey = "${route.method} ${route.path}"`);
    expect(transactionRoutes).toEqual([
      '$.routeKey = "PUT /_matrix/app/v1/transactions/{txnId}"',
      '$.routeKey = "PUT /transactions/{txnId}"',
    ]);
    expect(patternsOf(/^AppserviceApiAccessLogs/)).toEqual([
      '{ $.status != 200 && ($.routeKey = "PUT /_matrix/app/v1/transactions/{txnId}" || $.routeKey = "PUT /transactions/{txnId}") }',
      '{ $.status >= 500 || $.integrationError != "-" }',
    ]);
    expect(filters).toHaveLength(17);
  });

  it("gives the events function its queue and dead-letter queue, to set each retry's wait and set failing items aside", () => {
    expect(environmentOf("Events")).toMatchObject({
      INBOUND_QUEUE_URL: { Ref: expect.stringMatching(/^AppserviceInboundQueue/) },
      INBOUND_DEAD_LETTER_QUEUE_URL: { Ref: expect.stringMatching(/^AppserviceInboundDeadLetter/) },
    });
  });

  it("gives the outbox the homeserver, the bot and the namespaces, and the token only by its secret", () => {
    const env = environmentOf("Outbox");
    expect(env).toMatchObject({
      HOMESERVER_URL: "https://matrix.example.org",
      BOT_USER_ID: "@bot:example.org",
      AS_TOKEN_SECRET_ARN: { Ref: expect.stringMatching(/^AppserviceAsToken/) },
      // The bot's display name: the registration's id unless configured.
      BOT_DISPLAY_NAME: "test",
    });
    // Whom the outbox may act as.
    expect(JSON.parse(env.REGISTRATION_JSON as string).namespaces.users).toEqual([
      { regex: "@_t_.*:example\\.org", exclusive: true },
    ]);
    expect(env.BOT_AVATAR_URL).toBeUndefined();
  });

  it("gives the outbox the bot's configured profile, and refuses an avatar that is not mxc://", () => {
    // No bundling: only the environment is looked at.
    const synth = (botProfile: { displayName?: string; avatarUrl?: string }) => {
      const app = unbundledApp();
      const profiled = new AppserviceStack(app, "Profiled", {
        appservice: {
          homeserverUrl: "https://matrix.example.org",
          serverName: "example.org",
          registration: { id: "test", sender_localpart: "bot", namespaces: {} },
          application: defaultChoice,
          botProfile,
        },
      });
      const fns = Template.fromStack(profiled).findResources("AWS::Lambda::Function");
      const [, outbox] = Object.entries(fns).find(([id]) => id.includes("OutboxFunction")) ?? [];
      return (outbox as Resource).Properties.Environment as { Variables: Record<string, unknown> };
    };
    expect(
      synth({ displayName: "Webhooks", avatarUrl: "mxc://example.org/bot" }).Variables,
    ).toMatchObject({
      BOT_DISPLAY_NAME: "Webhooks",
      BOT_AVATAR_URL: "mxc://example.org/bot",
    });
    expect(() => synth({ avatarUrl: "https://example.org/bot.png" })).toThrow(
      "The bot's avatar must be an mxc:// URI",
    );
  });
});

describe("AppserviceStack with its options", () => {
  let stack: AppserviceStack;
  let template: Template;

  beforeAll(() => {
    ({ stack, template } = synthesize("Options", {
      eventsMaxConcurrency: 3,
      outboxMaxConcurrency: 4,
      homeserverRateLimit: 7,
      tracing: true,
      deliveryAllowedAddresses: ["10.0.0.0/8", "fd00::/8"],
      alarmAction: { email: "ops@example.org" },
      transactionsReservedConcurrency: 20,
      appReservedConcurrency: 5,
      encryptedRooms: true,
    }));
  }, 120_000);

  it("reads and writes encrypted rooms as asked: a crypto store secret of its own (retained), named to the events function and the outbox alone, which alone may read it", () => {
    const secrets = Object.entries(template.findResources("AWS::SecretsManager::Secret")).filter(
      ([id]) => id.includes("CryptoStoreSecret"),
    );
    expect(secrets).toHaveLength(1);
    const [secretId, secret] = secrets[0] as [string, Resource];
    expect(secret.DeletionPolicy).toBe("Retain");
    expect(secret.Properties.GenerateSecretString).toEqual({
      PasswordLength: 64,
      ExcludePunctuation: true,
    });
    const named = Object.entries(template.findResources("AWS::Lambda::Function")).filter(([, fn]) =>
      JSON.stringify(fn.Properties.Environment ?? {}).includes(ENV.cryptoStoreSecretArn),
    );
    expect(named.map(([id]) => id.replace(/Function.*$/, "")).sort()).toEqual([
      expect.stringMatching(/Events$/),
      expect.stringMatching(/Outbox$/),
    ]);
    expect(policiesMentioning(template, secretId).roles).toEqual([
      expect.stringMatching(/Events$/),
      expect.stringMatching(/Outbox$/),
    ]);
    // Their bundles alone get crypto-wasm's WebAssembly (bundles.test.ts: the copy itself).
    expect(copyingCryptoWasm(stack)).toEqual(["EventsFunction", "OutboxFunction"]);
    // And they alone may read and write the devices' state (`CRYPTO#` items).
    const cryptoState = policiesMentioning(template, '"CRYPTO#*"');
    expect(cryptoState.roles).toEqual([
      expect.stringMatching(/Events$/),
      expect.stringMatching(/Outbox$/),
    ]);
    const cryptoStatements = cryptoState.statements.filter((statement) =>
      JSON.stringify(statement.Condition ?? {}).includes("CRYPTO#"),
    );
    expect(cryptoStatements.map((statement) => [statement.Action].flat().sort())).toEqual(
      Array(2).fill(
        ["BatchWriteItem", "GetItem", "PutItem", "Query", "UpdateItem"].map((a) => `dynamodb:${a}`),
      ),
    );
  });

  it("sends the alarm, firing and clearing, to an SNS topic with the email subscribed; or to a given topic", () => {
    const topics = Object.keys(template.findResources("AWS::SNS::Topic"));
    expect(topics).toHaveLength(1);
    template.hasResourceProperties("AWS::SNS::Subscription", {
      Protocol: "email",
      Endpoint: "ops@example.org",
      TopicArn: { Ref: topics[0] },
    });
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      AlarmActions: [{ Ref: topics[0] }],
      OKActions: [{ Ref: topics[0] }],
    });
    const arn = "arn:aws:sns:us-east-1:123456789012:ops";
    const given = synthesize("GivenTopic", { alarmAction: { topicArn: arn } }).template;
    given.resourceCountIs("AWS::SNS::Topic", 0);
    given.resourceCountIs("AWS::SNS::Subscription", 0);
    given.hasResourceProperties("AWS::CloudWatch::Alarm", {
      AlarmActions: [arn],
      OKActions: [arn],
    });
  });

  it("reserves concurrency for the transactions function and caps the application function, as asked", () => {
    const fns = Object.entries(template.findResources("AWS::Lambda::Function"));
    const reserved = Object.fromEntries(
      fns
        .filter(([, fn]) => fn.Properties.ReservedConcurrentExecutions !== undefined)
        .map(([id, fn]) => [
          id.replace(/Function.*$/, ""),
          fn.Properties.ReservedConcurrentExecutions,
        ]),
    );
    expect(reserved).toEqual({ AppserviceTransactions: 20, AppserviceApp: 5 });
  });

  it("gives the outbox the ranges deliveries may reach, which it reads back; a bad range fails the synth", () => {
    const fns = template.findResources("AWS::Lambda::Function");
    const [, outbox] = Object.entries(fns).find(([id]) => id.includes("OutboxFunction")) ?? [];
    const { Variables } = (outbox as Resource).Properties.Environment as {
      Variables: Record<string, string>;
    };
    expect(Variables[ENV.deliveryAllowedAddresses]).toBe("10.0.0.0/8,fd00::/8");
    const read = readConfig("outbox", {
      ...Object.fromEntries(Object.entries(Variables).map(([k, v]) => [k, String(v)])),
    });
    expect(read.deliveryAllowedAddresses).toEqual(["10.0.0.0/8", "fd00::/8"]);
    expect(() => synthesize("BadRanges", { deliveryAllowedAddresses: ["10.0.0.0/40"] })).toThrow(
      '"10.0.0.0/40" is not an IP address or a CIDR range',
    );
  });

  it("bounds each event source as asked, throttles the homeserver's routes as asked, traces with X-Ray, and stays cdk-nag clean", () => {
    const mappings = Object.values(template.findResources("AWS::Lambda::EventSourceMapping"));
    expect(
      mappings
        .map(
          (m) => (m.Properties.ScalingConfig as { MaximumConcurrency: number }).MaximumConcurrency,
        )
        .sort(),
    ).toEqual([3, 4]);
    const stage = Object.values(template.findResources("AWS::ApiGatewayV2::Stage"))[0];
    const settings = stage?.Properties.RouteSettings as Record<
      string,
      { ThrottlingRateLimit: number }
    >;
    expect(settings["PUT /_matrix/app/v1/transactions/{txnId}"]?.ThrottlingRateLimit).toBe(7);
    expect(settings["POST /webhook/{id}"]?.ThrottlingRateLimit).toBe(20);
    template.allResourcesProperties("AWS::Lambda::Function", {
      TracingConfig: { Mode: "Active" },
    });
    expect(nagFindings(stack)).toEqual([]);
  });
});

/**
 * The functions whose role has a policy that mentions `text` (a resource's ID, a key prefix),
 * by their name's end (`…Events`), and those policies' statements.
 */
const policiesMentioning = (template: Template, text: string) => {
  const policies = Object.values(template.findResources("AWS::IAM::Policy")).filter((policy) =>
    JSON.stringify(policy.Properties.PolicyDocument).includes(text),
  );
  return {
    roles: policies
      .flatMap((policy) => (policy.Properties.Roles as { Ref: string }[]).map((r) => r.Ref))
      .map((role) => role.replace(/FunctionServiceRole.*$/, ""))
      .sort(),
    statements: policies.flatMap(
      (policy) => (policy.Properties.PolicyDocument as { Statement: Statement[] }).Statement,
    ),
  };
};

// The relay, as `-c application=relay -c relayUrl=…` chooses it.
const relayContext = (key: string) => ({ relayUrl: "https://chat.example.org" })[key];
const choice = await applicationChoice("relay", relayContext);

describe("AppserviceStack running the relay (cdk.json: application=relay, relayUrl)", () => {
  it("takes the application and its remote service from the context values, and refuses what it cannot run", async () => {
    expect(choice).toMatchObject({
      name: "relay",
      config: { RELAY_URL: "https://chat.example.org" },
    });
    expect(await applicationChoice(undefined, () => undefined)).toMatchObject({
      name: "webhooks",
      config: {},
    });
    await expect(applicationChoice("bridge", () => undefined)).rejects.toThrow(
      "The context value application=bridge is none of echo-bot, relay, webhooks",
    );
    await expect(applicationChoice("relay", () => undefined)).rejects.toThrow(
      "application=relay needs relayUrl",
    );
    await expect(
      applicationChoice("relay", (key) => ({ relayUrl: "ftp://chat.example.org" })[key]),
    ).rejects.toThrow("application=relay needs relayUrl");
  });

  it("gives the events and outbox functions RELAY_URL, which they read back, and no other function; serves the relay's route, not the webhooks'", () => {
    const { stack, template } = synthesize("Relay", { application: choice });
    const fns = Object.entries(template.findResources("AWS::Lambda::Function"));
    const variablesOf = (name: string) =>
      (
        (fns.find(([id]) => id.includes(`${name}Function`)) as [string, Resource])[1].Properties
          .Environment as { Variables: Record<string, unknown> }
      ).Variables;
    const withRelayUrl = fns.filter(([, fn]) =>
      JSON.stringify(fn.Properties.Environment ?? {}).includes('"RELAY_URL"'),
    );
    expect(withRelayUrl.map(([id]) => id)).toEqual([expect.stringContaining("EventsFunction")]);
    const variables = (name: string) =>
      Object.fromEntries(
        Object.entries(variablesOf(name)).map(([key, value]) => [
          key,
          typeof value === "string" ? value : "deployed",
        ]),
      );
    expect(
      applicationConfig(choice.module.manifest, variables("Events"), { fn: "events" }).RELAY_URL,
    ).toBe("https://chat.example.org");
    // The one origin the outbox signs deliveries to.
    expect(readConfig("outbox", variables("Outbox")).remoteServiceUrl).toBe(
      "https://chat.example.org",
    );
    const relayRoutes = [
      { method: "POST", path: "/relay/{channel}/messages" },
      { method: "PUT", path: "/relay/{channel}/messages/{id}" },
      { method: "DELETE", path: "/relay/{channel}/messages/{id}" },
      { method: "POST", path: "/relay/{channel}/reactions" },
      { method: "DELETE", path: "/relay/{channel}/reactions/{id}" },
      { method: "POST", path: "/relay/{channel}/typing" },
    ];
    expect(JSON.parse(variablesOf("Fallback")[ENV.appRoutes] as string)).toEqual(relayRoutes);
    const stage = Object.values(template.findResources("AWS::ApiGatewayV2::Stage"))[0];
    const routes = Object.keys(stage?.Properties.RouteSettings as Record<string, unknown>);
    for (const { method, path } of relayRoutes) expect(routes).toContain(`${method} ${path}`);
    expect(routes).not.toContain("POST /webhook/{id}");
    expect(nagFindings(stack)).toEqual([]);
  });

  it("makes the relay's secret at deploy, a secret of its own (retained), named to the app function and the outbox alone, which alone may read it", () => {
    const { template } = synthesize("RelaySecret", { application: choice });
    const secrets = Object.entries(template.findResources("AWS::SecretsManager::Secret"));
    const relay = secrets.find(([id]) => id.includes("RelaySecret"));
    // The three tokens' secrets, and the relay's own.
    expect(secrets).toHaveLength(4);
    expect(secrets.filter(([id]) => id.includes("RelaySecret"))).toHaveLength(1);
    const [relayId, relaySecret] = relay as [string, Resource];
    // Its construct id is the application's name (`RelaySecret`), as first deployed: a new logical
    // ID would replace the secret the remote service holds.
    expect(relayId).toMatch(/^\w*RelaySecret[0-9A-F]{8}$/);
    expect(relaySecret.Properties.GenerateSecretString).toEqual({
      PasswordLength: 64,
      ExcludePunctuation: true,
    });
    expect(relaySecret.DeletionPolicy).toBe("Retain");
    // Generic: any application's secret is described so, the relay's included.
    expect(relaySecret.Properties.Description).toBe(
      "The relay application's secret shared with its remote service: requests signed with it, both ways",
    );
    const fns = Object.entries(template.findResources("AWS::Lambda::Function"));
    const named = fns.filter(([, fn]) =>
      JSON.stringify(fn.Properties.Environment ?? {}).includes(ENV.remoteSecretArn),
    );
    expect(named.map(([id]) => id.replace(/Function.*$/, "")).sort()).toEqual([
      expect.stringMatching(/App$/),
      expect.stringMatching(/Outbox$/),
    ]);
    for (const [, fn] of named) {
      const variables = (fn.Properties.Environment as { Variables: Record<string, unknown> })
        .Variables;
      expect(variables[ENV.remoteSecretArn]).toEqual({ Ref: relayId });
    }
    // Read by those two functions' roles alone, and by nothing else of the stack.
    expect(policiesMentioning(template, relayId).roles).toEqual([
      expect.stringMatching(/App$/),
      expect.stringMatching(/Outbox$/),
    ]);
    const outputs = template.findOutputs("*");
    expect(outputs.RelaySecretArn?.Value).toEqual({ Ref: relayId });
    expect(JSON.stringify(outputs)).not.toMatch(/SecretString|resolve:secretsmanager/);
  });
});

/** Whether cfn-lint is on the PATH (it comes with Python's packages), found without starting it. */
const cfnLintInstalled = (process.env.PATH ?? "").split(delimiter).some((dir) => {
  try {
    accessSync(join(dir, "cfn-lint"), constants.X_OK);
    return true;
  } catch {
    return false;
  }
});

interface CfnLintMatch {
  Level: "Error" | "Warning" | "Informational";
  Message: string;
  Rule: { Id: string };
  Location: { Path: (string | number)[] };
  Filename: string;
}

/** A finding as a line: its level, rule, place and message. */
const findingLine = (m: CfnLintMatch) =>
  `${m.Level} ${m.Rule.Id} at ${m.Location.Path.join("/")}: ${m.Message}`;

let linted:
  | Promise<{
      findings: (file: string) => CfnLintMatch[];
      broken: { file: string; id: string };
      variants: string[];
    }>
  | undefined;

/** cfn-lint's findings on `files` (JSON output; its exit code only says which levels). */
async function lint(files: string[]): Promise<CfnLintMatch[]> {
  const child = spawn("cfn-lint", ["--format", "json", "--", ...files]);
  child.stdin.end();
  const [stdout, stderr, [code]] = await Promise.all([
    text(child.stdout),
    text(child.stderr),
    once(child, "close").catch((error: Error) => [error]),
  ]);
  if (!stdout.trim().startsWith("[")) {
    throw new Error(`cfn-lint did not run (${code}): ${stderr}`);
  }
  const matches = JSON.parse(stdout) as CfnLintMatch[];
  // Each finding is told apart by its file: one named otherwise would be read as none.
  const unknown = matches.filter((m) => !files.includes(m.Filename));
  if (unknown.length > 0) throw new Error(`cfn-lint named other files: ${unknown[0]?.Filename}`);
  return matches;
}

/**
 * cfn-lint's findings on the two stacks' templates, on cdk.json's with a property
 * CloudFormation refuses, and on the variants the tests above synthesized in process: two runs
 * side by side, the variants' without waiting for the synths (a run's start is ~3 s of CPU, then
 * ~1 s a template; one run of them all was the last ~12 s of the suite, on one core).
 */
function lintTemplates() {
  linted ??= (async () => {
    const folder = await tempDir("cfn-lint-");
    const variants = synthesizedVariants.map(({ id: variant, json }) => {
      const file = join(folder, `variant-${variant}.template.json`);
      writeFileSync(file, json);
      return file;
    });
    const variantFindings = lint(variants);
    const webhooks = await synthesized("webhooks");
    const relay = await synthesized("relay");
    const { templateFile, template } = webhooks;
    const [id, queue] = Object.entries(template.Resources).find(
      ([, r]) => r.Type === "AWS::SQS::Queue",
    ) as unknown as [string, { Properties: Record<string, unknown> }];
    const broken = join(folder, "broken.template.json");
    writeFileSync(
      broken,
      JSON.stringify({
        ...template,
        Resources: {
          ...template.Resources,
          // Over SQS's 14 days, as a typo would make it.
          [id]: {
            ...queue,
            Properties: { ...queue.Properties, MessageRetentionPeriod: 12_096_000 },
          },
        },
      }),
    );
    const matches = (
      await Promise.all([lint([templateFile, relay.templateFile, broken]), variantFindings])
    ).flat();
    return {
      findings: (file: string) => matches.filter((m) => m.Filename === file),
      broken: { file: broken, id },
      variants,
    };
  })();
  return linted;
}

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

  // A property CloudFormation would refuse fails here, not in a deploy: errors fail, warnings are
  // listed.
  for (const name of ["webhooks", "relay"] as const) {
    it(`passes cfn-lint (the ${name} stack's template): no error`, async (context) => {
      if (!cfnLintInstalled) {
        context.skip(
          "cfn-lint is not installed (pip install cfn-lint): the templates were not linted",
        );
      }
      const { templateFile } = await synthesized(name);
      const findings = (await lintTemplates()).findings(templateFile);
      const warnings = findings.filter((m) => m.Level !== "Error");
      if (warnings.length > 0) {
        console.warn(`cfn-lint, ${name} stack:\n${warnings.map(findingLine).join("\n")}`);
      }
      expect(findings.filter((m) => m.Level === "Error").map(findingLine)).toEqual([]);
    }, 240_000);
  }

  it("passes cfn-lint (each stack the tests above synthesized in process, options and applications): no error", async (context) => {
    if (!cfnLintInstalled) context.skip("cfn-lint is not installed (pip install cfn-lint)");
    const { findings, variants } = await lintTemplates();
    expect(variants.length).toBeGreaterThanOrEqual(3);
    const errors = variants.flatMap((file) =>
      findings(file)
        .filter((m) => m.Level === "Error")
        .map((m) => `${file}: ${findingLine(m)}`),
    );
    expect(errors).toEqual([]);
  }, 240_000);

  it("cfn-lint's rules see what they should: a property CloudFormation refuses is an error", async (context) => {
    if (!cfnLintInstalled) context.skip("cfn-lint is not installed (pip install cfn-lint)");
    const { findings, broken } = await lintTemplates();
    expect(
      findings(broken.file)
        .filter((m) => m.Level === "Error")
        .map((m) => m.Location.Path.join("/")),
    ).toContain(`Resources/${broken.id}/Properties/MessageRetentionPeriod`);
  }, 240_000);
});
