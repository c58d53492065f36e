import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Duration, Stack } from "aws-cdk-lib";
import { Rule, Schedule } from "aws-cdk-lib/aws-events";
import { LambdaFunction } from "aws-cdk-lib/aws-events-targets";
import { type IGrantable, PolicyStatement } from "aws-cdk-lib/aws-iam";
import { SqsEventSource } from "aws-cdk-lib/aws-lambda-event-sources";
import type { RetentionDays } from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import type { AppRoute } from "../functions/appservice/application.ts";
import type { Registration } from "../functions/appservice/protocol/registration.ts";
import { botProfile } from "../functions/matrix/bot-profile.ts";
import { DEAD_LETTER_SWEEP_MINUTES } from "../functions/operator/console.ts";
import { addressPolicy } from "../functions/remote/address-policy.ts";
import { CLAIM_KEY_PREFIXES } from "../functions/store/claim-keys.ts";
import { DELIVERY_OUTCOMES_COLLECTION } from "../functions/store/delivery-outcomes.ts";
import {
  APP_DATA_KEY_PREFIX,
  CALL_RECORDS_KEY_PREFIX,
  UNDECRYPTABLE_KEY_PREFIX,
} from "../functions/store/dynamodb/app-data.ts";
import { CRYPTO_KEY_PREFIX } from "../functions/store/dynamodb/crypto-state.ts";
import { DEAD_LETTER_KEY_PREFIX } from "../functions/store/dynamodb/dead-letters.ts";
import { ROOM_KEY_PREFIX, USER_KEY_PREFIX } from "../functions/store/dynamodb/intent-memory.ts";
import { SET_ASIDE_KEY_PREFIX } from "../functions/store/dynamodb/set-aside-items.ts";
import { HASHED_KEY_PREFIX, SERVER_ERRORS_KEY_PREFIX } from "../functions/store/dynamodb/store.ts";
import { botUserIdOf } from "../functions/wiring/deps.ts";
import { ENV, environmentOf, type TokenName } from "../functions/wiring/env.ts";
import { EVENTS_TIMEOUT_MS, OUTBOX_TIMEOUT_MS } from "../functions/wiring/timeouts.ts";
import { type ApplicationChoice, settingsEnvironment } from "./application.ts";
import { AppserviceFunction, PROJECT_ROOT } from "./appservice-function.ts";
import type { AppserviceSecrets } from "./appservice-secrets.ts";
import type { AppserviceStorage } from "./appservice-storage.ts";
import { CRYPTO_FUNCTIONS, functionEntries } from "./bundling.ts";

/** The registration's fields that are not secret; the tokens live in Secrets Manager. */
export type PublicRegistration = Omit<Registration, "as_token" | "hs_token" | "url">;

/** The functions, by the name the route table and `functionEntries` use. */
export type AppserviceFunctionName = keyof typeof functionEntries;

/** How long the events consumer may run; the inbound queue's visibility is six times this. */
export const EVENTS_FUNCTION_TIMEOUT = Duration.millis(EVENTS_TIMEOUT_MS);
/** The homeserver waits 60 s; API Gateway's HTTP API gives up at 30 s. */
export const TRANSACTIONS_FUNCTION_TIMEOUT = Duration.seconds(25);
/** Long enough for two actions that make every call they may, each waiting the full timeout. */
export const OUTBOX_FUNCTION_TIMEOUT = Duration.millis(OUTBOX_TIMEOUT_MS);
/**
 * The application function's memory, from a measurement (docs/performance.md): its bundle (925 KB)
 * loaded, 52 MB RSS (bare Node 39 MB); at its peak, running 200 webhook transformations in the
 * QuickJS sandbox (a worker thread with the WebAssembly engine), 100-103 MB (3 runs, Node 20, heap
 * 10 MB). Lambda's runtime adds ~30 MB: 256 MB would hold it, but Lambda gives CPU in proportion to
 * memory, and a transformation's 100 ms limit is wall-clock time: 512 MB doubles the CPU share.
 */
