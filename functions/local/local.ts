import { existsSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
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
import { type Route, routeTable } from "../appservice/protocol/routes.ts";
import { createFallbackHandler } from "../handlers/fallback.ts";
import { createLogger } from "../handlers/shared/logger.ts";
import { DEAD_LETTER_SWEEP_MINUTES } from "../operator/console.ts";
import { forwardTrafficLines, type LogLine, RecentLogLines } from "../operator/traffic.ts";
import { LOOPBACK_RANGES } from "../remote/address-policy.ts";
import { type BackoffPolicy, OUTBOUND_MAX_RECEIVE_COUNT } from "../shared/backoff.ts";
import type { Log } from "../shared/log.ts";
import { CountingMetrics } from "../shared/metrics.ts";
import type { DynamoDbStore } from "../store/dynamodb/store.ts";
import { ensureTable } from "../store/dynamodb/table.ts";
import type { ClaimStore, TransactionStore } from "../store/store.ts";
import { botUserIdOf, type Platform } from "../wiring/deps.ts";
import { trimBaseUrl } from "../wiring/env.ts";
import { applicationModuleOf, loadApplication } from "./applications.ts";
import { localDynamoDb, localSqs } from "./aws-clients.ts";
import { startDynamoDbLocal } from "./dynamodb-local.ts";
import { freePort } from "./free-port.ts";
import {
  httpHandlers,
  type LocalFunctionsConfig,
  startConsumer,
  startSchedule,
  type Tuning,
} from "./functions.ts";
import { closeGracefully, createGateway, type HttpHandler } from "./gateway.ts";
import { keepQueues, restoreQueues } from "./queue-snapshot.ts";
import { ensureFifoQueue } from "./queues.ts";
import { startSqsLocal } from "./sqs-local.ts";
import { type SupervisedFunction, superviseFunction } from "./workers.ts";

export interface LocalOptions {
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
  /** The application, run in this thread (without `workers`). @default `applicationModule`'s */
  application?: Application;
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
  /** The remote service the secret is shared with: the one origin the outbox signs deliveries to. */
  remoteServiceUrl?: string;
  /** Lets tests put a fault injector around the store (without `workers`). */
  wrapStore?: (store: DynamoDbStore) => TransactionStore & ClaimStore;
  /**
   * Runs the HTTP functions and each queue consumer in a worker thread of its own, as Lambda runs
   * each function apart (`npm start` does): a consumer's CPU burst or crash cannot delay or stop
   * the acks, and a crashed function is started again. The functions then load the application
   * from `applicationModule` and log with their own logger; `application` and `wrapStore` are
   * refused.
   */
  workers?: boolean;
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

/**
 * The whole appservice on one machine: DynamoDB Local and fauxqs on 127.0.0.1, the table and
 * queues, the same handlers behind an API-Gateway-like HTTP server, and pollers driving the
 * SQS handlers as Lambda's event source mappings do.
 */
export async function startLocal(options: LocalOptions): Promise<LocalAppservice> {
  // The console's recent traffic and errors: the last log lines, kept in memory by the thread
  // that serves the console; with workers, the lines of this thread go to it too.
  const recentLines = new RecentLogLines();
  let httpFunction: SupervisedFunction | undefined;
  const baseLog = options.log ?? createLogger();
  const log = options.workers
    ? forwardTrafficLines(baseLog, (line) => httpFunction?.addLogLine(line))
    : recentLines.tee(baseLog);
  const adminToken = options.adminToken ?? generateToken();
  // A bad registration file fails here, before any child process starts.
  const existing = existsSync(options.registrationPath)
    ? await loadRegistration(options.registrationPath)
    : undefined;
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const stopOne of stops.reverse()) await stopOne().catch(() => undefined);
    stops.length = 0;
  };
  try {
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
    const visibilityTimeoutSeconds = options.visibilityTimeoutSeconds ?? 30;
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
      options.dataDir && sqsLocal
        ? join(options.dataDir, `${queuePrefix}-queues.jsonl`)
        : undefined;
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
          if (kept > 0)
            log.info("queued messages kept for the next start", { in: queuesFile, kept });
        } catch (error) {
          log.error("the queued messages could not be kept: they are lost", { error });
        }
      });
    }

    if (options.workers && (options.application || options.wrapStore)) {
      throw new Error("With workers, the functions load the application from applicationModule");
    }
    const applicationModule = options.applicationModule ?? applicationModuleOf();
    const application =
      options.application ?? (await loadApplication(applicationModule)).application;
    const routes = routeTable(application.routes ?? []);
    let handlers: Record<Route["handler"], HttpHandler> | undefined;
    let registration = existing;
    let port: number;
    if (options.workers) {
      // The HTTP functions' worker listens there once it is ready.
      port = options.port === 0 ? await freePort() : options.port;
    } else {
      const server = createGateway({
        routes,
        handlers: () => handlers,
        hsToken: () => registration?.hs_token,
        fallback: createFallbackHandler(routes, log),
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port, "127.0.0.1", resolve);
      });
      stops.push(() => closeGracefully(server));
      port = (server.address() as AddressInfo).port;
    }
    const url = `http://127.0.0.1:${port}`;

    if (!registration) {
      // No id: a fresh one each, so that two starts' registrations can share a homeserver.
      registration = newRegistration({
        url,
        senderLocalpart: "appservice",
        serverName: options.serverName,
        prefix: "_as_",
        ...(application.userPrefixes && { userPrefixes: application.userPrefixes }),
        ...(application.aliasPrefixes && { aliasPrefixes: application.aliasPrefixes }),
      });
      await writeFile(options.registrationPath, registrationYaml(registration), { mode: 0o600 });
    }

    // The application still starts: only its acts as (or on) the missing ones fail.
    for (const add of missingNamespaces(registration.namespaces, options.serverName, application)) {
      log.warn("the registration misses a namespace the application needs", { add });
    }

    const ephemeralFlag = ephemeralFlagToAdd(registration);
    if (ephemeralFlag) {
      log.warn(
        "the registration asks for ephemeral events under one name only: some Synapse releases read the other",
        { add: `${ephemeralFlag}: true` },
      );
    }

    const botUserId = botUserIdOf(registration.sender_localpart, options.serverName);
    const metrics = new CountingMetrics();
    // The registration's tokens, where AWS reads Secrets Manager.
    const tokens = {
      asToken: registration.as_token,
      hsToken: registration.hs_token,
      adminToken,
      ...(options.remoteSecret && { remoteSecret: options.remoteSecret }),
    };
    const tuning: Tuning = {
      inboundVisibilityTimeoutSeconds: visibilityTimeoutSeconds,
      ...(options.leaseMs !== undefined && { leaseMs: options.leaseMs }),
      ...(options.eventsTimeoutMs !== undefined && { eventsTimeoutMs: options.eventsTimeoutMs }),
      ...(options.inboundRetry && { inboundRetry: options.inboundRetry }),
      ...(options.backoff && { backoff: options.backoff }),
      ...(options.claimLeaseMs !== undefined && { claimLeaseMs: options.claimLeaseMs }),
      ...(options.homeserverTimeoutMs !== undefined && {
        homeserverTimeoutMs: options.homeserverTimeoutMs,
      }),
      ...(options.queryBudgetMs !== undefined && { queryBudgetMs: options.queryBudgetMs }),
    };
    // The configuration the stack would give each function, with the local endpoints' names.
    const deliveryAllowedAddresses = [...(options.deliveryAllowedAddresses ?? LOOPBACK_RANGES)];
    const service = {
      tableName,
      outboundQueueUrl: outbound.url,
      botUserId,
      homeserverUrl: options.homeserverUrl,
      publicBaseUrl: trimBaseUrl(options.publicBaseUrl ?? url),
      registration,
      deliveryAllowedAddresses,
    };
    const config: LocalFunctionsConfig = {
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
    let handlersRunning: () => number;
    if (options.workers) {
      const started = await Promise.allSettled(
        (["events", "outbox", "http"] as const).map((role) =>
          superviseFunction(
            {
              role,
              config,
              dynamodbEndpoint,
              sqsEndpoint,
              tokens,
              tuning,
              applicationModule,
              port,
            },
            log,
            metrics,
            // The consumers' lines of recent traffic go to the thread that serves the console.
            (line: LogLine) => httpFunction?.addLogLine(line),
          ).then((fn) => {
            if (role === "http") httpFunction = fn;
            return fn;
          }),
        ),
      );
      const functions = started.flatMap((result) =>
        result.status === "fulfilled" ? [result.value] : [],
      );
      // All at once: the HTTP functions finish their requests while the consumers finish theirs.
      stops.push(async () => void (await Promise.all(functions.map((fn) => fn.stop()))));
      const failed = started.find((result) => result.status === "rejected");
      if (failed) throw failed.reason;
      handlersRunning = () => functions.reduce((sum, fn) => sum + fn.busy(), 0);
    } else {
      // The store's wrapper is made once, shared as Lambda's functions share the table.
      let wrappedStore: (TransactionStore & ClaimStore) | undefined;
      const wrapStore = options.wrapStore;
      const platform: Platform = {
        dynamodb,
        sqs,
        secrets: async (token) => tokens[token],
        ...(tokens.remoteSecret && { remoteSecret: async () => tokens.remoteSecret as string }),
        log,
        metrics,
        ...tuning,
        ...(wrapStore && { wrapStore: (store) => (wrappedStore ??= wrapStore(store)) }),
      };
      const [outbox, poller] = await Promise.all([
        startConsumer("outbox", config, platform, application),
        startConsumer("events", config, platform, application),
      ]);
      // Pollers stop first, before the servers they read from; together, as each may be waiting
      // out a receive.
      stops.push(async () => void (await Promise.all([poller.stop(), outbox.stop()])));
      const http = await httpHandlers(config, platform, application, {
        logs: recentLines,
        sqsEndpoint,
      });
      const schedule = startSchedule(http.sweep, config.deadLetterSweepMs, log);
      // Before the pollers and servers it reads from.
      stops.push(schedule.stop);
      handlers = http.handlers;
      handlersRunning = () => poller.busy() + outbox.busy();
    }

    return {
      url,
      port,
      registration,
      registrationCreated: !existing,
      adminToken,
      dynamodbEndpoint,
      sqsEndpoint,
      inboundQueueUrl: inbound.url,
      inboundDeadLetterUrl: inbound.deadLetterUrl,
      outboundQueueUrl: outbound.url,
      outboundDeadLetterUrl: outbound.deadLetterUrl,
      botUserId,
      tableName,
      metrics,
      appRoutes: (application.routes ?? []).map(
        (route) => `${route.method} ${service.publicBaseUrl}${route.path}`,
      ),
      deliveryAllowedAddresses,
      ...(dynamo && { dynamodbPid: dynamo.pid }),
      ...(queuesFile && { queuesFile }),
      handlersRunning,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
