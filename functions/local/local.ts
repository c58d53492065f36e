import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { application as defaultApplication } from "../app/index.ts";
import type { Application } from "../appservice/application.ts";
import type { Log } from "../appservice/log.ts";
import { CountingMetrics } from "../appservice/metrics.ts";
import { createNamespaceMatcher, uncoveredUserPrefixes } from "../appservice/namespaces.ts";
import {
  loadRegistration,
  newRegistration,
  type Registration,
  registrationYaml,
} from "../appservice/registration.ts";
import { type Route, routeTable } from "../appservice/routes.ts";
import type { ServiceDeps } from "../appservice/service-context.ts";
import { createAppHandler } from "../handlers/app.ts";
import { createEventsHandler } from "../handlers/events.ts";
import { createFallbackHandler } from "../handlers/fallback.ts";
import { createOutboxHandler } from "../handlers/outbox.ts";
import { createQueriesHandler, QUERY_BUDGET_MS } from "../handlers/queries.ts";
import { createLogger } from "../handlers/shared/logger.ts";
import { createTransactionsHandler } from "../handlers/transactions.ts";
import {
  type BackoffPolicy,
  DEFAULT_BACKOFF,
  OUTBOUND_MAX_RECEIVE_COUNT,
} from "../matrix/backoff.ts";
import { HttpHomeserverClient } from "../matrix/http-client.ts";
import { httpHomeserverReader } from "../matrix/room-state.ts";
import { SqsMessageControl } from "../queue/sqs/message-control.ts";
import { SqsFifoQueue } from "../queue/sqs/queue.ts";
import { DynamoDbAppData } from "../store/dynamodb/app-data.ts";
import { DynamoDbStore } from "../store/dynamodb/store.ts";
import { ensureTable } from "../store/dynamodb/table.ts";
import type { ClaimStore, TransactionStore } from "../store/store.ts";
import { localDynamoDb, localSqs } from "./aws-clients.ts";
import { startDynamoDbLocal } from "./dynamodb-local.ts";
import { createGateway, type HttpHandler } from "./gateway.ts";
import { startPoller } from "./poller.ts";
import { ensureFifoQueue } from "./queues.ts";
import { startSqsLocal } from "./sqs-local.ts";

export interface LocalOptions {
  /** 0 picks a free port. */
  port: number;
  /** Loaded if it exists, else written with fresh tokens. */
  registrationPath: string;
  homeserverUrl: string;
  serverName: string;
  /** Keeps DynamoDB's tables in this folder across restarts; in memory without it. */
  dataDir?: string;
  /** Use a running DynamoDB (Local) instead of starting one. */
  dynamodbEndpoint?: string;
  /** Use a running SQS (fauxqs) instead of starting one. */
  sqsEndpoint?: string;
  tableName?: string;
  queuePrefix?: string;
  application?: Application;
  visibilityTimeoutSeconds?: number;
  maxReceiveCount?: number;
  leaseMs?: number;
  pollers?: number;
  log?: Log;
  /** The outbox's retry policy for 5xx, timeouts and refused connections. */
  backoff?: BackoffPolicy;
  /** How long the outbox waits for the homeserver's answer. @default 20 s */
  homeserverTimeoutMs?: number;
  /** How long a user/alias query may spend on the homeserver. @default 10 s */
  queryBudgetMs?: number;
  /** Where the application's routes are reached from outside. @default the local URL */
  publicBaseUrl?: string;
  /** Lets tests put a fault injector around the store. */
  wrapStore?: (store: DynamoDbStore) => TransactionStore & ClaimStore;
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
  /** The DynamoDB Local Java process, when this start spawned one. */
  dynamodbPid?: number;
  /** SQS batches the pollers are handling now (tests wait for 0). */
  handlersRunning(): number;
  stop(): Promise<void>;
}

/**
 * The whole appservice on one machine: DynamoDB Local and fauxqs on 127.0.0.1, the table and
 * queues, the same handlers behind an API-Gateway-like HTTP server, and pollers driving the
 * SQS handlers as Lambda's event source mappings do.
 */
