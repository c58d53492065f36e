import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import type { SQSClient } from "@aws-sdk/client-sqs";
import type {
  ApplicationEvents,
  ApplicationQueries,
  ApplicationRoutes,
} from "../appservice/application.ts";
import { INBOUND_RETRY, type InboundRetryPolicy } from "../appservice/pipeline/process-inbound.ts";
import { HsTokens, type HsTokenVersions } from "../appservice/protocol/auth.ts";
import { createNamespaceMatcher, derivedAliasPrefix } from "../appservice/protocol/namespaces.ts";
import type { ServiceDeps } from "../appservice/service-context.ts";
import { BotProfileKeeper, botProfile } from "../matrix/bot-profile.ts";
import { CALL_TIMEOUT_MS, HttpHomeserverCalls } from "../matrix/homeserver-calls.ts";
import { HttpHomeserverClient } from "../matrix/http-client.ts";
import { SqsMessageControl } from "../queue/sqs/message-control.ts";
import { SqsFifoQueue } from "../queue/sqs/queue.ts";
import { addressPolicy } from "../remote/address-policy.ts";
import { HttpRemoteClient } from "../remote/remote-http.ts";
import { type BackoffPolicy, DEFAULT_BACKOFF } from "../shared/backoff.ts";
import type { Log } from "../shared/log.ts";
import type { Metrics } from "../shared/metrics.ts";
import { deliveryOutcomes } from "../store/delivery-outcomes.ts";
import { CALL_RECORDS_KEY_PREFIX, DynamoDbAppData } from "../store/dynamodb/app-data.ts";
import { DynamoDbIntentMemory } from "../store/dynamodb/intent-memory.ts";
import { DynamoDbSetAsideItems } from "../store/dynamodb/set-aside-items.ts";
import { DynamoDbStore } from "../store/dynamodb/store.ts";
import { messageLinker } from "../store/messages.ts";
import type { ClaimStore, TransactionStore } from "../store/store.ts";
import type { Config, TOKEN_SECRET_FIELDS, TokenName } from "./env.ts";
import type {
  AppHandlerDeps,
  EventsDeps,
  OutboxHandlerDeps,
  QueriesDeps,
  TransactionsDeps,
} from "./handler-deps.ts";
import {
  actionBudgetMs,
  EVENTS_RECORD_BUDGET_MS,
  EVENTS_TIMEOUT_MS,
  eventsLeaseMs,
  HOMESERVER_TIMEOUT_MS,
  QUERY_BUDGET_MS,
  QUERY_HOMESERVER_TIMEOUT_MS,
  visibilityTimeoutSeconds,
} from "./timeouts.ts";

/**
 * Every function's dependencies, built one way for Lambda and for local mode: the two differ
 * only in the clients' endpoints, where the tokens come from and how the handlers are triggered.
 */

/** The bot's user ID: the registration's `sender_localpart` on the homeserver's server name. */
export const botUserIdOf = (senderLocalpart: string, serverName: string) =>
  `@${senderLocalpart}:${serverName}`;

/** The appservice's tokens: Secrets Manager in AWS, the registration file in local mode. */
export type SecretSource = (token: "asToken" | "hsToken" | "adminToken") => Promise<string>;

/** What varies between Lambda and local mode, and the knobs tests turn. */
export interface Platform<L extends Log = Log> {
  /** One client per function (per process). */
  dynamodb: DynamoDBClient;
  sqs: SQSClient;
  secrets: SecretSource;
  /**
   * The hs_token's current and previous values, read anew at each call (Secrets Manager's
   * `AWSCURRENT` and `AWSPREVIOUS`). @default the current one alone (`secrets`)
   */
  hsTokenVersions?: () => Promise<HsTokenVersions>;
  /** The secret shared with the remote service (the manifest's `remoteSecret`), for the functions given one. */
  remoteSecret?: () => Promise<string>;
  /**
   * The secret the bot device's crypto state is encrypted under, for the function that does
   * crypto (events): given, encrypted rooms are read (`wiring/crypto.ts`).
   */
  cryptoStoreSecret?: () => Promise<string>;
  /** How long an encrypted event waits for its room key. @default `KEY_WAIT` */
  keyWait?: InboundRetryPolicy;
  log: L;
  metrics: Metrics;
  /** The inbound queue's visibility timeout, which bounds the events' lease. */
  inboundVisibilityTimeoutSeconds?: number;
  leaseMs?: number;
  /** The events function's timeout (local mode's, shortened by tests). @default `EVENTS_TIMEOUT_MS` */
  eventsTimeoutMs?: number;
  inboundRetry?: InboundRetryPolicy;
  backoff?: BackoffPolicy;
  /** How long a room creation's claim holds (`HttpHomeserverCalls`). */
  claimLeaseMs?: number;
  homeserverTimeoutMs?: number;
  queryBudgetMs?: number;
  /** Lets tests put a fault injector around the store. */
  wrapStore?: (store: DynamoDbStore) => TransactionStore & ClaimStore;
}

