import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  ArnFormat,
  CfnOutput,
  CfnResource,
  CustomResource,
  Duration,
  RemovalPolicy,
  Stack,
} from "aws-cdk-lib";
import { AccessLogFormat } from "aws-cdk-lib/aws-apigateway";
import {
  type CfnStage,
  HttpApi,
  HttpMethod,
  type HttpRoute,
  HttpStage,
  LogGroupLogDestination,
} from "aws-cdk-lib/aws-apigatewayv2";
import { HttpLambdaIntegration } from "aws-cdk-lib/aws-apigatewayv2-integrations";
import {
  type Alarm,
  ComparisonOperator,
  MathExpression,
  Metric,
  TreatMissingData,
} from "aws-cdk-lib/aws-cloudwatch";
import { SnsAction } from "aws-cdk-lib/aws-cloudwatch-actions";
import { AttributeType, BillingMode, Table } from "aws-cdk-lib/aws-dynamodb";
import { Rule, Schedule } from "aws-cdk-lib/aws-events";
import { LambdaFunction } from "aws-cdk-lib/aws-events-targets";
import { type IGrantable, PolicyStatement } from "aws-cdk-lib/aws-iam";
import { Architecture, Runtime, Tracing } from "aws-cdk-lib/aws-lambda";
import { SqsEventSource } from "aws-cdk-lib/aws-lambda-event-sources";
import { NodejsFunction, OutputFormat } from "aws-cdk-lib/aws-lambda-nodejs";
import { FilterPattern, type ILogGroup, LogGroup, RetentionDays } from "aws-cdk-lib/aws-logs";
import { type ISecret, Secret } from "aws-cdk-lib/aws-secretsmanager";
import { Topic } from "aws-cdk-lib/aws-sns";
import { EmailSubscription } from "aws-cdk-lib/aws-sns-subscriptions";
import {
  DeduplicationScope,
  FifoThroughputLimit,
  type IQueue,
  Queue,
  QueueEncryption,
} from "aws-cdk-lib/aws-sqs";
import { NagSuppressions } from "cdk-nag";
import { Construct } from "constructs";
import type { AppRoute } from "../functions/appservice/application.ts";
import { INBOUND_MAX_RECEIVE_COUNT } from "../functions/appservice/pipeline/process-inbound.ts";
import type { Registration } from "../functions/appservice/protocol/registration.ts";
import { type Route, routeTable } from "../functions/appservice/protocol/routes.ts";
import { NEAR_TIMEOUT_SHARE } from "../functions/handlers/shared/lambda-handler.ts";
import { TOKEN_GENERATION } from "../functions/handlers/tokens-secret.ts";
import {
  DEFAULT_BACKOFF,
  OUTBOUND_MAX_RECEIVE_COUNT,
  retriesCovering,
} from "../functions/matrix/backoff.ts";
import { botProfile } from "../functions/matrix/bot-profile.ts";
import { OUTCOME_LOG_MESSAGES } from "../functions/matrix/outbox.ts";
import { DEAD_LETTER_SWEEP_MINUTES } from "../functions/operator/console.ts";
import { MAX_MESSAGE_BYTES } from "../functions/queue/queue.ts";
import { addressPolicy } from "../functions/remote/address-policy.ts";
import { CLAIM_KEY_PREFIXES } from "../functions/store/claim-keys.ts";
import { DELIVERY_OUTCOMES_COLLECTION } from "../functions/store/delivery-outcomes.ts";
import {
  APP_DATA_KEY_PREFIX,
  CALL_RECORDS_KEY_PREFIX,
} from "../functions/store/dynamodb/app-data.ts";
import { DEAD_LETTER_KEY_PREFIX } from "../functions/store/dynamodb/dead-letters.ts";
import { SET_ASIDE_KEY_PREFIX } from "../functions/store/dynamodb/set-aside-items.ts";
import { HASHED_KEY_PREFIX, SERVER_ERRORS_KEY_PREFIX } from "../functions/store/dynamodb/store.ts";
import { TABLE_KEY } from "../functions/store/dynamodb/table.ts";
import { botUserIdOf } from "../functions/wiring/deps.ts";
import {
  ENV,
  environmentOf,
  type PLATFORM_ENV,
  TOKENS_SECRET_KEYS,
  type TokenName,
} from "../functions/wiring/env.ts";
import {
  EVENTS_TIMEOUT_MS,
  OUTBOX_TIMEOUT_MS,
  visibilityTimeoutSeconds,
} from "../functions/wiring/timeouts.ts";
import { type ApplicationChoice, DEFAULT_CHOICE, settingsEnvironment } from "./application.ts";
import {
  applicationAlias,
  bundling,
  functionEntries,
  runtimeFileCommands,
  runtimeFilesOf,
  TOKENS_SECRET_ENTRY,
} from "./bundling.ts";

/** The registration's fields that are not secret; the tokens live in Secrets Manager. */
export type PublicRegistration = Omit<Registration, "as_token" | "hs_token" | "url">;

