import type { Application } from "../appservice/application.ts";
import type { Route } from "../appservice/protocol/routes.ts";
import { createAdminHandler } from "../handlers/admin.ts";
import { createAppHandler } from "../handlers/app.ts";
import { createEventsHandler } from "../handlers/events.ts";
import { createOutboxHandler } from "../handlers/outbox.ts";
import { createQueriesHandler } from "../handlers/queries.ts";
import { createTransactionsHandler } from "../handlers/transactions.ts";
import type { LogSource } from "../operator/traffic.ts";
import type { Log } from "../shared/log.ts";
import { adminDeps } from "../wiring/admin-deps.ts";
import { withBotCrypto, withRoomEncryptor } from "../wiring/crypto.ts";
import {
  appDeps,
  eventsDeps,
  outboxDeps,
  type Platform,
  queriesDeps,
  type Settings,
  transactionsDeps,
} from "../wiring/deps.ts";
import { EVENTS_TIMEOUT_MS, OUTBOX_TIMEOUT_MS } from "../wiring/timeouts.ts";
import type { HttpHandler } from "./gateway.ts";
import { startPoller } from "./poller.ts";
import { oldestAgeSeconds } from "./sqs-local.ts";

/**
 * What local mode's functions are given, as the stack gives Lambda's: plain data, so that it
 * crosses to a worker thread.
 */
export interface LocalFunctionsConfig {
  settings: {
    transactions: Settings<"transactions">;
    events: Settings<"events">;
    outbox: Settings<"outbox">;
    queries: Settings<"queries">;
    app: Settings<"app">;
    admin: Settings<"admin">;
  };
  queues: Record<"inbound" | "outbound", { url: string; arn: string }>;
  /** Receive loops per queue consumer. */
  pollers: number;
  /** How often the dead letters are swept into the table, as the stack's schedule does. */
  deadLetterSweepMs: number;
}

/** The platform's knobs that tests turn, as plain data. */
export type Tuning = Pick<
  Platform,
  | "inboundVisibilityTimeoutSeconds"
  | "leaseMs"
  | "eventsTimeoutMs"
  | "inboundRetry"
  | "backoff"
  | "claimLeaseMs"
  | "homeserverTimeoutMs"
  | "queryBudgetMs"
  | "keyWait"
>;

/**
 * The handlers of the HTTP functions, by the name the route table gives them, and the admin
 * function's scheduled dead-letter sweep. The operator console reads the recent log lines from
 * `logs` and the queues' ages from fauxqs at `sqsEndpoint`.
 */
export async function httpHandlers(
  config: LocalFunctionsConfig,
  platform: Platform,
  application: Application,
  operator: { logs: LogSource; sqsEndpoint: string },
): Promise<{ handlers: Record<Route["handler"], HttpHandler>; sweep: () => Promise<unknown> }> {
  const { settings } = config;
  const others = withoutRemoteSecret(platform);
  const [app, transactions, queries, admin] = await Promise.all([
    appDeps(settings.app, platform, application),
    transactionsDeps(settings.transactions, others),
    queriesDeps(settings.queries, others, application),
    adminDeps(settings.admin, others, application, {
      logs: operator.logs,
      queueAge: (queueUrl) =>
        oldestAgeSeconds(operator.sqsEndpoint, queueUrl.slice(queueUrl.lastIndexOf("/") + 1)),
    }),
  ]);
  return {
    handlers: {
      app: createAppHandler(app),
      transactions: createTransactionsHandler(transactions),
      queries: createQueriesHandler(queries),
      admin: createAdminHandler(admin),
    },
    sweep: admin.sweep,
  };
}

/**
 * Runs `sweep` every `intervalMs`, as the stack's schedule runs the admin function, one run at a
 * time; a failed run is logged and the next one tries again. The stop waits for a running one.
 */
export function startSchedule(sweep: () => Promise<unknown>, intervalMs: number, log: Log) {
  let running: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const next = () => {
    timer = setTimeout(() => {
      running = sweep()
        .catch((error: unknown) => log.error("the dead-letter sweep failed", { error }))
        .finally(() => {
          if (timer) next();
        });
    }, intervalMs);
  };
  next();
  return {
    stop: async () => {
      clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
}

/**
 * The platform of a function that is not given the application's remote secret (its manifest's
 * `remoteSecret`): in AWS only the app function (it checks the remote service's requests) and the
 * outbox (it signs deliveries) read it.
 */
const withoutRemoteSecret = ({ remoteSecret: _, ...platform }: Platform): Platform => platform;

export type Consumer = "events" | "outbox";

/** A queue consumer driven as Lambda's event source mapping drives it. */
export async function startConsumer(
  consumer: Consumer,
  config: LocalFunctionsConfig,
  platform: Platform,
  application: Application,
  onBusy?: (busy: number) => void,
) {
  const { settings, queues } = config;
  const common = {
    sqs: platform.sqs,
    log: platform.log,
    concurrency: config.pollers,
    functionName: consumer,
    ...(onBusy && { onBusy }),
  };
  if (consumer === "outbox") {
    return startPoller({
      ...common,
      queueUrl: queues.outbound.url,
      queueArn: queues.outbound.arn,
      handler: createOutboxHandler(
        await withRoomEncryptor(
          await outboxDeps(settings.outbox, platform),
          settings.outbox,
          platform,
        ),
      ),
      timeoutMs: OUTBOX_TIMEOUT_MS,
    });
  }
  return startPoller({
    ...common,
    queueUrl: queues.inbound.url,
    queueArn: queues.inbound.arn,
    handler: createEventsHandler(
      await withBotCrypto(
        await eventsDeps(settings.events, withoutRemoteSecret(platform), application),
        settings.events,
        platform,
      ),
    ),
    timeoutMs: platform.eventsTimeoutMs ?? EVENTS_TIMEOUT_MS,
  });
}
