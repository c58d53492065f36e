// Local mode's core, shared by its two ways of running the functions: in this thread
// (`local.ts`, the tests') and each in a worker thread (`local-workers.ts`, `npm start`'s).
import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Application } from "../appservice/application.ts";
import {
  INBOUND_MAX_RECEIVE_COUNT,
  type InboundRetryPolicy,
} from "../appservice/pipeline/process-inbound.ts";
import { missingNamespaces } from "../appservice/protocol/namespaces.ts";
import {
  ephemeralFlagToAdd,
  generateToken,
  loadRegistration,
  newRegistration,
  type Registration,
  registrationYaml,
} from "../appservice/protocol/registration.ts";
import { routeTable } from "../appservice/protocol/routes.ts";
import { DEAD_LETTER_SWEEP_MINUTES } from "../operator/console.ts";
import { LOOPBACK_RANGES } from "../remote/address-policy.ts";
import { type BackoffPolicy, OUTBOUND_MAX_RECEIVE_COUNT } from "../shared/backoff.ts";
import type { Log } from "../shared/log.ts";
import { CountingMetrics } from "../shared/metrics.ts";
import { ensureTable } from "../store/dynamodb/table.ts";

import { botUserIdOf } from "../wiring/deps.ts";
import { trimBaseUrl } from "../wiring/env.ts";
import { applicationModuleOf } from "./applications.ts";
import { localDynamoDb, localSqs } from "./aws-clients.ts";
import { startDynamoDbLocal } from "./dynamodb-local.ts";
import type { FunctionWorkerData } from "./function-worker.ts";
import type { LocalFunctionsConfig, Tuning } from "./functions.ts";
import { keepQueues, restoreQueues } from "./queue-snapshot.ts";
import { ensureFifoQueue, type FifoQueueWithDlq } from "./queues.ts";
import { startSqsLocal } from "./sqs-local.ts";
/** What local mode takes, however its functions run. */
export interface LocalCommonOptions {
  /** 0 picks a free port. */
  port: number;
  /** Loaded if it exists, else written with fresh tokens. */
  registrationPath: string;
  homeserverUrl: string;
  serverName: string;
  /**
   * Keeps DynamoDB's tables in this folder across restarts, and the queues across a clean stop
   * (the fauxqs this start runs); all in memory without it. Made if it does not exist.
   */
  dataDir?: string;
  /** Use a running DynamoDB (Local) instead of starting one. */
  dynamodbEndpoint?: string;
  /** Use a running SQS (fauxqs) instead of starting one. */
  sqsEndpoint?: string;
  tableName?: string;
  queuePrefix?: string;
  visibilityTimeoutSeconds?: number;
  /** Receives of an inbound message before the queue's own redrive (a last resort). */
  maxReceiveCount?: number;
  /** How the events consumer retries an item the application fails on. */
  inboundRetry?: InboundRetryPolicy;
  leaseMs?: number;
  /**
   * The events function's timeout: a batch still running then is abandoned, as Lambda ends it.
   * @default `EVENTS_TIMEOUT_MS`
   */
  eventsTimeoutMs?: number;
  pollers?: number;
  log?: Log;
  /** The outbox's retry policy for 5xx, timeouts and refused connections. */
  backoff?: BackoffPolicy;
  /** How long a room creation's claim holds. @default `CLAIM_LEASE_MS` */
  claimLeaseMs?: number;
  /** How long the outbox waits for the homeserver's answer. @default `HOMESERVER_TIMEOUT_MS` */
  homeserverTimeoutMs?: number;
  /** How long a user/alias query may spend on the homeserver. @default 10 s */
  queryBudgetMs?: number;
  /** Where the application's routes are reached from outside. @default the local URL */
  publicBaseUrl?: string;
  /** The bot's display name. @default the registration's `id` */
  botDisplayName?: string;
  /** The bot's avatar, an `mxc://` URI. @default none */
  botAvatarUrl?: string;
  /** The operator console's token (`/admin`). @default a fresh one (`LocalAppservice.adminToken`) */
  adminToken?: string;
  /** The version the console shows. @default the package's */
  version?: string;
  /**
   * CIDR ranges deliveries (`actions.deliver`) may reach though not public.
   * @default loopback (`LOOPBACK_RANGES`): a remote service on this machine
   */
  deliveryAllowedAddresses?: readonly string[];
  /**
   * The secret shared with the remote service (the manifest's `remoteSecret`): the application's routes check
   * requests with it, the outbox signs deliveries. @default none (every check fails)
   */
  remoteSecret?: string;
  /**
   * How often the dead letters are taken off their queues into the table, and those waiting
   * logged at ERROR, as the stack's schedule does. @default 5 minutes
   */
  deadLetterSweepMs?: number;
  /**
   * The secret the bot device's crypto state is encrypted under: given, encrypted rooms are
   * read (the events function decrypts). @default none: encrypted events reach the application
   * as they came
   */
  cryptoStoreSecret?: string;
  /** How long an encrypted event waits for its room key. @default `KEY_WAIT` */
  keyWait?: InboundRetryPolicy;
  /** The remote service the secret is shared with: the one origin the outbox signs deliveries to. */
  remoteServiceUrl?: string;
  /** The URL of the manifest module of the application to run. @default the default application's */
  applicationModule?: string;
}

