import { join } from "node:path";
import { CfnOutput, Duration, RemovalPolicy, Stack } from "aws-cdk-lib";
import {
  type CfnStage,
  HttpApi,
  HttpMethod,
  type HttpRoute,
  HttpStage,
  LogGroupLogDestination,
} from "aws-cdk-lib/aws-apigatewayv2";
import { HttpLambdaIntegration } from "aws-cdk-lib/aws-apigatewayv2-integrations";
import { type Alarm, ComparisonOperator, TreatMissingData } from "aws-cdk-lib/aws-cloudwatch";
import { AttributeType, BillingMode, Table } from "aws-cdk-lib/aws-dynamodb";
import { Architecture, Runtime } from "aws-cdk-lib/aws-lambda";
import { SqsEventSource } from "aws-cdk-lib/aws-lambda-event-sources";
import { NodejsFunction, OutputFormat } from "aws-cdk-lib/aws-lambda-nodejs";
import { LogGroup, RetentionDays } from "aws-cdk-lib/aws-logs";
import { type ISecret, Secret } from "aws-cdk-lib/aws-secretsmanager";
import { Queue, QueueEncryption } from "aws-cdk-lib/aws-sqs";
import { NagSuppressions } from "cdk-nag";
import { Construct } from "constructs";
import { application } from "../functions/app/index.ts";
import type { AppRoute } from "../functions/appservice/application.ts";
import type { Registration } from "../functions/appservice/protocol/registration.ts";
import { type Route, routeTable } from "../functions/appservice/protocol/routes.ts";
import { OUTBOUND_MAX_RECEIVE_COUNT } from "../functions/matrix/backoff.ts";
import { botProfile } from "../functions/matrix/bot-profile.ts";
import { TABLE_KEY } from "../functions/store/dynamodb/table.ts";
import { bundling, functionEntries } from "./bundling.ts";

/** The registration's fields that are not secret; the tokens live in Secrets Manager. */
export type PublicRegistration = Omit<Registration, "as_token" | "hs_token" | "url">;

export interface MatrixAppserviceProps {
  homeserverUrl: string;
  serverName: string;
  registration: PublicRegistration;
  /** Existing secrets holding the tokens; generated (64 random characters) when absent. */
  asTokenSecret?: ISecret;
  hsTokenSecret?: ISecret;
  /** @default true */
  tableDeletionProtection?: boolean;
  /** @default one month */
  logRetention?: RetentionDays;
  /** Requests per second the API takes before it answers 429. @default 100 (burst 200) */
  apiRateLimit?: number;
  /** The application's HTTP routes. @default those of `functions/app` */
  appRoutes?: Pick<AppRoute, "method" | "path" | "rateLimit">[];
  /** Where the application's routes are reached (a custom domain). @default the API's URL */
  publicBaseUrl?: string;
  /** The bot's display name and avatar (`mxc://`). @default the registration's `id`, no avatar */
  botProfile?: { displayName?: string; avatarUrl?: string };
}

/** Requests per second an application route takes when it does not say. */
export const DEFAULT_APP_ROUTE_RATE_LIMIT = 20;

/** How long the events consumer may run; the inbound queue's visibility is six times this. */
export const EVENTS_FUNCTION_TIMEOUT = Duration.seconds(30);
/** The homeserver waits 60 s; API Gateway's HTTP API gives up at 30 s. */
export const TRANSACTIONS_FUNCTION_TIMEOUT = Duration.seconds(25);
/** Deliveries of an inbound message before it moves to the dead-letter queue. */
export const MAX_RECEIVE_COUNT = 5;
/** The outbox waits for the homeserver at most this long per call… */
export const HOMESERVER_TIMEOUT = Duration.seconds(20);
/** …and may make a few calls per action (register, invite, join, the call itself). */
export const OUTBOX_FUNCTION_TIMEOUT = Duration.seconds(120);

const projectRoot = join(import.meta.dirname, "..");

/**
 * The whole appservice: HTTP API → Lambda handlers, the DynamoDB table, the inbound FIFO queue
 * with its dead-letter queue, the token secrets, alarms. Embed it in any CDK app.
 */
export class MatrixAppservice extends Construct {
  readonly api: HttpApi;
  readonly table: Table;
  readonly inboundQueue: Queue;
  readonly inboundDeadLetterQueue: Queue;
  readonly outboundQueue: Queue;
  readonly outboundDeadLetterQueue: Queue;
  readonly functions: Record<keyof typeof functionEntries, NodejsFunction>;
  readonly asTokenSecret: ISecret;
  readonly hsTokenSecret: ISecret;
  readonly alarms: Alarm[] = [];