/** The hs_tokens accepted: during a rotation, the one before too. */
const hsTokensOf = (platform: Platform) =>
  HsTokens.load(
    platform.hsTokenVersions ?? (async () => ({ current: await platform.secrets("hsToken") })),
  );

/** A function's configuration without the secrets' ARNs (read through the `Platform`). */
export type Settings<F extends "transactions" | "events" | "outbox" | "queries" | "app" | "admin"> =
  Omit<
    Config<F>,
    (typeof TOKEN_SECRET_FIELDS)[TokenName] | "remoteSecretArn" | "cryptoStoreSecretArn"
  >;

const stores = (tableName: string, platform: Platform) => {
  const store = new DynamoDbStore(platform.dynamodb, tableName);
  return { store, wrapped: platform.wrapStore ? platform.wrapStore(store) : store };
};

export async function transactionsDeps<L extends Log>(
  config: Settings<"transactions">,
  platform: Platform<L>,
): Promise<TransactionsDeps & { log: L }> {
  return {
    hsTokens: await hsTokensOf(platform),
    transactions: stores(config.tableName, platform).wrapped,
    inboundQueue: new SqsFifoQueue(platform.sqs, config.inboundQueueUrl),
    setAsideItems: new DynamoDbSetAsideItems(platform.dynamodb, config.tableName),
    log: platform.log,
    metrics: platform.metrics,
  };
}

/** What the immediate calls remember, and the outbox's delivery outcomes. */
const callRecords = (tableName: string, platform: Platform) =>
  new DynamoDbAppData(platform.dynamodb, tableName, CALL_RECORDS_KEY_PREFIX);

/** The Intent's one memory: the users registered, the profiles set, the rooms joined. */
const intentMemory = (tableName: string, platform: Platform) =>
  new DynamoDbIntentMemory(platform.dynamodb, tableName);

/** The calls the application's handlers make at once, with their records. */
const homeserverCalls = (config: Settings<"app">, asToken: string, platform: Platform) => {
  const { namespaces } = config.registration;
  const matcher = createNamespaceMatcher(namespaces);
  return new HttpHomeserverCalls({
    homeserver: new HttpHomeserverClient(
      config.homeserverUrl,
      asToken,
      config.botUserId,
      CALL_TIMEOUT_MS,
    ),
    botUserId: config.botUserId,
    records: callRecords(config.tableName, platform),
    intentMemory: intentMemory(config.tableName, platform),
    ownsAlias: (alias) => matcher.matches("aliases", alias),
    derivedAliasPrefix: derivedAliasPrefix(namespaces),
    log: platform.log,
    claimLeaseMs: platform.claimLeaseMs,
  });
};

/** What the application's handlers act with (the events and app functions). */
export async function serviceDeps<L extends Log>(
  config: Settings<"app">,
  platform: Platform<L>,
): Promise<ServiceDeps & { log: L }> {
  // At once: each is a Secrets Manager call on the cold start.
  const [asToken, remoteSecret] = await Promise.all([
    platform.secrets("asToken"),
    platform.remoteSecret?.(),
  ]);
  const namespaces = createNamespaceMatcher(config.registration.namespaces);
  return {
    log: platform.log,
    outboundQueue: new SqsFifoQueue(platform.sqs, config.outboundQueueUrl),
    botUserId: config.botUserId,
    homeserver: homeserverCalls(config, asToken, platform),
    data: new DynamoDbAppData(platform.dynamodb, config.tableName),
    publicBaseUrl: config.publicBaseUrl,
    secretKey: asToken,
    ownsUser: (userId) => namespaces.matches("users", userId),
    deliveryPolicy: addressPolicy(config.deliveryAllowedAddresses),
    deliveryOutcomes: deliveryOutcomes(callRecords(config.tableName, platform)),
    sentEvents: stores(config.tableName, platform).store,
    remoteSecret,
  };
}

export async function appDeps<L extends Log>(
  config: Settings<"app">,
  platform: Platform<L>,
  application: ApplicationRoutes,
): Promise<AppHandlerDeps & { log: L }> {
  return { ...(await serviceDeps(config, platform)), application };
}