export interface LocalAppservice {
  url: string;
  port: number;
  registration: Registration;
  /** True when the registration file was written by this start. */
  registrationCreated: boolean;
  dynamodbEndpoint: string;
  sqsEndpoint: string;
  inboundQueueUrl: string;
  inboundDeadLetterUrl: string;
  outboundQueueUrl: string;
  outboundDeadLetterUrl: string;
  botUserId: string;
  tableName: string;
  /** What the handlers counted since the start. */
  metrics: CountingMetrics;
  /** The application's own routes, as reached from outside. */
  appRoutes: string[];
  /** The operator console's token. */
  adminToken: string;
  /** What deliveries may reach beyond public addresses. */
  deliveryAllowedAddresses: readonly string[];
  /** The DynamoDB Local Java process, when this start spawned one. */
  dynamodbPid?: number;
  /** Where the queues' messages are kept from a clean stop to the next start, if they are. */
  queuesFile?: string;
  /** SQS batches the pollers are handling now (tests wait for 0). */
  handlersRunning(): number;
  stop(): Promise<void>;
}

/** The version the console shows: the package's. */
const packageVersion = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  }
).version;

/** The registration's tokens, where AWS reads Secrets Manager. */
export type FunctionTokens = FunctionWorkerData["tokens"];

/** What is stopped at the end, the last started first. */
export type Stops = (() => Promise<void>)[];

/** How the functions run: the one difference between `startLocal` and `startLocalWorkers`. */
export interface Strategy {
  /** The application, for its routes and the namespaces it needs. */
  application(applicationModule: string): Promise<Application>;
  /** Listens, or picks the port the functions will listen on: the port. */
  listen(
    routes: ReturnType<typeof routeTable>,
    hsToken: () => string | undefined,
    stops: Stops,
  ): Promise<number>;
  /** Starts the functions: what tells how many SQS batches they are handling. */
  run(started: Started, stops: Stops): Promise<() => number>;
}

/** The storage both strategies run on: DynamoDB with its table, SQS with the queues. */
interface Storage {
  dynamodb: ReturnType<typeof localDynamoDb>;
  sqs: ReturnType<typeof localSqs>;
  dynamodbEndpoint: string;
  sqsEndpoint: string;
  tableName: string;
  inbound: FifoQueueWithDlq;
  outbound: FifoQueueWithDlq;
  dynamodbPid?: number;
  queuesFile?: string;
}

/** What the strategy's functions are started with. */
export interface Started {
  storage: Storage;
  application: Application;
  applicationModule: string;
  port: number;
  config: LocalFunctionsConfig;
  tokens: FunctionTokens;
  tuning: Tuning;
  metrics: CountingMetrics;
}

/**
 * The core both strategies share: the registration, the storage, the gateway's port (from
 * `strategy.listen`), the functions' configuration; then the functions (`strategy.run`). A start
 * that fails stops what it had started.
 */
