import { CfnOutput, Stack } from "aws-cdk-lib";
import type { HttpApi } from "aws-cdk-lib/aws-apigatewayv2";
import type { Alarm } from "aws-cdk-lib/aws-cloudwatch";
import type { Table } from "aws-cdk-lib/aws-dynamodb";
import type { NodejsFunction } from "aws-cdk-lib/aws-lambda-nodejs";
import { RetentionDays } from "aws-cdk-lib/aws-logs";
import type { Secret } from "aws-cdk-lib/aws-secretsmanager";
import type { Queue } from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import type { AppRoute } from "../functions/appservice/application.ts";
import { TOKENS_SECRET_KEYS, type TokenName } from "../functions/wiring/env.ts";
import type { ApplicationChoice } from "./application.ts";
import { AppserviceApi } from "./appservice-api.ts";
import {
  type AppserviceFunctionName,
  AppserviceFunctions,
  type PublicRegistration,
} from "./appservice-functions.ts";
import { type AlarmAction, AppserviceMonitoring } from "./appservice-monitoring.ts";
import { suppressReviewedNagFindings } from "./appservice-nag.ts";
import { AppserviceSecrets, type TokenSecrets } from "./appservice-secrets.ts";
import { AppserviceStorage } from "./appservice-storage.ts";

// The parts' settings and types, as embedding apps and the tests know them from here.
export {
  DEFAULT_APP_ROUTE_RATE_LIMIT,
  OPERATOR_RATE_LIMIT,
} from "./appservice-api.ts";
export { FUNCTION_MEMORY_MB } from "./appservice-function.ts";
export {
  APP_FUNCTION_MEMORY_MB,
  DEFAULT_MAX_CONCURRENCY,
  EVENTS_FUNCTION_TIMEOUT,
  OUTBOX_FUNCTION_TIMEOUT,
  type PublicRegistration,
  TRANSACTIONS_FUNCTION_TIMEOUT,
} from "./appservice-functions.ts";
export {
  ALARM_CLEAR_PERIODS,
  type AlarmAction,
  OUTBOX_RETRIES_BEFORE_ALARM,
  QUEUE_AGE_ALARM,
  RUNTIME_FAILURES_PATTERN,
} from "./appservice-monitoring.ts";
export type { TokenSecrets } from "./appservice-secrets.ts";
export { QUEUE_RETENTION } from "./appservice-storage.ts";

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
   * Encrypted rooms read and written (docs/encryption.md): the bot gets a device, the events
   * function decrypts encrypted rooms' messages for the application, and the outbox encrypts what
   * is sent into them, each user with a device of its own. @default false
   */
  encryptedRooms?: boolean;
  /** @deprecated `encryptedRooms`: the name from when encrypted rooms were only read. */
  readEncryptedRooms?: boolean;
  /**
   * The application the functions run: each function's bundle holds its part of that one
   * application alone. `applicationChoice(name, context)` reads one (its manifest, its settings'
   * values, its routes), `defaultApplicationChoice()` the default one (`DEFAULT_APPLICATION`).
   */
  application: ApplicationChoice;
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

/** The stack's output naming each token's secret (`npm run registration` reads them). */
export const TOKEN_OUTPUTS = {
  asToken: { output: "AsTokenSecretArn", key: TOKENS_SECRET_KEYS.asToken },
  hsToken: { output: "HsTokenSecretArn", key: TOKENS_SECRET_KEYS.hsToken },
  adminToken: { output: "AdminTokenSecretArn", key: TOKENS_SECRET_KEYS.adminToken },
} as const satisfies Record<TokenName, { output: string; key: string }>;

/**
 * The whole appservice: HTTP API → Lambda handlers, the DynamoDB table, the inbound and outbound
 * FIFO queues with their dead-letter queues, the token secrets, the alarm. Embed it in any CDK app.
 *
 * It composes its parts, one a job, each in a file of its own: `AppserviceStorage` (table,
 * queues), `AppserviceSecrets` (tokens, the remote service's secret), `AppserviceFunctions` (the
 * functions, their environments and least-privilege grants), `AppserviceApi` (routes, throttles,
 * access log), `AppserviceMonitoring` (metric filters, alarm) and `suppressReviewedNagFindings`.
 *
 * The parts make their resources in this construct's scope, not in constructs of their own, on
 * purpose: a construct's id is part of the logical ID of every resource under it, and of ids CDK
 * derives from paths (an event source mapping's names its queue's path, the sweep schedule's
 * permission its function's). Resources moved under a part would be new resources to
 * CloudFormation: the table and the queues replaced (the old ones orphaned, being retained, with
 * their items and messages), the token secrets generated anew. Made here, every resource keeps the
 * path, and so the logical ID, a deployed stack knows it by: a stack of an older version updates
 * in place.
 */
