// Local mode with every function in this thread (the tests'), on local-core.ts; `npm start`'s,
// with worker threads, is local-workers.ts.
import type { AddressInfo } from "node:net";
import type { Application } from "../appservice/application.ts";
import type { Route } from "../appservice/protocol/routes.ts";
import { createFallbackHandler } from "../handlers/fallback.ts";
import { createLogger } from "../handlers/shared/logger.ts";
import { RecentLogLines } from "../operator/traffic.ts";
import type { DynamoDbStore } from "../store/dynamodb/store.ts";
import type { ClaimStore, TransactionStore } from "../store/store.ts";
import type { Platform } from "../wiring/deps.ts";
import { loadApplication } from "./applications.ts";
import { httpHandlers, startConsumer, startSchedule } from "./functions.ts";
import { closeGracefully, createGateway, type HttpHandler } from "./gateway.ts";
import { type LocalAppservice, type LocalCommonOptions, startWith } from "./local-core.ts";

export type { LocalAppservice, LocalCommonOptions } from "./local-core.ts";
export { type LocalWorkersOptions, startLocalWorkers } from "./local-workers.ts";

/**
 * Local mode with every function in this thread (`startLocal`): the tests' way, where the
 * application may be an object of theirs and the store may be wrapped.
 */
export interface LocalOptions extends LocalCommonOptions {
  /** The application to run. @default `applicationModule`'s */
  application?: Application;
  /** Lets tests put a fault injector around the store. */
  wrapStore?: (store: DynamoDbStore) => TransactionStore & ClaimStore;
}

/**
 * The whole appservice on one machine, every function in this thread: DynamoDB Local and fauxqs
 * on 127.0.0.1, the table and queues, the same handlers behind an API-Gateway-like HTTP server,
 * and pollers driving the SQS handlers as Lambda's event source mappings do.
 */
export function startLocal(options: LocalOptions): Promise<LocalAppservice> {
  // The console's recent traffic and errors: the last log lines, kept in memory.
  const recentLines = new RecentLogLines();
  const log = recentLines.tee(options.log ?? createLogger());
  let handlers: Record<Route["handler"], HttpHandler> | undefined;
  return startWith(options, log, {
    application: async (module) =>
      options.application ?? (await loadApplication(module)).application,
    async listen(routes, hsToken, stops) {
      const server = createGateway({
        routes,
        handlers: () => handlers,
        hsToken,
        fallback: createFallbackHandler(routes, log),
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port, "127.0.0.1", resolve);
      });
      stops.push(() => closeGracefully(server));
      return (server.address() as AddressInfo).port;
    },
    async run({ config, storage, tokens, tuning, metrics, application }, stops) {
      // The store's wrapper is made once, shared as Lambda's functions share the table.
      let wrappedStore: (TransactionStore & ClaimStore) | undefined;
      const wrapStore = options.wrapStore;
      const platform: Platform = {
        dynamodb: storage.dynamodb,
        sqs: storage.sqs,
        secrets: async (token) => tokens[token],
        ...(tokens.remoteSecret && { remoteSecret: async () => tokens.remoteSecret as string }),
        ...(tokens.cryptoStoreSecret && {
          cryptoStoreSecret: async () => tokens.cryptoStoreSecret as string,
        }),
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
        sqsEndpoint: storage.sqsEndpoint,
      });
      const schedule = startSchedule(http.sweep, config.deadLetterSweepMs, log);
      // Before the pollers and servers it reads from.
      stops.push(schedule.stop);
      handlers = http.handlers;
      return () => poller.busy() + outbox.busy();
    },
  });
}