export async function startWith(
  options: LocalCommonOptions,
  log: Log,
  strategy: Strategy,
): Promise<LocalAppservice> {
  const adminToken = options.adminToken ?? generateToken();
  // A bad registration file fails here, before any child process starts.
  const existing = existsSync(options.registrationPath)
    ? await loadRegistration(options.registrationPath)
    : undefined;
  const stops: Stops = [];
  const stop = async () => {
    for (const stopOne of stops.reverse()) await stopOne().catch(() => undefined);
    stops.length = 0;
  };
  try {
    const storage = await startStorage(options, log, stops);
    const applicationModule = options.applicationModule ?? applicationModuleOf();
    const application = await strategy.application(applicationModule);
    let registration = existing;
    const port = await strategy.listen(
      routeTable(application.routes ?? []),
      () => registration?.hs_token,
      stops,
    );
    const url = `http://127.0.0.1:${port}`;
    registration ??= await writeRegistration(options, url, application);
    warnAboutRegistration(registration, options.serverName, application, log);
    const botUserId = botUserIdOf(registration.sender_localpart, options.serverName);
    // The registration's tokens, where AWS reads Secrets Manager.
    const tokens: FunctionTokens = {
      asToken: registration.as_token,
      hsToken: registration.hs_token,
      adminToken,
      ...(options.remoteSecret && { remoteSecret: options.remoteSecret }),
      ...(options.cryptoStoreSecret && { cryptoStoreSecret: options.cryptoStoreSecret }),
    };
    const deliveryAllowedAddresses = [...(options.deliveryAllowedAddresses ?? LOOPBACK_RANGES)];
    const publicBaseUrl = trimBaseUrl(options.publicBaseUrl ?? url);
    const metrics = new CountingMetrics();
    const handlersRunning = await strategy.run(
      {
        storage,
        application,
        applicationModule,
        port,
        config: functionsConfig(options, storage, {
          registration,
          botUserId,
          publicBaseUrl,
          deliveryAllowedAddresses,
        }),
        tokens,
        tuning: tuningOf(options),
        metrics,
      },
      stops,
    );
    return {
      url,
      port,
      registration,
      registrationCreated: !existing,
      adminToken,
      dynamodbEndpoint: storage.dynamodbEndpoint,
      sqsEndpoint: storage.sqsEndpoint,
      inboundQueueUrl: storage.inbound.url,
      inboundDeadLetterUrl: storage.inbound.deadLetterUrl,
      outboundQueueUrl: storage.outbound.url,
      outboundDeadLetterUrl: storage.outbound.deadLetterUrl,
      botUserId,
      tableName: storage.tableName,
      metrics,
      appRoutes: (application.routes ?? []).map(
        (route) => `${route.method} ${publicBaseUrl}${route.path}`,
      ),
      deliveryAllowedAddresses,
      ...(storage.dynamodbPid !== undefined && { dynamodbPid: storage.dynamodbPid }),
      ...(storage.queuesFile && { queuesFile: storage.queuesFile }),
      handlersRunning,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * DynamoDB Local and fauxqs (those not given as endpoints), the table and the queues; with a
 * data folder, the queued messages of the last clean stop restored, and kept again at the stop.
 */
async function startStorage(options: LocalCommonOptions, log: Log, stops: Stops): Promise<Storage> {
  // Made if missing, also when DynamoDB runs elsewhere: the queues are kept there at a stop.
  if (options.dataDir) await mkdir(options.dataDir, { recursive: true });
  const [dynamo, sqsLocal] = await Promise.all([
    options.dynamodbEndpoint
      ? undefined
      : startDynamoDbLocal(options.dataDir ? { dataDir: options.dataDir } : {}),
    options.sqsEndpoint ? undefined : startSqsLocal(),
  ]);
  if (dynamo) stops.push(dynamo.stop);
  if (sqsLocal) stops.push(sqsLocal.stop);
  const dynamodbEndpoint = options.dynamodbEndpoint ?? (dynamo?.endpoint as string);
  const sqsEndpoint = options.sqsEndpoint ?? (sqsLocal?.endpoint as string);
  const dynamodb = localDynamoDb(dynamodbEndpoint);
  const sqs = localSqs(sqsEndpoint);
  stops.push(async () => {
    dynamodb.destroy();
    sqs.destroy();
  });
  const tableName = options.tableName ?? "appservice";
  const visibilityTimeoutSeconds = visibilityTimeoutOf(options);
  const queuePrefix = options.queuePrefix ?? "appservice";
  const [, inbound, outbound] = await Promise.all([
    ensureTable(dynamodb, tableName),
    ensureFifoQueue(sqs, `${queuePrefix}-inbound`, {
      visibilityTimeoutSeconds,
      maxReceiveCount: options.maxReceiveCount ?? INBOUND_MAX_RECEIVE_COUNT,
    }),
    // The outbox chooses its own waits; redrive is only the last resort.
    ensureFifoQueue(sqs, `${queuePrefix}-outbound`, {
      visibilityTimeoutSeconds,
      maxReceiveCount: OUTBOUND_MAX_RECEIVE_COUNT,
    }),
  ]);
  const queuesFile =
    options.dataDir && sqsLocal ? join(options.dataDir, `${queuePrefix}-queues.jsonl`) : undefined;
  if (sqsLocal && queuesFile) {
    const queueUrls = new Map(
      [inbound, outbound]
        .flatMap((queue) => [queue.url, queue.deadLetterUrl])
        .map((url) => [url.slice(url.lastIndexOf("/") + 1), url]),
    );
    const restored = await restoreQueues(sqs, queueUrls, queuesFile);
    if (restored > 0) log.info("queued messages restored", { from: queuesFile, restored });
    // At a stop, once the server and the pollers are done: nothing is sent or received then.
    stops.push(async () => {
      try {
        const kept = await keepQueues(sqsLocal, [...queueUrls.keys()], queuesFile);
        if (kept > 0) log.info("queued messages kept for the next start", { in: queuesFile, kept });
      } catch (error) {
        log.error("the queued messages could not be kept: they are lost", { error });
      }
    });
  }
  return {
    dynamodb,
    sqs,
    dynamodbEndpoint,
    sqsEndpoint,
    tableName,
    inbound,
    outbound,
    ...(dynamo && { dynamodbPid: dynamo.pid }),
    ...(queuesFile && { queuesFile }),
  };
}

const visibilityTimeoutOf = (options: LocalCommonOptions) => options.visibilityTimeoutSeconds ?? 30;

/** A fresh registration for the application, listening at `url`, written to its path. */
async function writeRegistration(
  options: LocalCommonOptions,
  url: string,
  application: Application,
): Promise<Registration> {
  // No id: a fresh one each, so that two starts' registrations can share a homeserver.
  const registration = newRegistration({
    url,
    senderLocalpart: "appservice",
    serverName: options.serverName,
    prefix: "_as_",
    ...(application.userPrefixes && { userPrefixes: application.userPrefixes }),
    ...(application.aliasPrefixes && { aliasPrefixes: application.aliasPrefixes }),
  });
  await writeFile(options.registrationPath, registrationYaml(registration), { mode: 0o600 });
  return registration;
}

/** Warns of what the registration lacks; the application still starts. */
function warnAboutRegistration(
  registration: Registration,
  serverName: string,
  application: Application,
  log: Log,
) {
  // Only its acts as (or on) the missing ones fail.
  for (const add of missingNamespaces(registration.namespaces, serverName, application)) {
    log.warn("the registration misses a namespace the application needs", { add });
  }
  const ephemeralFlag = ephemeralFlagToAdd(registration);
  if (ephemeralFlag) {
    log.warn(
      "the registration asks for ephemeral events under one name only: some Synapse releases read the other",
      { add: `${ephemeralFlag}: true` },
    );
  }
}

/** The platform's knobs the options turn. */
function tuningOf(options: LocalCommonOptions): Tuning {
  return {
    inboundVisibilityTimeoutSeconds: visibilityTimeoutOf(options),
    ...(options.leaseMs !== undefined && { leaseMs: options.leaseMs }),
    ...(options.eventsTimeoutMs !== undefined && { eventsTimeoutMs: options.eventsTimeoutMs }),
    ...(options.inboundRetry && { inboundRetry: options.inboundRetry }),
    ...(options.backoff && { backoff: options.backoff }),
    ...(options.claimLeaseMs !== undefined && { claimLeaseMs: options.claimLeaseMs }),
    ...(options.homeserverTimeoutMs !== undefined && {
      homeserverTimeoutMs: options.homeserverTimeoutMs,
    }),
    ...(options.queryBudgetMs !== undefined && { queryBudgetMs: options.queryBudgetMs }),
    ...(options.keyWait && { keyWait: options.keyWait }),
  };
}

/** The configuration the stack would give each function, with the local endpoints' names. */
function functionsConfig(
  options: LocalCommonOptions,
  { tableName, inbound, outbound }: Storage,
  {
    registration,
    botUserId,
    publicBaseUrl,
    deliveryAllowedAddresses,
  }: {
    registration: Registration;
    botUserId: string;
    publicBaseUrl: string;
    deliveryAllowedAddresses: string[];
  },
): LocalFunctionsConfig {
  const service = {
    tableName,
    outboundQueueUrl: outbound.url,
    botUserId,
    homeserverUrl: options.homeserverUrl,
    publicBaseUrl,
    registration,
    deliveryAllowedAddresses,
  };
  return {
    settings: {
      transactions: { tableName, inboundQueueUrl: inbound.url },
      events: {
        ...service,
        inboundQueueUrl: inbound.url,
        inboundDeadLetterQueueUrl: inbound.deadLetterUrl,
      },
      outbox: {
        tableName,
        outboundQueueUrl: outbound.url,
        outboundDeadLetterQueueUrl: outbound.deadLetterUrl,
        homeserverUrl: options.homeserverUrl,
        botUserId,
        registration,
        botDisplayName: options.botDisplayName ?? registration.id,
        botAvatarUrl: options.botAvatarUrl,
        deliveryAllowedAddresses,
        ...(options.remoteServiceUrl && { remoteServiceUrl: options.remoteServiceUrl }),
      },
      queries: { tableName, homeserverUrl: options.homeserverUrl, botUserId, registration },
      app: service,
      admin: {
        ...service,
        inboundQueueUrl: inbound.url,
        inboundDeadLetterQueueUrl: inbound.deadLetterUrl,
        outboundDeadLetterQueueUrl: outbound.deadLetterUrl,
        version: options.version ?? packageVersion,
        logGroups: {},
      },
    },
    queues: { inbound, outbound },
    pollers: options.pollers ?? 4,
    deadLetterSweepMs: options.deadLetterSweepMs ?? DEAD_LETTER_SWEEP_MINUTES * 60_000,
  };
}