export class MatrixAppservice extends Construct {
  readonly api: HttpApi;
  readonly table: Table;
  readonly inboundQueue: Queue;
  readonly inboundDeadLetterQueue: Queue;
  readonly outboundQueue: Queue;
  readonly outboundDeadLetterQueue: Queue;
  readonly functions: Record<AppserviceFunctionName, NodejsFunction>;
  /** A secret for each token, its value the token itself. */
  readonly tokenSecrets: TokenSecrets;
  /**
   * The secret shared with the application's remote service (a plain string), when its manifest
   * declares `remoteSecret`.
   */
  readonly remoteSecret?: Secret;
  readonly alarms: Alarm[];

  constructor(scope: Construct, id: string, props: MatrixAppserviceProps) {
    super(scope, id);
    const logRetention = props.logRetention ?? RetentionDays.ONE_MONTH;
    const tracing = props.tracing ?? false;
    const { application } = props;
    const appRoutes = (props.appRoutes ?? application.application.routes ?? []).map(
      ({ method, path, rateLimit }) => ({ method, path, rateLimit }),
    );

    const storage = new AppserviceStorage(this, {
      ...(props.tableDeletionProtection !== undefined && {
        tableDeletionProtection: props.tableDeletionProtection,
      }),
    });
    const secrets = new AppserviceSecrets(this, {
      ...(props.tokenSecrets && { tokenSecrets: props.tokenSecrets }),
      application,
      encryptedRooms: props.encryptedRooms ?? props.readEncryptedRooms ?? false,
      logRetention,
      tracing,
    });
    const functions = new AppserviceFunctions(this, {
      ...props,
      appRoutes,
      logRetention,
      tracing,
      storage,
      secrets,
    });
    const http = new AppserviceApi(this, {
      handlers: functions.byName,
      appRoutes,
      ...(props.apiRateLimit !== undefined && { apiRateLimit: props.apiRateLimit }),
      ...(props.homeserverRateLimit !== undefined && {
        homeserverRateLimit: props.homeserverRateLimit,
      }),
      logRetention,
    });
    functions.setPublicBaseUrl(props.publicBaseUrl ?? http.api.apiEndpoint);
    const monitoring = new AppserviceMonitoring(this, {
      namespace: `MatrixAppservice/${this.node.path}`,
      functions: functions.byName,
      accessLogs: http.accessLogs,
      routes: http.routes,
      inboundQueue: storage.inboundQueue,
      outboundQueue: storage.outboundQueue,
      ...(props.alarmAction && { action: props.alarmAction }),
    });

    this.api = http.api;
    this.table = storage.table;
    this.inboundQueue = storage.inboundQueue;
    this.inboundDeadLetterQueue = storage.inboundDeadLetterQueue;
    this.outboundQueue = storage.outboundQueue;
    this.outboundDeadLetterQueue = storage.outboundDeadLetterQueue;
    this.functions = functions.byName;
    this.tokenSecrets = secrets.tokenSecrets;
    if (secrets.remoteSecret) this.remoteSecret = secrets.remoteSecret;
    this.alarms = [monitoring.alarm];

    this.addOutputs(props, secrets);
    suppressReviewedNagFindings({
      functions: Object.values(functions.byName),
      admin: functions.byName.admin,
      api: http.api,
      deadLetterQueues: storage.deadLetterQueues,
      secrets,
      tracing,
    });
  }

  /** The stack's outputs: what `npm run registration` and the operator read. */
  private addOutputs(props: MatrixAppserviceProps, secrets: AppserviceSecrets) {
    const stack = Stack.of(this);
    new CfnOutput(stack, "ApiUrl", {
      value: this.api.apiEndpoint,
      description: "The url of the registration file",
    });
    for (const [token, { output, key }] of Object.entries(TOKEN_OUTPUTS)) {
      new CfnOutput(stack, output, {
        value: this.tokenSecrets[token as TokenName].secretArn,
        description: `The secret of the ${key} (a plain string)`,
      });
    }
    if (secrets.remoteSecret) {
      new CfnOutput(stack, `${secrets.remoteSecretId}Arn`, {
        value: secrets.remoteSecret.secretArn,
        description: `The ${props.application.name}'s secret, to give its remote service`,
      });
    }
    new CfnOutput(stack, "Registration", {
      value: stack.toJsonString(props.registration),
      description: "The registration's public fields (npm run registration -- --stack NAME)",
    });
    new CfnOutput(stack, "HomeserverUrl", { value: props.homeserverUrl });
  }
}