export async function eventsDeps<L extends Log>(
  config: Settings<"events">,
  platform: Platform<L>,
  application: ApplicationEvents,
): Promise<EventsDeps & { log: L }> {
  return {
    ...(await serviceDeps(config, platform)),
    claims: stores(config.tableName, platform).wrapped,
    setAsideItems: new DynamoDbSetAsideItems(platform.dynamodb, config.tableName),
    application,
    intentMemory: intentMemory(config.tableName, platform),
    leaseMs:
      platform.leaseMs ??
      eventsLeaseMs(
        platform.inboundVisibilityTimeoutSeconds ?? visibilityTimeoutSeconds(EVENTS_TIMEOUT_MS),
        platform.eventsTimeoutMs,
      ),
    metrics: platform.metrics,
    control: new SqsMessageControl(
      platform.sqs,
      config.inboundQueueUrl,
      config.inboundDeadLetterQueueUrl,
    ),
    retry: platform.inboundRetry ?? INBOUND_RETRY,
    // A shortened timeout (tests) still leaves each message time to start.
    recordBudgetMs: Math.min(
      EVENTS_RECORD_BUDGET_MS,
      (platform.eventsTimeoutMs ?? EVENTS_TIMEOUT_MS) / 2,
    ),
  };
}

export async function outboxDeps<L extends Log>(
  config: Settings<"outbox">,
  platform: Platform<L>,
): Promise<OutboxHandlerDeps & { log: L }> {
  const { store } = stores(config.tableName, platform);
  const memory = intentMemory(config.tableName, platform);
  const users = createNamespaceMatcher(config.registration.namespaces);
  const homeserverTimeoutMs = platform.homeserverTimeoutMs ?? HOMESERVER_TIMEOUT_MS;
  // At once: each is a Secrets Manager call on the cold start.
  const [asToken, remoteSecret] = await Promise.all([
    platform.secrets("asToken"),
    platform.remoteSecret?.(),
  ]);
  return {
    homeserver: new HttpHomeserverClient(
      config.homeserverUrl,
      asToken,
      config.botUserId,
      homeserverTimeoutMs,
    ),
    remote: new HttpRemoteClient({ policy: addressPolicy(config.deliveryAllowedAddresses) }),
    intentMemory: memory,
    serverErrors: store,
    sentEvents: store,
    messages: messageLinker(new DynamoDbAppData(platform.dynamodb, config.tableName)),
    botUserId: config.botUserId,
    isOurUser: (userId: string) => users.matches("users", userId),
    backoff: platform.backoff ?? DEFAULT_BACKOFF,
    log: platform.log,
    botProfile: new BotProfileKeeper(
      config.botUserId,
      botProfile(config.botDisplayName, config.botAvatarUrl),
      memory,
      platform.log,
    ),
    deliveryOutcomes: deliveryOutcomes(callRecords(config.tableName, platform)),
    remoteSecret,
    ...(config.remoteServiceUrl && { remoteOrigin: new URL(config.remoteServiceUrl).origin }),
    metrics: platform.metrics,
    recordBudgetMs: actionBudgetMs(homeserverTimeoutMs),
    actionBudget: {
      callTimeoutMs: homeserverTimeoutMs,
      budgetMs: actionBudgetMs(homeserverTimeoutMs),
    },
    control: new SqsMessageControl(
      platform.sqs,
      config.outboundQueueUrl,
      config.outboundDeadLetterQueueUrl,
    ),
  };
}

export async function queriesDeps<L extends Log>(
  config: Settings<"queries">,
  platform: Platform<L>,
  application: ApplicationQueries,
): Promise<QueriesDeps & { log: L }> {
  const [asToken, hsTokens] = await Promise.all([
    platform.secrets("asToken"),
    hsTokensOf(platform),
  ]);
  const { wrapped } = stores(config.tableName, platform);
  return {
    hsTokens,
    application,
    namespaces: createNamespaceMatcher(config.registration.namespaces),
    homeserver: new HttpHomeserverClient(
      config.homeserverUrl,
      asToken,
      config.botUserId,
      QUERY_HOMESERVER_TIMEOUT_MS,
    ),
    intentMemory: intentMemory(config.tableName, platform),
    claims: wrapped,
    botUserId: config.botUserId,
    log: platform.log,
    budgetMs: platform.queryBudgetMs ?? QUERY_BUDGET_MS,
  };
}