export const APP_FUNCTION_MEMORY_MB = 512;
/** Event source concurrency when the props do not say. */
export const DEFAULT_MAX_CONCURRENCY = 10;

/** The version the operator console shows: the package's. */
const APP_VERSION = (
  JSON.parse(readFileSync(join(PROJECT_ROOT, "package.json"), "utf8")) as { version: string }
).version;

export interface AppserviceFunctionsProps {
  homeserverUrl: string;
  serverName: string;
  registration: PublicRegistration;
  application: ApplicationChoice;
  /** The application's HTTP routes, which the fallback function tells apart from unknown ones. */
  appRoutes: Pick<AppRoute, "method" | "path">[];
  botProfile?: { displayName?: string; avatarUrl?: string };
  deliveryAllowedAddresses?: readonly string[];
  eventsMaxConcurrency?: number;
  outboxMaxConcurrency?: number;
  transactionsReservedConcurrency?: number;
  appReservedConcurrency?: number;
  logRetention: RetentionDays;
  tracing: boolean;
  storage: AppserviceStorage;
  secrets: AppserviceSecrets;
}

/**
 * The Lambda functions, each with what it alone needs: its environment (the application's
 * settings only to the functions that read them), its permissions (least privilege: the actions
 * its adapters call, on its resources only; the tokens it uses; the table's items by key prefix
 * for those that run the application's code), its event source (the events and outbox
 * functions, bounded), and the operator console's schedule.
 *
 * Made in the appservice's own scope, not a construct of its own: see `MatrixAppservice`.
 */
export class AppserviceFunctions {
  readonly byName: Record<AppserviceFunctionName, AppserviceFunction>;
  private readonly storage: AppserviceStorage;

