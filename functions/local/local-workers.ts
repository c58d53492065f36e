// `npm start`'s local mode: each function in a worker thread of its own, on local-core.ts.
import { createLogger } from "../handlers/shared/logger.ts";
import { forwardTrafficLines, type LogLine } from "../operator/traffic.ts";
import { loadApplication } from "./applications.ts";
import { freePort } from "./free-port.ts";
import { type LocalAppservice, type LocalCommonOptions, startWith } from "./local-core.ts";
import { type SupervisedFunction, superviseFunction } from "./workers.ts";

/**
 * Local mode with each function in a worker thread of its own (`startLocalWorkers`), as Lambda
 * runs each function apart (`npm start` does): a consumer's CPU burst or crash cannot delay or
 * stop the acks, and a crashed function is started again. The functions load the application from
 * `applicationModule` and log with their own logger.
 */
export type LocalWorkersOptions = LocalCommonOptions;

/**
 * The same appservice with each function in a worker thread of its own, as `npm start` runs it
 * (`LocalWorkersOptions`). The HTTP functions' worker serves the port and the operator console,
 * to which the other threads send their lines of recent traffic.
 */
export function startLocalWorkers(options: LocalWorkersOptions): Promise<LocalAppservice> {
  let httpFunction: SupervisedFunction | undefined;
  const toConsole = (line: LogLine) => httpFunction?.addLogLine(line);
  const log = forwardTrafficLines(options.log ?? createLogger(), toConsole);
  return startWith(options, log, {
    application: async (module) => (await loadApplication(module)).application,
    // The HTTP functions' worker listens there once it is ready.
    listen: async () => (options.port === 0 ? await freePort() : options.port),
    async run({ config, storage, tokens, tuning, metrics, applicationModule, port }, stops) {
      const started = await Promise.allSettled(
        (["events", "outbox", "http"] as const).map((role) =>
          superviseFunction(
            {
              role,
              config,
              dynamodbEndpoint: storage.dynamodbEndpoint,
              sqsEndpoint: storage.sqsEndpoint,
              tokens,
              tuning,
              applicationModule,
              port,
            },
            log,
            metrics,
            toConsole,
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
      return () => functions.reduce((sum, fn) => sum + fn.busy(), 0);
    },
  });
}