  constructor(scope: Construct, id: string, props: MatrixAppserviceProps) {
    super(scope, id);
    const logRetention = props.logRetention ?? RetentionDays.ONE_MONTH;

    this.table = new Table(this, "Table", {
      partitionKey: { name: TABLE_KEY.partitionKey, type: AttributeType.STRING },
      sortKey: { name: TABLE_KEY.sortKey, type: AttributeType.STRING },
      timeToLiveAttribute: TABLE_KEY.ttlAttribute,
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: props.tableDeletionProtection ?? true,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    const fifo = {
      fifo: true,
      contentBasedDeduplication: false,
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    };
    this.inboundDeadLetterQueue = new Queue(this, "InboundDeadLetterQueue", {
      ...fifo,
      retentionPeriod: Duration.days(14),
    });
    this.inboundQueue = new Queue(this, "InboundQueue", {
      ...fifo,
      visibilityTimeout: Duration.seconds(EVENTS_FUNCTION_TIMEOUT.toSeconds() * 6),
      deadLetterQueue: { queue: this.inboundDeadLetterQueue, maxReceiveCount: MAX_RECEIVE_COUNT },
    });

    // The outbox sets each retry's wait itself and dead-letters what can never succeed: SQS's
    // redrive is only the last resort, after days of retries.
    this.outboundDeadLetterQueue = new Queue(this, "OutboundDeadLetterQueue", {
      ...fifo,
      retentionPeriod: Duration.days(14),
    });
    this.outboundQueue = new Queue(this, "OutboundQueue", {
      ...fifo,
      retentionPeriod: Duration.days(14),
      visibilityTimeout: Duration.seconds(OUTBOX_FUNCTION_TIMEOUT.toSeconds() * 6),
      deadLetterQueue: {
        queue: this.outboundDeadLetterQueue,
        maxReceiveCount: OUTBOUND_MAX_RECEIVE_COUNT,
      },
    });

    const token = (name: string) =>
      new Secret(this, name, {
        description: `The appservice's ${name === "AsToken" ? "as_token" : "hs_token"} (registration file)`,
        generateSecretString: { passwordLength: 64, excludePunctuation: true },
      });
    this.asTokenSecret = props.asTokenSecret ?? token("AsToken");
    this.hsTokenSecret = props.hsTokenSecret ?? token("HsToken");

    const botUserId = `@${props.registration.sender_localpart}:${props.serverName}`;
    // Checked here, so that a bad avatar stops the synth rather than the outbox.
    const profile = botProfile(
      props.botProfile?.displayName ?? (props.registration as Pick<Registration, "id">).id,
      props.botProfile?.avatarUrl,
    );
    const appRoutes = (props.appRoutes ?? application.routes ?? []).map(
      ({ method, path, rateLimit }) => ({ method, path, rateLimit }),
    );
    const routes = routeTable(appRoutes);
    // What the application's code (events and app functions) needs to act.
    const serviceEnvironment = {
      TABLE_NAME: this.table.tableName,
      OUTBOUND_QUEUE_URL: this.outboundQueue.queueUrl,
      BOT_USER_ID: botUserId,
      AS_TOKEN_SECRET_ARN: this.asTokenSecret.secretArn,
      HOMESERVER_URL: props.homeserverUrl,
    };
    const createFunction = (
      name: keyof typeof functionEntries,
      timeout: Duration,
      environment: Record<string, string>,
    ) =>
      new NodejsFunction(this, `${name[0]?.toUpperCase()}${name.slice(1)}Function`, {
        entry: join(projectRoot, functionEntries[name]),
        handler: "handler",
        projectRoot,
        depsLockFilePath: join(projectRoot, "package-lock.json"),
        runtime: Runtime.NODEJS_22_X,
        architecture: Architecture.ARM_64,
        memorySize: 256,
        timeout,
        // Stack traces through the source maps.
        environment: {
          NODE_OPTIONS: "--enable-source-maps",
          POWERTOOLS_LOG_LEVEL: "INFO",
          ...environment,
        },
        logGroup: new LogGroup(this, `${name}Logs`, {
          retention: logRetention,
          removalPolicy: RemovalPolicy.DESTROY,
        }),
        bundling: {
          format: OutputFormat.ESM,
          target: bundling.target,
          minify: bundling.minify,
          sourceMap: bundling.sourceMap,
          mainFields: [...bundling.mainFields],
          banner: bundling.banner,
          // Bundle the AWS SDK too: the version our tests ran, tree-shaken.
          externalModules: [],
        },
      });

    this.functions = {
      transactions: createFunction("transactions", TRANSACTIONS_FUNCTION_TIMEOUT, {
        TABLE_NAME: this.table.tableName,
        INBOUND_QUEUE_URL: this.inboundQueue.queueUrl,
        HS_TOKEN_SECRET_ARN: this.hsTokenSecret.secretArn,
      }),
      events: createFunction("events", EVENTS_FUNCTION_TIMEOUT, {
        ...serviceEnvironment,
        LEASE_MS: String(EVENTS_FUNCTION_TIMEOUT.toMilliseconds()),
      }),
      outbox: createFunction("outbox", OUTBOX_FUNCTION_TIMEOUT, {
        TABLE_NAME: this.table.tableName,
        OUTBOUND_QUEUE_URL: this.outboundQueue.queueUrl,
        OUTBOUND_DEAD_LETTER_QUEUE_URL: this.outboundDeadLetterQueue.queueUrl,
        AS_TOKEN_SECRET_ARN: this.asTokenSecret.secretArn,
        HOMESERVER_URL: props.homeserverUrl,
        HOMESERVER_TIMEOUT_MS: String(HOMESERVER_TIMEOUT.toMilliseconds()),
        BOT_USER_ID: botUserId,
        REGISTRATION_JSON: JSON.stringify(props.registration),
        BOT_DISPLAY_NAME: profile.displayname,
        ...(profile.avatar_url && { BOT_AVATAR_URL: profile.avatar_url }),
      }),
      queries: createFunction("queries", TRANSACTIONS_FUNCTION_TIMEOUT, {
        TABLE_NAME: this.table.tableName,
        AS_TOKEN_SECRET_ARN: this.asTokenSecret.secretArn,
        HS_TOKEN_SECRET_ARN: this.hsTokenSecret.secretArn,
        HOMESERVER_URL: props.homeserverUrl,
        BOT_USER_ID: botUserId,
        REGISTRATION_JSON: JSON.stringify(props.registration),
      }),
      fallback: createFunction("fallback", Duration.seconds(5), {
        APP_ROUTES: JSON.stringify(appRoutes.map(({ method, path }) => ({ method, path }))),
      }),
      app: createFunction("app", TRANSACTIONS_FUNCTION_TIMEOUT, serviceEnvironment),
    };

    // Least privilege: each function gets the actions its adapter calls, on its resources only.
    this.table.grant(this.functions.transactions, "dynamodb:PutItem");
    this.inboundQueue.grantSendMessages(this.functions.transactions);
    this.hsTokenSecret.grantRead(this.functions.transactions);
    // Claims (with the grants below).
    this.table.grant(this.functions.events, "dynamodb:UpdateItem");
    // The application's data (`APP#…` items), read and written by its events and routes.
    for (const fn of [this.functions.events, this.functions.app]) {
      this.table.grant(
        fn,
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "dynamodb:ConditionCheckItem",
      );
      this.asTokenSecret.grantRead(fn);
    }
    this.outboundQueue.grantSendMessages(this.functions.app);
    this.functions.events.addEventSource(
      new SqsEventSource(this.inboundQueue, { batchSize: 10, reportBatchItemFailures: true }),
    );
    this.outboundQueue.grantSendMessages(this.functions.events);
    const { outbox, queries } = this.functions;
    // Queries claim the creation of a user or alias, and remember registered users.
    this.table.grant(
      queries,
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
    );
    this.asTokenSecret.grantRead(queries);
    this.hsTokenSecret.grantRead(queries);
    // Users registered and joined; server errors counted (`OUTBOX#…` items).
    this.table.grant(outbox, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem");
    this.asTokenSecret.grantRead(outbox);
    this.outboundDeadLetterQueue.grantSendMessages(outbox);
    // The event source grants receive, delete and visibility changes on the outbound queue.
    outbox.addEventSource(
      new SqsEventSource(this.outboundQueue, { batchSize: 10, reportBatchItemFailures: true }),
    );

    this.api = new HttpApi(this, "Api", {
      description: "Matrix application service API",
      createDefaultStage: false,
      defaultIntegration: new HttpLambdaIntegration("Fallback", this.functions.fallback),
    });
    const accessLogs = new LogGroup(this, "ApiAccessLogs", {
      retention: logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const rateLimit = props.apiRateLimit ?? 100;
    const stage = new HttpStage(this, "DefaultStage", {
      httpApi: this.api,
      stageName: "$default",
      autoDeploy: true,
      throttle: { rateLimit, burstLimit: rateLimit * 2 },
      accessLogSettings: { destination: new LogGroupLogDestination(accessLogs) },
    });
    const integrations: Record<Route["handler"], HttpLambdaIntegration> = {
      transactions: new HttpLambdaIntegration("Transactions", this.functions.transactions),
      queries: new HttpLambdaIntegration("Queries", this.functions.queries),
      app: new HttpLambdaIntegration("App", this.functions.app),
    };
    for (const route of routes) {
      const [httpRoute] = this.api.addRoutes({
        path: route.path,
        methods: [HttpMethod[route.method]],
        integration: integrations[route.handler],
      });
      // The stage's route settings name these routes: they must exist first.
      if (route.handler === "app") stage.node.addDependency(httpRoute as HttpRoute);
    }
    // The application's routes are open to the internet: each has a throttle of its own.
    // (A JSON property: CloudFormation's own casing.)
    (stage.node.defaultChild as CfnStage).routeSettings = Object.fromEntries(
      appRoutes.map((route) => {
        const limit = route.rateLimit ?? DEFAULT_APP_ROUTE_RATE_LIMIT;
        return [
          `${route.method} ${route.path}`,
          { ThrottlingRateLimit: limit, ThrottlingBurstLimit: limit * 2 },
        ];
      }),
    );
    const publicBaseUrl = props.publicBaseUrl ?? this.api.apiEndpoint;
    this.functions.events.addEnvironment("PUBLIC_BASE_URL", publicBaseUrl);
    this.functions.app.addEnvironment("PUBLIC_BASE_URL", publicBaseUrl);

    const deadLetterAlarm = (queue: Queue, id: string, description: string) =>
      queue
        .metricApproximateNumberOfMessagesVisible({ period: Duration.minutes(5) })
        .createAlarm(this, id, {
          alarmDescription: description,
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: TreatMissingData.NOT_BREACHING,
        });
    this.alarms.push(
      deadLetterAlarm(
        this.inboundDeadLetterQueue,
        "InboundDeadLettersAlarm",
        "Inbound events failed every retry and wait in the dead-letter queue",
      ),
      deadLetterAlarm(
        this.outboundDeadLetterQueue,
        "OutboundDeadLettersAlarm",
        "Homeserver calls failed for good (the reason is in each message) or after days of retries",
      ),
      this.api.metricServerError({ period: Duration.minutes(5) }).createAlarm(this, "Api5xxAlarm", {
        alarmDescription: "The API answered 5xx: the homeserver will mark the appservice down",
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      }),
      ...Object.entries(this.functions).map(([name, fn]) =>
        fn.metricErrors({ period: Duration.minutes(5) }).createAlarm(this, `${name}ErrorsAlarm`, {
          alarmDescription: `The ${name} function failed`,
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: TreatMissingData.NOT_BREACHING,
        }),
      ),
    );

    const stack = Stack.of(this);
    new CfnOutput(stack, "ApiUrl", {
      value: this.api.apiEndpoint,
      description: "The url of the registration file",
    });
    new CfnOutput(stack, "AsTokenSecretArn", { value: this.asTokenSecret.secretArn });
    new CfnOutput(stack, "HsTokenSecretArn", { value: this.hsTokenSecret.secretArn });
    new CfnOutput(stack, "Registration", {
      value: stack.toJsonString(props.registration),
      description: "The registration's public fields (npm run registration -- --stack NAME)",
    });
    new CfnOutput(stack, "HomeserverUrl", { value: props.homeserverUrl });

    this.suppressReviewedNagFindings();
  }

  /** cdk-nag findings reviewed and accepted, each with its reason. */
  private suppressReviewedNagFindings() {
    for (const fn of Object.values(this.functions)) {
      NagSuppressions.addResourceSuppressions(
        fn,
        [
          {
            id: "AwsSolutions-IAM4",
            reason:
              "AWSLambdaBasicExecutionRole only lets the function write its own logs; CDK's default.",
            appliesTo: [
              "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
            ],
          },
          {
            id: "AwsSolutions-L1",
            reason:
              "nodejs22.x is the runtime this project targets and tests against (Node 20-24).",
          },
        ],
        true,
      );
    }
    NagSuppressions.addResourceSuppressions(
      this.api,
      [
        {
          id: "AwsSolutions-APIG4",
          reason:
            "The Matrix AS API authenticates every request itself with the hs_token (spec); the homeserver cannot use IAM or Cognito.",
        },
      ],
      true,
    );
    for (const queue of [this.inboundDeadLetterQueue, this.outboundDeadLetterQueue]) {
      NagSuppressions.addResourceSuppressions(queue, [
        { id: "AwsSolutions-SQS3", reason: "This is a dead-letter queue." },
      ]);
    }
    for (const secret of [this.asTokenSecret, this.hsTokenSecret]) {
      if (!(secret instanceof Secret)) continue;
      NagSuppressions.addResourceSuppressions(secret, [
        {
          id: "AwsSolutions-SMG4",
          reason:
            "The tokens are also in the homeserver's registration file: rotating them needs the homeserver updated and restarted, which no Lambda can do.",
        },
      ]);
    }
  }
}