export interface MatrixAppserviceProps {
  homeserverUrl: string;
  serverName: string;
  registration: PublicRegistration;
  /**
   * Existing secrets, one a token, each its token as a plain string; generated (64 random
   * characters each) when absent.
   */
  tokenSecrets?: TokenSecrets;
  /** @default true */
  tableDeletionProtection?: boolean;
  /** @default one month */
  logRetention?: RetentionDays;
  /**
   * Requests per second a route without a throttle of its own takes before it answers 429 (the
   * `$default` fallback). @default 100 (burst 200)
   */
  apiRateLimit?: number;
  /**
   * Requests per second each of the homeserver's routes (transactions, users, rooms, third
   * party, ping) takes, apart from the application's public routes. @default 100 (burst 200)
   */
  homeserverRateLimit?: number;
  /**
   * Events functions running at once (the inbound event source's `MaximumConcurrency`, 2–1000):
   * bounds what a flood of rooms takes from the account's concurrency. @default 10
   */
  eventsMaxConcurrency?: number;
  /**
   * Outbox functions running at once (2–1000): bounds the calls on the homeserver.
   * @default 10
   */
  outboxMaxConcurrency?: number;
  /** AWS X-Ray active tracing on every function. @default false */
  tracing?: boolean;
  /**
   * The application the functions run: each function's bundle holds its part of that one
   * application alone. @default package.json's default application (`DEFAULT_APPLICATION`)
   */
  application?: ApplicationChoice;
  /** The application's HTTP routes. @default the application's own */
  appRoutes?: Pick<AppRoute, "method" | "path" | "rateLimit">[];
  /** Where the application's routes are reached (a custom domain). @default the API's URL */
  publicBaseUrl?: string;
  /** The bot's display name and avatar (`mxc://`). @default the registration's `id`, no avatar */
  botProfile?: { displayName?: string; avatarUrl?: string };
  /**
   * CIDR ranges that deliveries to remote services (`actions.deliver`) may reach though they
   * are not public (loopback, private, link-local, …): e.g. a service in your VPC.
   * @default none: public addresses only
   */
  deliveryAllowedAddresses?: readonly string[];
  /**
   * Where the alarm is sent (when it fires and when it clears): an existing SNS topic, and/or an
   * email address subscribed to it (to a new topic when no ARN is given; the address confirms
   * the subscription by mail). @default no action
   */
  alarmAction?: AlarmAction;
  /**
   * Concurrency reserved for the transactions function (and its cap): the homeserver's ack path
   * keeps this much of the account's concurrency whatever the other functions take.
   * @default none (a reservation fails on an account whose quota is still 10)
   */
  transactionsReservedConcurrency?: number;
  /**
   * The application function's cap (reserved concurrency): a flood of webhook requests cannot
   * take more of the account's concurrency than this. @default none: the routes' throttles alone
   */
  appReservedConcurrency?: number;
}

/** A secret for each token: a function is granted only those it uses. */
export type TokenSecrets = Record<TokenName, ISecret>;

/** The alarm's SNS topic: `topicArn`, `email`, or both. */
export interface AlarmAction {
  topicArn?: string;
  email?: string;
}

/** The stack's output naming each token's secret (`npm run registration` reads them). */
export const TOKEN_OUTPUTS = {
  asToken: { output: "AsTokenSecretArn", key: TOKENS_SECRET_KEYS.asToken },
  hsToken: { output: "HsTokenSecretArn", key: TOKENS_SECRET_KEYS.hsToken },
  adminToken: { output: "AdminTokenSecretArn", key: TOKENS_SECRET_KEYS.adminToken },
} as const satisfies Record<TokenName, { output: string; key: string }>;

/** Requests per second an application route takes when it does not say. */
export const DEFAULT_APP_ROUTE_RATE_LIMIT = 20;

/** How long the events consumer may run; the inbound queue's visibility is six times this. */
export const EVENTS_FUNCTION_TIMEOUT = Duration.millis(EVENTS_TIMEOUT_MS);
/** The homeserver waits 60 s; API Gateway's HTTP API gives up at 30 s. */
export const TRANSACTIONS_FUNCTION_TIMEOUT = Duration.seconds(25);
/** Requests per second the operator console's routes take (twice that in a burst). */
export const OPERATOR_RATE_LIMIT = 5;
/** Long enough for two actions that make every call they may, each waiting the full timeout. */
export const OUTBOX_FUNCTION_TIMEOUT = Duration.millis(OUTBOX_TIMEOUT_MS);
/** Every queue, and every dead-letter queue, keeps a message this long (SQS's maximum). */
export const QUEUE_RETENTION = Duration.days(14);
/** The oldest message of either queue older than this: a consumer is stuck or a room blocked. */
export const QUEUE_AGE_ALARM = Duration.minutes(15);
/**
 * An outbound call's attempt (0 the first) from which each retry counts as a problem: the retries
 * expected to fill the queue age threshold, so that a call held up as long as a queue's oldest
 * message alarms as that message would.
 */
export const OUTBOX_RETRIES_BEFORE_ALARM = retriesCovering(
  QUEUE_AGE_ALARM.toSeconds(),
  DEFAULT_BACKOFF,
);
/**
 * 5-minute periods the alarm waits clear before it returns to OK: longer than the outbox's
 * longest wait between two retries (the backoff's cap), so a retried call keeps it firing.
 */
export const ALARM_CLEAR_PERIODS = 3;
/**
 * Lambda's own lines for a failed invocation: a timeout as the runtime wrote it ("Task timed
 * out") and as the REPORT line now says it ("Status: timeout"), an uncaught error, a crash.
 */
export const RUNTIME_FAILURES_PATTERN =
  '?"Task timed out" ?"Status: timeout" ?"Invoke Error" ?"Uncaught Exception" ?"Runtime.ExitError"';
/**
 * The application function's memory, from a measurement (docs/performance.md): its bundle (925 KB)
 * loaded, 52 MB RSS (bare Node 39 MB); at its peak, running 200 webhook transformations in the
 * QuickJS sandbox (a worker thread with the WebAssembly engine), 100-103 MB (3 runs, Node 20, heap
 * 10 MB). Lambda's runtime adds ~30 MB: 256 MB would hold it, but Lambda gives CPU in proportion to
 * memory, and a transformation's 100 ms limit is wall-clock time: 512 MB doubles the CPU share.
 */