export async function startLocal(options: LocalOptions): Promise<LocalAppservice> {
  const log = options.log ?? createLogger();
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
        maxReceiveCount: options.maxReceiveCount ?? 5,
      }),
      // The outbox chooses its own waits; redrive is only the last resort.
      ensureFifoQueue(sqs, `${queuePrefix}-outbound`, {
        visibilityTimeoutSeconds,
        maxReceiveCount: OUTBOUND_MAX_RECEIVE_COUNT,
      }),
    ]);

    const application = options.application ?? defaultApplication;
    const routes = routeTable(application.routes ?? []);
    let handlers: Record<Route["handler"], HttpHandler> | undefined;
    let registration = existing;
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
    stops.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    const port = (server.address() as AddressInfo).port;
    const url = `http://127.0.0.1:${port}`;

    if (!registration) {
      registration = newRegistration({
        id: "serverless-appservice",
        url,
        senderLocalpart: "appservice",
        serverName: options.serverName,
        prefix: "_as_",
        ...(application.userPrefixes && { userPrefixes: application.userPrefixes }),
      });
      await writeFile(options.registrationPath, registrationYaml(registration), { mode: 0o600 });
    }

    const uncovered = uncoveredUserPrefixes(
      registration.namespaces,
      options.serverName,
      application.userPrefixes ?? [],
    );
    if (uncovered.length > 0) {
      log.warn("the registration's user namespaces miss users the application acts as", {
        add: uncovered.map((prefix) => `@${prefix}.*:${options.serverName}`),
      });
    }

    const namespaces = createNamespaceMatcher(registration.namespaces);
    const dynamoDbStore = new DynamoDbStore(dynamodb, tableName);
    const store = options.wrapStore ? options.wrapStore(dynamoDbStore) : dynamoDbStore;
    const botUserId = `@${registration.sender_localpart}:${options.serverName}`;
    const metrics = new CountingMetrics();
    const services: ServiceDeps = {
      log,
      outboundQueue: new SqsFifoQueue(sqs, outbound.url),
      botUserId,
      homeserver: httpHomeserverReader(options.homeserverUrl, registration.as_token, botUserId),
      data: new DynamoDbAppData(dynamodb, tableName),
      publicBaseUrl: (options.publicBaseUrl ?? url).replace(/\/+$/, ""),
      secretKey: registration.as_token,
    };
    const outbox = startPoller({
      sqs,
      queueUrl: outbound.url,
      queueArn: outbound.arn,
      handler: createOutboxHandler({
        homeserver: new HttpHomeserverClient(
          options.homeserverUrl,
          registration.as_token,
          botUserId,
          options.homeserverTimeoutMs ?? 20_000,
        ),
        membership: dynamoDbStore,
        serverErrors: dynamoDbStore,
        botUserId,
        isOurUser: (userId) => namespaces.matches("users", userId),
        backoff: options.backoff ?? DEFAULT_BACKOFF,
        log,
        metrics,
        control: new SqsMessageControl(sqs, outbound.url, outbound.deadLetterUrl),
      }),
      log,
      concurrency: options.pollers ?? 4,
      functionName: "outbox",
    });
    stops.push(outbox.stop);
    const poller = startPoller({
      sqs,
      queueUrl: inbound.url,
      queueArn: inbound.arn,
      handler: createEventsHandler({
        ...services,
        claims: store,
        application,
        // The lease must run out before the message becomes visible again.
        leaseMs: options.leaseMs ?? Math.max(1000, visibilityTimeoutSeconds * 1000 - 1000),
        metrics,
      }),
      log,
      concurrency: options.pollers ?? 4,
      functionName: "events",
    });
    // Pollers stop first, before the servers they read from.
    stops.push(poller.stop);
    handlers = {
      app: createAppHandler({ ...services, application }),
      transactions: createTransactionsHandler({
        hsToken: registration.hs_token,
        transactions: store,
        inboundQueue: new SqsFifoQueue(sqs, inbound.url),
        log,
        metrics,
      }),
      queries: createQueriesHandler({
        hsToken: registration.hs_token,
        application,
        namespaces,
        homeserver: new HttpHomeserverClient(
          options.homeserverUrl,
          registration.as_token,
          botUserId,
          5_000,
        ),
        membership: dynamoDbStore,
        claims: store,
        botUserId,
        log,
        budgetMs: options.queryBudgetMs ?? QUERY_BUDGET_MS,
      }),
    };

    return {
      url,
      port,
      registration,
      registrationCreated: !existing,
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
        (route) => `${route.method} ${services.publicBaseUrl}${route.path}`,
      ),
      ...(dynamo && { dynamodbPid: dynamo.pid }),
      handlersRunning: () => poller.busy() + outbox.busy(),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