  constructor(scope: Construct, props: AppserviceFunctionsProps) {
    const { storage, secrets, application: choice } = props;
    this.storage = storage;
    const { table, inboundQueue, inboundDeadLetterQueue, outboundQueue, outboundDeadLetterQueue } =
      storage;
    const arnOf = (token: TokenName) => secrets.tokenSecrets[token].secretArn;

    const botUserId = botUserIdOf(
      (props.registration as Pick<Registration, "sender_localpart">).sender_localpart,
      props.serverName,
    );
    // Checked here, so that a bad avatar stops the synth rather than the outbox.
    const profile = botProfile(
      props.botProfile?.displayName ?? (props.registration as Pick<Registration, "id">).id,
      props.botProfile?.avatarUrl,
    );
    const manifestSecret = choice.module.manifest.remoteSecret;
    const remoteSecretEnvironment = secrets.remoteSecret
      ? environmentOf({ remoteSecretArn: secrets.remoteSecret.secretArn })
      : {};
    // Checked here (a bad range fails the synth, naming it), passed on as the function reads it.
    const deliveryAllowedAddresses = props.deliveryAllowedAddresses?.length
      ? addressPolicy(props.deliveryAllowedAddresses).allowed.join(",")
      : undefined;
    // What the application's code (events and app functions) needs to act.
    // (`PUBLIC_BASE_URL` too, once the API is made: `setPublicBaseUrl`.)
    const serviceEnvironment = environmentOf({
      tableName: table.tableName,
      outboundQueueUrl: outboundQueue.queueUrl,
      botUserId,
      asTokenSecretArn: arnOf("asToken"),
      homeserverUrl: props.homeserverUrl,
      registration: JSON.stringify(props.registration),
      ...(deliveryAllowedAddresses && { deliveryAllowedAddresses }),
    });
    const sizing: Partial<
      Record<AppserviceFunctionName, { memorySize?: number; reservedConcurrentExecutions?: number }>
    > = {
      transactions: { reservedConcurrentExecutions: props.transactionsReservedConcurrency },
      app: {
        memorySize: APP_FUNCTION_MEMORY_MB,
        reservedConcurrentExecutions: props.appReservedConcurrency,
      },
    };
    const create = (
      name: AppserviceFunctionName,
      timeout: Duration,
      environment: Record<string, string>,
    ) =>
      new AppserviceFunction(scope, name, {
        entry: functionEntries[name],
        timeout,
        environment,
        logRetention: props.logRetention,
        tracing: props.tracing,
        application: choice,
        // crypto-wasm's WebAssembly where it is used alone: 7.8 MB less to upload and unzip at
        // each cold start of a deployment without encrypted rooms.
        cryptoWasm: secrets.cryptoStoreSecret !== undefined && CRYPTO_FUNCTIONS.has(name),
        ...sizing[name],
      });

    const functions = {
      transactions: create(
        "transactions",
        TRANSACTIONS_FUNCTION_TIMEOUT,
        environmentOf({
          tableName: table.tableName,
          inboundQueueUrl: inboundQueue.queueUrl,
          hsTokenSecretArn: arnOf("hsToken"),
        }),
      ),
      events: create("events", EVENTS_FUNCTION_TIMEOUT, {
        ...serviceEnvironment,
        ...environmentOf({
          inboundQueueUrl: inboundQueue.queueUrl,
          inboundDeadLetterQueueUrl: inboundDeadLetterQueue.queueUrl,
          ...(secrets.cryptoStoreSecret && {
            cryptoStoreSecretArn: secrets.cryptoStoreSecret.secretArn,
          }),
        }),
        ...settingsEnvironment(choice, "events"),
      }),
      outbox: create("outbox", OUTBOX_FUNCTION_TIMEOUT, {
        ...environmentOf({
          tableName: table.tableName,
          outboundQueueUrl: outboundQueue.queueUrl,
          outboundDeadLetterQueueUrl: outboundDeadLetterQueue.queueUrl,
          asTokenSecretArn: arnOf("asToken"),
          homeserverUrl: props.homeserverUrl,
          botUserId,
          registration: JSON.stringify(props.registration),
          botDisplayName: profile.displayname,
          ...(profile.avatar_url && { botAvatarUrl: profile.avatar_url }),
          ...(deliveryAllowedAddresses && { deliveryAllowedAddresses }),
          // The one origin the outbox signs deliveries to.
          ...(manifestSecret && { remoteServiceUrl: choice.config[manifestSecret.urlSetting] }),
          // Encrypted rooms on: it encrypts the sends into them.
          ...(secrets.cryptoStoreSecret && {
            cryptoStoreSecretArn: secrets.cryptoStoreSecret.secretArn,
          }),
        }),
        ...remoteSecretEnvironment,
      }),
      queries: create("queries", TRANSACTIONS_FUNCTION_TIMEOUT, {
        ...environmentOf({
          tableName: table.tableName,
          asTokenSecretArn: arnOf("asToken"),
          hsTokenSecretArn: arnOf("hsToken"),
          homeserverUrl: props.homeserverUrl,
          botUserId,
          registration: JSON.stringify(props.registration),
        }),
        ...settingsEnvironment(choice, "queries"),
      }),
      fallback: create(
        "fallback",
        Duration.seconds(5),
        environmentOf({
          appRoutes: JSON.stringify(props.appRoutes.map(({ method, path }) => ({ method, path }))),
        }),
      ),
      app: create("app", TRANSACTIONS_FUNCTION_TIMEOUT, {
        ...serviceEnvironment,
        ...remoteSecretEnvironment,
        ...settingsEnvironment(choice, "app"),
      }),
    };
    // The operator console reads the others' log lines for its traffic and errors.
    const admin = create("admin", TRANSACTIONS_FUNCTION_TIMEOUT, {
      ...serviceEnvironment,
      ...settingsEnvironment(choice, "admin"),
      ...environmentOf({
        inboundQueueUrl: inboundQueue.queueUrl,
        inboundDeadLetterQueueUrl: inboundDeadLetterQueue.queueUrl,
        outboundDeadLetterQueueUrl: outboundDeadLetterQueue.queueUrl,
        registration: JSON.stringify(props.registration),
        version: APP_VERSION,
        adminTokenSecretArn: arnOf("adminToken"),
        logGroups: Stack.of(scope).toJsonString(
          Object.fromEntries(
            Object.entries(functions).map(([name, fn]) => [name, fn.logGroup.logGroupName]),
          ),
        ),
      }),
    });
    this.byName = { ...functions, admin };

    // No function runs before its tokens exist.
    for (const fn of Object.values(this.byName)) secrets.runAfterTokens(fn);
    this.grantLeastPrivilege(scope, secrets);
    // The event sources grant receive, delete and visibility changes on their queues. Bounded:
    // a flood of rooms must not take the account's concurrency from the transactions function,
    // nor the outbox flood the homeserver.
    this.byName.events.addEventSource(
      new SqsEventSource(inboundQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: props.eventsMaxConcurrency ?? DEFAULT_MAX_CONCURRENCY,
      }),
    );
    this.byName.outbox.addEventSource(
      new SqsEventSource(outboundQueue, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: props.outboxMaxConcurrency ?? DEFAULT_MAX_CONCURRENCY,
      }),
    );
  }

  /** Where the application's routes are reached, for the functions that make links to them. */
  setPublicBaseUrl(url: string) {
    for (const fn of [this.byName.events, this.byName.app, this.byName.admin])
      fn.addEnvironment(ENV.publicBaseUrl, url);
  }

  /**
   * Least privilege: each function gets the actions its adapters call, on its resources only;
   * the functions that run the application's code, only on the keys they own. (The grants' order
   * is their statements' order in each policy: a deployed stack's policies stay as they are.)
   */
  private grantLeastPrivilege(scope: Construct, secrets: AppserviceSecrets) {
    const { transactions, events, outbox, queries, app, admin } = this.byName;
    const { storage } = this;
    // Each function reads only the tokens it uses ($0.40 a secret a month: three, not one), so
    // that code escaping the application's sandbox in the app function finds the as_token alone.
    const tokensOf: Record<TokenName, IGrantable[]> = {
      asToken: [events, outbox, queries, app, admin],
      hsToken: [transactions, queries],
      adminToken: [admin],
    };
    for (const [token, fns] of Object.entries(tokensOf) as [TokenName, IGrantable[]][])
      for (const fn of fns) secrets.grantToken(fn, token);
    for (const fn of [app, outbox]) secrets.grantRemoteSecret(fn);
    // The events function decrypts, the outbox encrypts: no other reads the devices' state
    // (`CRYPTO#`: a version read, the snapshot's parts written and the replaced ones deleted).
    for (const fn of [events, outbox]) {
      secrets.grantCryptoStoreSecret(fn);
      if (secrets.cryptoStoreSecret) {
        storage.grantTable(
          fn,
          ["GetItem", "Query", "PutItem", "UpdateItem", "BatchWriteItem"],
          [CRYPTO_KEY_PREFIX],
        );
      }
    }
    this.grantOperatorConsole(scope);
    storage.grantTable(transactions, ["PutItem"]);
    storage.grantSend(transactions, storage.inboundQueue);
    // The application's data, what its immediate calls remember (reads, and writes in
    // transactions of puts and deletes), and the Intent's memory they share with the outbox (the
    // users registered, the rooms joined).
    for (const fn of [events, app]) {
      storage.grantTable(
        fn,
        ["GetItem", "Query", "PutItem", "DeleteItem"],
        [APP_DATA_KEY_PREFIX, CALL_RECORDS_KEY_PREFIX, USER_KEY_PREFIX, ROOM_KEY_PREFIX],
      );
      storage.grantSend(fn, storage.outboundQueue);
    }
    // The event IDs the outbox recorded for the sends a webhook request waits for.
    storage.grantTable(app, ["GetItem"], [SERVER_ERRORS_KEY_PREFIX]);
    // Claims: updates only, on the items' claim records.
    storage.grantTable(
      events,
      ["UpdateItem"],
      [CLAIM_KEY_PREFIXES.event, CLAIM_KEY_PREFIXES.item, HASHED_KEY_PREFIX],
    );
    // The encrypted events delivered without their room key, kept until it comes.
    storage.grantTable(events, ["Query", "PutItem", "DeleteItem"], [UNDECRYPTABLE_KEY_PREFIX]);
    // The inbound items too large for a message, which the transactions function set aside.
    storage.grantTable(events, ["Query"], [SET_ASIDE_KEY_PREFIX]);
    storage.grantSend(events, storage.inboundDeadLetterQueue);
    // Queries claim the creation of a user or alias, and remember registered users.
    storage.grantTable(queries, ["GetItem", "PutItem", "UpdateItem"]);
    // The Intent's memory (a user's items read in one query), the bot's profile; server errors
    // counted and the event IDs of the sends that asked (`OUTBOX#…` items); the links of the
    // portals' message maps (`APP#…`).
    storage.grantTable(outbox, ["GetItem", "Query", "PutItem", "UpdateItem"]);
    storage.grantSend(outbox, storage.outboundDeadLetterQueue);
  }

  /**
   * The operator console: its dead letters taken off the dead-letter queues into the table
   * (`DEADLETTER#…` items, kept until replayed or discarded: the expiry an older version gave
   * them removed) and replayed to the queues, a replayed inbound item's claim reopened and an
   * outbound action's server errors forgotten, the application's data read (webhooks), the
   * queues' depths and ages, the functions' log lines. Every 5 minutes a schedule runs its
   * dead-letter sweep, with these same permissions.
   */
  private grantOperatorConsole(scope: Construct) {
    const { admin } = this.byName;
    const { storage } = this;
    storage.grantTable(
      admin,
      ["Query", "PutItem", "DeleteItem", "UpdateItem"],
      [DEAD_LETTER_KEY_PREFIX],
    );
    // Dead letters leave their queues (which delete them after 14 days) even when nobody opens
    // the console, and while any wait the sweep logs the ERROR line that keeps the alarm firing.
    new Rule(scope, "DeadLetterSweep", {
      description: "Takes the dead letters into the table; logs ERROR while any wait",
      schedule: Schedule.rate(Duration.minutes(DEAD_LETTER_SWEEP_MINUTES)),
      targets: [new LambdaFunction(admin, { retryAttempts: 0 })],
    });
    storage.grantTable(
      admin,
      ["UpdateItem"],
      [CLAIM_KEY_PREFIXES.event, CLAIM_KEY_PREFIXES.item, HASHED_KEY_PREFIX],
    );
    storage.grantTable(admin, ["DeleteItem"], [SERVER_ERRORS_KEY_PREFIX]);
    storage.grantTable(admin, ["GetItem", "Query"], [APP_DATA_KEY_PREFIX]);
    // The outbox's delivery outcomes (the webhooks' last status), and no other call record.
    storage.grantTable(
      admin,
      ["GetItem"],
      [`${CALL_RECORDS_KEY_PREFIX}${DELIVERY_OUTCOMES_COLLECTION}`],
    );
    for (const queue of storage.deadLetterQueues) {
      admin.addToRolePolicy(
        new PolicyStatement({
          actions: ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
          resources: [queue.queueArn],
        }),
      );
    }
    for (const queue of [storage.inboundQueue, storage.outboundQueue]) {
      storage.grantSend(admin, queue);
      admin.addToRolePolicy(
        new PolicyStatement({ actions: ["sqs:GetQueueAttributes"], resources: [queue.queueArn] }),
      );
    }
    admin.addToRolePolicy(
      new PolicyStatement({
        actions: ["logs:FilterLogEvents"],
        resources: Object.values(this.byName)
          .filter((fn) => fn !== admin)
          .map((fn) => fn.logGroup.logGroupArn),
      }),
    );
    // GetMetricData has no resource-level permissions (the queues' age).
    admin.addToRolePolicy(
      new PolicyStatement({ actions: ["cloudwatch:GetMetricData"], resources: ["*"] }),
    );
  }
}