export const APP_FUNCTION_MEMORY_MB = 512;
/** Every other function's memory: each measured far below it (no sandbox, no WebAssembly). */
export const FUNCTION_MEMORY_MB = 256;
/** Event source concurrency when the props do not say. */
export const DEFAULT_MAX_CONCURRENCY = 10;

const projectRoot = join(import.meta.dirname, "..");
/** The version the operator console shows: the package's. */
const APP_VERSION = (
  JSON.parse(readFileSync(join(projectRoot, "package.json"), "utf8")) as { version: string }
).version;

/**
 * The API's access log, one JSON object per request. `status` is a number, so that metric
 * filters compare it; the rest are strings (a variable API Gateway lacks is written "-").
 */
const ACCESS_LOG_FORMAT = `{${[
  '"requestId":"$context.requestId"',
  '"ip":"$context.identity.sourceIp"',
  '"time":"$context.requestTime"',
  '"routeKey":"$context.routeKey"',
  '"status":$context.status',
  '"latencyMs":"$context.responseLatency"',
  '"integrationLatencyMs":"$context.integrationLatency"',
  '"integrationStatus":"$context.integrationStatus"',
  '"integrationError":"$context.integrationErrorMessage"',
  '"error":"$context.error.message"',
  '"responseLength":"$context.responseLength"',
].join(",")}}`;

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
  /** A secret for each token, its value the token itself. */
  readonly tokenSecrets: TokenSecrets;
  /**
   * The secret shared with the application's remote service (a plain string), when its manifest
   * declares `remoteSecret`.
   */
  readonly remoteSecret?: Secret;
  readonly alarms: Alarm[] = [];
  /** Where the stack generates the tokens secret: the deploy-time function that completes it. */
  private tokensGenerator?: NodejsFunction;
  private tokensCarried?: CustomResource;

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

    // High-throughput FIFO (free): deduplication and the throughput limit per group, not per
    // queue. Retained: a replaced queue (a new logical ID) must not take its messages with it.
    const fifo = {
      fifo: true,
      contentBasedDeduplication: false,
      deduplicationScope: DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: QUEUE_RETENTION,
      // SQS's most: an inbound item over it is set aside in the table and queued by reference.
      maxMessageSizeBytes: MAX_MESSAGE_BYTES,
      removalPolicy: RemovalPolicy.RETAIN,
    };
    this.inboundDeadLetterQueue = new Queue(this, "InboundDeadLetterQueue", fifo);
    // The events consumer counts each item's attempts and dead-letters a failing item itself:
    // SQS's redrive is only the last resort.
    this.inboundQueue = new Queue(this, "InboundQueue", {
      ...fifo,
      visibilityTimeout: Duration.seconds(visibilityTimeoutSeconds(EVENTS_TIMEOUT_MS)),
      deadLetterQueue: {
        queue: this.inboundDeadLetterQueue,
        maxReceiveCount: INBOUND_MAX_RECEIVE_COUNT,
      },
    });

    // The outbox sets each retry's wait itself and dead-letters what can never succeed: SQS's
    // redrive is only the last resort, after days of retries.
    this.outboundDeadLetterQueue = new Queue(this, "OutboundDeadLetterQueue", fifo);
    this.outboundQueue = new Queue(this, "OutboundQueue", {
      ...fifo,
      visibilityTimeout: Duration.seconds(visibilityTimeoutSeconds(OUTBOX_TIMEOUT_MS)),
      deadLetterQueue: {
        queue: this.outboundDeadLetterQueue,
        maxReceiveCount: OUTBOUND_MAX_RECEIVE_COUNT,
      },
    });

    this.tokenSecrets =
      props.tokenSecrets ??
      this.generateTokenSecrets({ logRetention, tracing: props.tracing ?? false });
    const arnOf = (token: TokenName) => this.tokenSecrets[token].secretArn;

    const botUserId = botUserIdOf(
      (props.registration as Pick<Registration, "sender_localpart">).sender_localpart,
      props.serverName,
    );
    // Checked here, so that a bad avatar stops the synth rather than the outbox.
    const profile = botProfile(
      props.botProfile?.displayName ?? (props.registration as Pick<Registration, "id">).id,
      props.botProfile?.avatarUrl,
    );
    const choice = props.application ?? DEFAULT_CHOICE;
    // A secret of its own, made at deploy, read by the two functions that use it: the app
    // function checks the remote service's requests, the outbox signs the deliveries to it.
    // Retained, as the tokens: the remote service was given it.
    // Its id from the application's name: the relay's stays `RelaySecret`, the logical ID it was
    // deployed under (another would replace the secret the remote service holds).
    const remoteSecretId = `${choice.name.replace(/(^|-)(\w)/g, (_, _dash, c: string) => c.toUpperCase())}Secret`;
    const manifestSecret = choice.module.manifest.remoteSecret;
    this.remoteSecret = manifestSecret
      ? new Secret(this, remoteSecretId, {
          // A description change is an in-place update: the construct id above is what keeps it.
          description: `The ${choice.name} application's secret shared with its remote service: requests signed with it, both ways`,
          generateSecretString: { passwordLength: 64, excludePunctuation: true },
          removalPolicy: RemovalPolicy.RETAIN,
        })
      : undefined;
    const remoteSecretEnvironment = this.remoteSecret
      ? environmentOf({ remoteSecretArn: this.remoteSecret.secretArn })
      : {};
    const appRoutes = (props.appRoutes ?? choice.application.routes ?? []).map(
      ({ method, path, rateLimit }) => ({ method, path, rateLimit }),
    );
    const routes = routeTable(appRoutes);
    // Checked here (a bad range fails the synth, naming it), passed on as the function reads it.
    const deliveryAllowedAddresses = props.deliveryAllowedAddresses?.length
      ? addressPolicy(props.deliveryAllowedAddresses).allowed.join(",")
      : undefined;
    // What the application's code (events and app functions) needs to act.
    // (`PUBLIC_BASE_URL` too, once the API is made.)
    const serviceEnvironment = environmentOf({
      tableName: this.table.tableName,
      outboundQueueUrl: this.outboundQueue.queueUrl,
      botUserId,
      asTokenSecretArn: arnOf("asToken"),
      homeserverUrl: props.homeserverUrl,
      registration: JSON.stringify(props.registration),
      ...(deliveryAllowedAddresses && { deliveryAllowedAddresses }),
    });
    const sizing: Partial<
      Record<
        keyof typeof functionEntries,
        { memorySize?: number; reservedConcurrentExecutions?: number }
      >
    > = {
      transactions: { reservedConcurrentExecutions: props.transactionsReservedConcurrency },
      app: {
        memorySize: APP_FUNCTION_MEMORY_MB,
        reservedConcurrentExecutions: props.appReservedConcurrency,
      },
    };
    const createFunction = (
      name: keyof typeof functionEntries,
      timeout: Duration,
      environment: Record<string, string>,
    ) =>
      this.nodeFunction(name, functionEntries[name], timeout, environment, {
        logRetention,
        tracing: props.tracing ?? false,
        application: choice,
        ...sizing[name],
      });

    const functions = {
      transactions: createFunction(
        "transactions",
        TRANSACTIONS_FUNCTION_TIMEOUT,
        environmentOf({
          tableName: this.table.tableName,
          inboundQueueUrl: this.inboundQueue.queueUrl,
          hsTokenSecretArn: arnOf("hsToken"),
        }),
      ),
      events: createFunction("events", EVENTS_FUNCTION_TIMEOUT, {
        ...serviceEnvironment,
        ...environmentOf({
          inboundQueueUrl: this.inboundQueue.queueUrl,
          inboundDeadLetterQueueUrl: this.inboundDeadLetterQueue.queueUrl,
        }),
        ...settingsEnvironment(choice, "events"),
      }),
      outbox: createFunction("outbox", OUTBOX_FUNCTION_TIMEOUT, {
        ...environmentOf({
          tableName: this.table.tableName,
          outboundQueueUrl: this.outboundQueue.queueUrl,
          outboundDeadLetterQueueUrl: this.outboundDeadLetterQueue.queueUrl,
          asTokenSecretArn: arnOf("asToken"),
          homeserverUrl: props.homeserverUrl,
          botUserId,
          registration: JSON.stringify(props.registration),
          botDisplayName: profile.displayname,
          ...(profile.avatar_url && { botAvatarUrl: profile.avatar_url }),
          ...(deliveryAllowedAddresses && { deliveryAllowedAddresses }),
          // The one origin the outbox signs deliveries to.
          ...(manifestSecret && { remoteServiceUrl: choice.config[manifestSecret.urlSetting] }),
        }),
        ...remoteSecretEnvironment,
      }),
      queries: createFunction("queries", TRANSACTIONS_FUNCTION_TIMEOUT, {
        ...environmentOf({
          tableName: this.table.tableName,
          asTokenSecretArn: arnOf("asToken"),
          hsTokenSecretArn: arnOf("hsToken"),
          homeserverUrl: props.homeserverUrl,
          botUserId,
          registration: JSON.stringify(props.registration),
        }),
        ...settingsEnvironment(choice, "queries"),
      }),
      fallback: createFunction(
        "fallback",
        Duration.seconds(5),
        environmentOf({
          appRoutes: JSON.stringify(appRoutes.map(({ method, path }) => ({ method, path }))),
        }),
      ),
      app: createFunction("app", TRANSACTIONS_FUNCTION_TIMEOUT, {
        ...serviceEnvironment,
        ...remoteSecretEnvironment,
        ...settingsEnvironment(choice, "app"),
      }),
    };
    // The operator console reads the others' log lines for its traffic and errors.
    const admin = createFunction("admin", TRANSACTIONS_FUNCTION_TIMEOUT, {
      ...serviceEnvironment,
      ...settingsEnvironment(choice, "admin"),
      ...environmentOf({
        inboundQueueUrl: this.inboundQueue.queueUrl,
        inboundDeadLetterQueueUrl: this.inboundDeadLetterQueue.queueUrl,
        outboundDeadLetterQueueUrl: this.outboundDeadLetterQueue.queueUrl,
        registration: JSON.stringify(props.registration),
        version: APP_VERSION,
        adminTokenSecretArn: arnOf("adminToken"),
        logGroups: Stack.of(this).toJsonString(
          Object.fromEntries(
            Object.entries(functions).map(([name, fn]) => [name, fn.logGroup.logGroupName]),
          ),
        ),
      }),
    });
    this.functions = { ...functions, admin };

    // No function runs before its tokens exist.
    if (this.tokensCarried) {
      for (const fn of Object.values(this.functions)) fn.node.addDependency(this.tokensCarried);
    }

    // Least privilege: each function gets the actions its adapters call, on its resources only;
    // the functions that run the application's code, only on the keys they own.
    const { transactions, events, outbox, queries, app } = this.functions;
    const tableActions = (fn: IGrantable, actions: string[], keyPrefixes?: string[]) =>
      fn.grantPrincipal.addToPrincipalPolicy(
        new PolicyStatement({
          actions: actions.map((action) => `dynamodb:${action}`),
          resources: [this.table.tableArn],
          ...(keyPrefixes && {
            conditions: {
              "ForAllValues:StringLike": {
                "dynamodb:LeadingKeys": keyPrefixes.map((prefix) => `${prefix}*`),
              },
            },
          }),
        }),
      );
    const sendTo = (fn: IGrantable, queue: IQueue) =>
      fn.grantPrincipal.addToPrincipalPolicy(
        new PolicyStatement({ actions: ["sqs:SendMessage"], resources: [queue.queueArn] }),
      );
    const readSecret = (fn: IGrantable, secret: ISecret) => {
      fn.grantPrincipal.addToPrincipalPolicy(
        new PolicyStatement({
          actions: ["secretsmanager:GetSecretValue"],
          resources: [secret.secretFullArn ?? `${secret.secretArn}-??????`],
        }),
      );
      secret.encryptionKey?.grantDecrypt(fn);
    };

    // Each function reads only the tokens it uses ($0.40 a secret a month: three, not one), so
    // that code escaping the application's sandbox in the app function finds the as_token alone.
    const tokensOf: Record<TokenName, IGrantable[]> = {
      asToken: [events, outbox, queries, app, admin],
      hsToken: [transactions, queries],
      adminToken: [admin],
    };
    for (const [token, fns] of Object.entries(tokensOf) as [TokenName, IGrantable[]][])
      for (const fn of fns) readSecret(fn, this.tokenSecrets[token]);
    if (this.remoteSecret) for (const fn of [app, outbox]) readSecret(fn, this.remoteSecret);
    this.grantOperatorConsole(admin, tableActions, sendTo);
    tableActions(transactions, ["PutItem"]);
    sendTo(transactions, this.inboundQueue);
    // The application's data, and what its immediate calls remember (reads, and writes in
    // transactions of puts and deletes).
    for (const fn of [events, app]) {
      tableActions(
        fn,
        ["GetItem", "Query", "PutItem", "DeleteItem"],
        [APP_DATA_KEY_PREFIX, CALL_RECORDS_KEY_PREFIX],
      );
      sendTo(fn, this.outboundQueue);
    }
    // The event IDs the outbox recorded for the sends a webhook request waits for.
    tableActions(app, ["GetItem"], [SERVER_ERRORS_KEY_PREFIX]);
    // Claims: updates only, on the items' claim records.
    tableActions(
      events,
      ["UpdateItem"],
      [CLAIM_KEY_PREFIXES.event, CLAIM_KEY_PREFIXES.item, HASHED_KEY_PREFIX],
    );
    // The inbound items too large for a message, which the transactions function set aside.
    tableActions(events, ["Query"], [SET_ASIDE_KEY_PREFIX]);
    sendTo(events, this.inboundDeadLetterQueue);
    // Queries claim the creation of a user or alias, and remember registered users.
    tableActions(queries, ["GetItem", "PutItem", "UpdateItem"]);
    // The users it registered, the bot's profile; server errors counted and the event IDs of
    // the sends that asked (`OUTBOX#…` items); the links of the portals' message maps (`APP#…`).
    tableActions(outbox, ["GetItem", "PutItem", "UpdateItem"]);
    sendTo(outbox, this.outboundDeadLetterQueue);
    // The event sources grant receive, delete and visibility changes on their queues. Bounded:
    // a flood of rooms must not take the account's concurrency from the transactions function,
    // nor the outbox flood the homeserver.
    events.addEventSource(
      new SqsEventSource(this.inboundQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: props.eventsMaxConcurrency ?? DEFAULT_MAX_CONCURRENCY,
      }),
    );
    outbox.addEventSource(
      new SqsEventSource(this.outboundQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: props.outboxMaxConcurrency ?? DEFAULT_MAX_CONCURRENCY,
      }),
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
      accessLogSettings: {
        destination: new LogGroupLogDestination(accessLogs),
        format: AccessLogFormat.custom(ACCESS_LOG_FORMAT),
      },
    });
    const integrations: Record<Route["handler"], HttpLambdaIntegration> = {
      transactions: new HttpLambdaIntegration("Transactions", this.functions.transactions),
      queries: new HttpLambdaIntegration("Queries", this.functions.queries),
      app: new HttpLambdaIntegration("App", this.functions.app),
      admin: new HttpLambdaIntegration("Admin", admin),
    };
    for (const route of routes) {
      const [httpRoute] = this.api.addRoutes({
        path: route.path,
        methods: [HttpMethod[route.method]],
        integration: integrations[route.handler],
      });
      // The stage's route settings name the routes: they must exist first.
      stage.node.addDependency(httpRoute as HttpRoute);
    }
    // Each route has a throttle of its own: the homeserver's routes apart from the application's
    // public ones, so that a flood of the latter costs the homeserver nothing.
    // (A JSON property: CloudFormation's own casing.)
    const homeserverLimit = props.homeserverRateLimit ?? 100;
    const limitOf = (route: Route) =>
      route.handler === "admin"
        ? OPERATOR_RATE_LIMIT
        : route.handler === "app"
          ? (appRoutes.find((r) => r.method === route.method && r.path === route.path)?.rateLimit ??
            DEFAULT_APP_ROUTE_RATE_LIMIT)
          : homeserverLimit;
    (stage.node.defaultChild as CfnStage).routeSettings = Object.fromEntries(
      routes.map((route) => [
        `${route.method} ${route.path}`,
        { ThrottlingRateLimit: limitOf(route), ThrottlingBurstLimit: limitOf(route) * 2 },
      ]),
    );
    const publicBaseUrl = props.publicBaseUrl ?? this.api.apiEndpoint;
    this.functions.events.addEnvironment(ENV.publicBaseUrl, publicBaseUrl);
    this.functions.app.addEnvironment(ENV.publicBaseUrl, publicBaseUrl);
    this.functions.admin.addEnvironment(ENV.publicBaseUrl, publicBaseUrl);

    this.addAlarms(accessLogs, routes, props.alarmAction);

    const stack = Stack.of(this);
    new CfnOutput(stack, "ApiUrl", {
      value: this.api.apiEndpoint,
      description: "The url of the registration file",
    });
    for (const [token, { output, key }] of Object.entries(TOKEN_OUTPUTS)) {
      new CfnOutput(stack, output, {
        value: arnOf(token as TokenName),
        description: `The secret of the ${key} (a plain string)`,
      });
    }
    if (this.remoteSecret) {
      new CfnOutput(stack, `${remoteSecretId}Arn`, {
        value: this.remoteSecret.secretArn,
        description: `The ${choice.name}'s secret, to give its remote service`,
      });
    }
    new CfnOutput(stack, "Registration", {
      value: stack.toJsonString(props.registration),
      description: "The registration's public fields (npm run registration -- --stack NAME)",
    });
    new CfnOutput(stack, "HomeserverUrl", { value: props.homeserverUrl });

    this.suppressReviewedNagFindings(props.tracing ?? false);
  }

  /**
   * One alarm, over three metrics ($0.30 a month: CloudWatch bills each metric an alarm reads):
   * - problems: one metric that free log metric filters feed: every ERROR log line of every
   *   function (unexpected errors, an application's failures, each failed attempt of an inbound
   *   item and its dead-lettering, dead-lettered calls, an invocation close to its timeout, the
   *   sweep's "dead letters waiting" every 5 minutes until the operator replays or discards), the
   *   runtime's own failures (timeouts, in both of the forms Lambda writes, and crashes), an
   *   outbound call still failing after `OUTBOX_RETRIES_BEFORE_ALARM` attempts, 5xx answers and
   *   integration errors of the API (a function failed or throttled), and every answer but 200 on
   *   a transactions route (the homeserver marks the appservice down on any of them);
   * - the age of the oldest message of each queue (consumers throttled, failing or stuck).
   * It fires at one breaching 5-minute period and clears after `ALARM_CLEAR_PERIODS` clear ones:
   * an outbound call retried at the backoff's cap (5 minutes, jittered) keeps it firing.
   */
  private addAlarms(accessLogs: ILogGroup, routes: Route[], action?: AlarmAction) {
    const namespace = `MatrixAppservice/${this.node.path}`;
    const problems = new Metric({
      namespace,
      metricName: "Problems",
      statistic: "Sum",
      period: Duration.minutes(5),
    });
    const countProblems = (id: string, logGroup: ILogGroup, filterPattern: string) =>
      logGroup.addMetricFilter(id, {
        filterPattern: FilterPattern.literal(filterPattern),
        metricNamespace: namespace,
        metricName: "Problems",
        metricValue: "1",
      });
    for (const [name, fn] of Object.entries(this.functions)) {
      countProblems(`${name}ErrorLines`, fn.logGroup, '{ $.level = "ERROR" }');
      countProblems(`${name}RuntimeFailures`, fn.logGroup, RUNTIME_FAILURES_PATTERN);
    }
    // A retry logs WARN, and SQS's age metric stops counting a message received three times: an
    // unreachable target would stay unseen for the whole retry span.
    countProblems(
      "outboxRetriesPastThreshold",
      this.functions.outbox.logGroup,
      `{ $.level = "WARN" && $.message = "${OUTCOME_LOG_MESSAGES.retry}" && $.attempt >= ${OUTBOX_RETRIES_BEFORE_ALARM} }`,
    );
    // A failed invocation (a throttled function too) shows as an integration error, whatever
    // status API Gateway then answers.
    countProblems("ApiFailures", accessLogs, '{ $.status >= 500 || $.integrationError != "-" }');
    const transactionRoutes = routes
      .filter((route) => route.handler === "transactions")
      .map((route) => `$.routeKey = "${route.method} ${route.path}"`);
    countProblems(
      "TransactionsNotAccepted",
      accessLogs,
      `{ $.status != 200 && (${transactionRoutes.join(" || ")}) }`,
    );
    const age = (queue: Queue) =>
      queue.metricApproximateAgeOfOldestMessage({
        period: Duration.minutes(5),
        statistic: "Maximum",
      });
    const ageThreshold = QUEUE_AGE_ALARM.toSeconds();
    const alarm = new MathExpression({
      // 1 or more: a problem counted, or a queue's oldest message past the threshold. Missing
      // data (nothing logged, an idle queue) counts as 0. One expression per metric, then
      // their maximum: each step a form the metric math docs show.
      expression: "MAX([problemsCount, inboundAgeShare, outboundAgeShare])",
      usingMetrics: {
        problemsCount: new MathExpression({
          expression: "FILL(problems, 0)",
          usingMetrics: { problems },
          period: Duration.minutes(5),
        }),
        inboundAgeShare: new MathExpression({
          expression: `FILL(inboundAge, 0) / ${ageThreshold}`,
          usingMetrics: { inboundAge: age(this.inboundQueue) },
          period: Duration.minutes(5),
        }),
        outboundAgeShare: new MathExpression({
          expression: `FILL(outboundAge, 0) / ${ageThreshold}`,
          usingMetrics: { outboundAge: age(this.outboundQueue) },
          period: Duration.minutes(5),
        }),
      },
      label: "Problems counted, or the oldest message's age over its threshold",
      period: Duration.minutes(5),
    }).createAlarm(this, "Alarm", {
      alarmDescription: `Errors logged by a function (failed items and dead letters included; every ${DEAD_LETTER_SWEEP_MINUTES} minutes while dead letters wait for the operator), timeouts and crashes, invocations within ${NEAR_TIMEOUT_SHARE * 100}% of their timeout, an outbound call failing ${OUTBOX_RETRIES_BEFORE_ALARM} times, API 5xx or integration errors, or an answer but 200 on a transactions route (see the logs); or a queue's oldest message over ${QUEUE_AGE_ALARM.toMinutes()} minutes old (its consumer throttled, failing or held up; the homeserver down?)`,
      threshold: 1,
      evaluationPeriods: ALARM_CLEAR_PERIODS,
      datapointsToAlarm: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    if (action) {
      const topic = action.topicArn
        ? Topic.fromTopicArn(this, "AlarmTopic", action.topicArn)
        : new Topic(this, "AlarmTopic", {
            displayName: "Matrix appservice alarm",
            // cdk-nag AwsSolutions-SNS3: publishers must use TLS.
            enforceSSL: true,
          });
      if (action.email) topic.addSubscription(new EmailSubscription(action.email));
      // Told when it fires and when it clears.
      alarm.addAlarmAction(new SnsAction(topic));
      alarm.addOkAction(new SnsAction(topic));
    }
    this.alarms.push(alarm);
  }

  /** A Node.js function as every one of the stack's is made: bundled here, ESM, ARM64. */
  private nodeFunction(
    name: string,
    entry: string,
    timeout: Duration,
    environment: Record<string, string>,
    {
      logRetention,
      tracing,
      application,
      memorySize = FUNCTION_MEMORY_MB,
      reservedConcurrentExecutions,
    }: {
      logRetention: RetentionDays;
      tracing: boolean;
      memorySize?: number;
      reservedConcurrentExecutions?: number;
      /** The application whose part it runs; none for the deploy-time tokens function. */
      application?: ApplicationChoice;
    },
  ) {
    return new NodejsFunction(this, `${name[0]?.toUpperCase()}${name.slice(1)}Function`, {
      entry: join(projectRoot, entry),
      handler: "handler",
      projectRoot,
      depsLockFilePath: join(projectRoot, "package-lock.json"),
      // Node 22's support ends in April 2027; the code runs on Node 20-24 (local mode, tests).
      runtime: Runtime.NODEJS_24_X,
      architecture: Architecture.ARM_64,
      memorySize,
      ...(reservedConcurrentExecutions !== undefined && { reservedConcurrentExecutions }),
      timeout,
      ...(tracing && { tracing: Tracing.ACTIVE }),
      environment: {
        // Stack traces through the source maps.
        ...({
          NODE_OPTIONS: "--enable-source-maps",
          POWERTOOLS_LOG_LEVEL: "INFO",
        } satisfies Record<(typeof PLATFORM_ENV)[number], string>),
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
        // The chosen application's manifest module as `#application`: its part alone.
        ...(application && {
          esbuildArgs: Object.fromEntries(
            Object.entries(applicationAlias(application.name)).map(([key, path]) => [
              `--alias:${key}`,
              path,
            ]),
          ),
        }),
        // Bundle the AWS SDK too: the version our tests ran, tree-shaken.
        externalModules: [],
        commandHooks: {
          beforeBundling: () => [],
          beforeInstall: () => [],
          afterBundling: (inputDir, outputDir) =>
            application
              ? runtimeFileCommands(
                  runtimeFilesOf(application.name, application.module.manifest, name),
                  inputDir,
                  outputDir,
                )
              : [],
        },
      },
    });
  }

  /**
   * A secret a token, each generated whole by CloudFormation (64 random characters), so a change
   * of the generation settings regenerates a whole token, never a part of one. `AsToken` and
   * `HsToken` have the logical IDs and properties of the stacks before the tokens shared a secret:
   * such a stack keeps both secrets and their values. A stack of the one-secret layout gets
   * its tokens carried over at deploy time (`carryOverTokens`). Retained: a replaced secret (a new
   * logical ID) would hand out tokens the homeserver does not know; the old one stays, to be
   * imported (`tokenSecrets`) or deleted by hand.
   */
  private generateTokenSecrets(options: {
    logRetention: RetentionDays;
    tracing: boolean;
  }): TokenSecrets {
    const generate = (id: string, description: string) =>
      new Secret(this, id, {
        description,
        generateSecretString: {
          passwordLength: TOKEN_GENERATION.PasswordLength,
          excludePunctuation: TOKEN_GENERATION.ExcludePunctuation,
        },
        removalPolicy: RemovalPolicy.RETAIN,
      });
    const secrets: TokenSecrets = {
      // The descriptions the two-secret layout gave them: an unchanged resource.
      asToken: generate("AsToken", "The appservice's as_token (registration file)"),
      hsToken: generate("HsToken", "The appservice's hs_token (registration file)"),
      adminToken: generate("AdminToken", "The appservice's operator console token (admin_token)"),
    };
    const legacyLogicalId = this.legacyTokensSecretLogicalId();
    const generator = this.nodeFunction(
      "tokens",
      TOKENS_SECRET_ENTRY,
      Duration.seconds(30),
      {},
      options,
    );
    const stack = Stack.of(this);
    generator.addToRolePolicy(
      new PolicyStatement({
        actions: ["cloudformation:DescribeStackResource"],
        resources: [
          stack.formatArn({
            service: "cloudformation",
            resource: "stack",
            resourceName: `${stack.stackName}/*`,
          }),
        ],
      }),
    );
    generator.addToRolePolicy(
      new PolicyStatement({
        actions: ["secretsmanager:GetSecretValue"],
        // CloudFormation names a secret after its logical ID, then Secrets Manager adds a suffix.
        resources: [
          stack.formatArn({
            service: "secretsmanager",
            resource: "secret",
            resourceName: `${legacyLogicalId}-*`,
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        ],
      }),
    );
    generator.addToRolePolicy(
      new PolicyStatement({
        actions: ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
        resources: Object.values(secrets).map((secret) => secret.secretArn),
      }),
    );
    this.tokensCarried = new CustomResource(this, "TokensCarried", {
      serviceToken: generator.functionArn,
      resourceType: "Custom::AppserviceTokensCarried",
      properties: {
        LegacyLogicalId: legacyLogicalId,
        AsTokenSecretId: secrets.asToken.secretArn,
        HsTokenSecretId: secrets.hsToken.secretArn,
        AdminTokenSecretId: secrets.adminToken.secretArn,
      },
    });
    NagSuppressions.addResourceSuppressions(
      generator,
      [
        {
          id: "AwsSolutions-IAM5",
          reason:
            "Its own stack (any stack ID of that name) and the one-secret layout's secret, whose name CloudFormation generated from its logical ID and Secrets Manager suffixed.",
          appliesTo: [
            {
              regex:
                "/^Resource::arn:<AWS::Partition>:(cloudformation|secretsmanager):<AWS::Region>:<AWS::AccountId>:.*\\*$/g",
            },
          ],
        },
      ],
      true,
    );
    this.tokensGenerator = generator;
    return secrets;
  }

  /**
   * The logical ID the one-secret layout's `Tokens` secret had (as CloudFormation knows it):
   * made the way CDK makes it, from a placeholder at its path, then removed.
   */
  private legacyTokensSecretLogicalId(): string {
    const placeholder = new Construct(this, "Tokens");
    const id = Stack.of(this).getLogicalId(
      new CfnResource(placeholder, "Resource", { type: "AWS::SecretsManager::Secret" }),
    );
    this.node.tryRemoveChild("Tokens");
    return id;
  }

  /**
   * The operator console: its dead letters taken off the dead-letter queues into the table
   * (`DEADLETTER#…` items, kept until replayed or discarded: the expiry an older version gave
   * them removed) and replayed to the queues, a replayed inbound item's claim reopened and an
   * outbound action's server errors forgotten, the application's data read (webhooks), the
   * queues' depths and ages, the functions' log lines. Every 5 minutes a schedule runs its
   * dead-letter sweep, with these same permissions.
   */
  private grantOperatorConsole(
    admin: NodejsFunction,
    tableActions: (fn: IGrantable, actions: string[], keyPrefixes?: string[]) => void,
    sendTo: (fn: IGrantable, queue: IQueue) => void,
  ) {
    tableActions(admin, ["Query", "PutItem", "DeleteItem", "UpdateItem"], [DEAD_LETTER_KEY_PREFIX]);
    // Dead letters leave their queues (which delete them after 14 days) even when nobody opens
    // the console, and while any wait the sweep logs the ERROR line that keeps the alarm firing.
    new Rule(this, "DeadLetterSweep", {
      description: "Takes the dead letters into the table; logs ERROR while any wait",
      schedule: Schedule.rate(Duration.minutes(DEAD_LETTER_SWEEP_MINUTES)),
      targets: [new LambdaFunction(admin, { retryAttempts: 0 })],
    });
    tableActions(
      admin,
      ["UpdateItem"],
      [CLAIM_KEY_PREFIXES.event, CLAIM_KEY_PREFIXES.item, HASHED_KEY_PREFIX],
    );
    tableActions(admin, ["DeleteItem"], [SERVER_ERRORS_KEY_PREFIX]);
    tableActions(admin, ["GetItem", "Query"], [APP_DATA_KEY_PREFIX]);
    // The outbox's delivery outcomes (the webhooks' last status), and no other call record.
    tableActions(admin, ["GetItem"], [`${CALL_RECORDS_KEY_PREFIX}${DELIVERY_OUTCOMES_COLLECTION}`]);
    for (const queue of [this.inboundDeadLetterQueue, this.outboundDeadLetterQueue]) {
      admin.addToRolePolicy(
        new PolicyStatement({
          actions: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
          resources: [queue.queueArn],
        }),
      );
    }
    for (const queue of [this.inboundQueue, this.outboundQueue]) {
      sendTo(admin, queue);
      admin.addToRolePolicy(
        new PolicyStatement({ actions: ["sqs:GetQueueAttributes"], resources: [queue.queueArn] }),
      );
    }
    admin.addToRolePolicy(
      new PolicyStatement({
        actions: ["logs:FilterLogEvents"],
        resources: Object.values(this.functions)
          .filter((fn) => fn !== admin)
          .map((fn) => fn.logGroup.logGroupArn),
      }),
    );
    // GetMetricData has no resource-level permissions (the queues' age).
    admin.addToRolePolicy(
      new PolicyStatement({ actions: ["cloudwatch:GetMetricData"], resources: ["*"] }),
    );
    NagSuppressions.addResourceSuppressions(
      admin,
      [
        {
          id: "AwsSolutions-IAM5",
          reason:
            "cloudwatch:GetMetricData has no resource-level permissions; the console reads the queues' age with it.",
          appliesTo: ["Resource::*"],
        },
      ],
      true,
    );
  }

  /** cdk-nag findings reviewed and accepted, each with its reason. */
  private suppressReviewedNagFindings(tracing: boolean) {
    const generator = this.tokensGenerator ? [this.tokensGenerator] : [];
    for (const fn of [...Object.values(this.functions), ...generator]) {
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
              "nodejs24.x is the runtime this project targets and tests against (Node 20-24).",
          },
          ...(tracing
            ? [
                {
                  id: "AwsSolutions-IAM5",
                  reason:
                    "X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level permissions.",
                  appliesTo: ["Resource::*"],
                },
              ]
            : []),
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
    if (this.remoteSecret) {
      NagSuppressions.addResourceSuppressions(this.remoteSecret, [
        {
          id: "AwsSolutions-SMG4",
          reason:
            "The remote service holds the same secret: rotating it needs the remote side updated at the same moment, which no Lambda can do.",
        },
      ]);
    }
    for (const secret of Object.values(this.tokenSecrets).filter((s) => s instanceof Secret)) {
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
