// One of local mode's functions in a worker thread of its own (started by `workers.ts`), as
// Lambda runs each function apart: the HTTP functions behind the gateway, or one queue consumer.
import { parentPort, workerData } from "node:worker_threads";
import type { Application } from "../appservice/application.ts";
import { routeTable } from "../appservice/protocol/routes.ts";
import { createFallbackHandler } from "../handlers/fallback.ts";
import { createLogger } from "../handlers/shared/logger.ts";
import { forwardTrafficLines, type LogLine, RecentLogLines } from "../operator/traffic.ts";
import type { MetricName, Metrics } from "../shared/metrics.ts";
import type { Platform } from "../wiring/deps.ts";
import { localDynamoDb, localSqs } from "./aws-clients.ts";
import {
  type Consumer,
  httpHandlers,
  type LocalFunctionsConfig,
  startConsumer,
  startSchedule,
  type Tuning,
} from "./functions.ts";
import { closeGracefully, createGateway } from "./gateway.ts";

/** What a worker is started with. */
export interface FunctionWorkerData {
  role: "http" | Consumer;
  config: LocalFunctionsConfig;
  dynamodbEndpoint: string;
  sqsEndpoint: string;
  /** The registration's tokens, where AWS reads Secrets Manager. */
  tokens: {
    asToken: string;
    hsToken: string;
    adminToken: string;
    remoteSecret?: string;
    /** The bot device's crypto state's secret: the events thread's alone. */
    cryptoStoreSecret?: string;
  };
  tuning: Tuning;
  /** The URL of the module whose `application` export this function runs (bundled with it). */
  applicationModule: string;
  /** Where the HTTP functions listen (on 127.0.0.1). */
  port: number;
}

/** What a worker tells its supervisor. */
export type FunctionWorkerMessage =
  | { ready: true }
  | { counts: [MetricName, number][] }
  | { busy: number }
  /** A line of recent traffic, for the operator console (which the HTTP functions serve). */
  | { log: LogLine }
  | { stopped: true };

/** How often the counts go to the supervisor, which prints them. */
const COUNTS_INTERVAL_MS = 1000;

const data = workerData as FunctionWorkerData;
const port = parentPort as NonNullable<typeof parentPort>;
const post = (message: FunctionWorkerMessage) => port.postMessage(message);

/** Counts kept here and handed to the supervisor in batches, as CloudWatch's are flushed. */
class ForwardedMetrics implements Metrics {
  private pending = new Map<MetricName, number>();
  private timer: NodeJS.Timeout | undefined;

  count(name: MetricName, value = 1): void {
    this.pending.set(name, (this.pending.get(name) ?? 0) + value);
    this.timer ??= setTimeout(() => this.send(), COUNTS_INTERVAL_MS).unref();
  }

  send(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.size === 0) return;
    post({ counts: [...this.pending] });
    this.pending = new Map();
  }
}

const metrics = new ForwardedMetrics();
// The console reads recent traffic from the log lines: the HTTP functions' thread keeps them,
// the consumers send theirs to it through the supervisor.
const recentLines = data.role === "http" ? new RecentLogLines() : undefined;
const log = recentLines
  ? recentLines.tee(createLogger())
  : forwardTrafficLines(createLogger(), (line) => post({ log: line }));
const dynamodb = localDynamoDb(data.dynamodbEndpoint);
const sqs = localSqs(data.sqsEndpoint);
const platform: Platform = {
  dynamodb,
  sqs,
  secrets: async (token) => data.tokens[token],
  ...(data.tokens.remoteSecret && { remoteSecret: async () => data.tokens.remoteSecret as string }),
  ...(data.tokens.cryptoStoreSecret && {
    cryptoStoreSecret: async () => data.tokens.cryptoStoreSecret as string,
  }),
  log,
  metrics,
  ...data.tuning,
};
/**
 * Runs this thread's function with `application`: the entry that `workers.ts` bundles imports
 * the application module and this one, and calls it.
 */
export async function runFunctionWorker(application: Application): Promise<void> {
  let stop: () => Promise<void>;
  if (data.role === "http") {
    const routes = routeTable(application.routes ?? []);
    const { handlers, sweep } = await httpHandlers(data.config, platform, application, {
      logs: recentLines as RecentLogLines,
      sqsEndpoint: data.sqsEndpoint,
    });
    const schedule = startSchedule(sweep, data.config.deadLetterSweepMs, log);
    const server = createGateway({
      routes,
      handlers: () => handlers,
      hsToken: () => data.tokens.hsToken,
      fallback: createFallbackHandler(routes, log),
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(data.port, "127.0.0.1", resolve);
    });
    stop = async () => {
      await schedule.stop();
      await closeGracefully(server);
    };
  } else {
    const poller = await startConsumer(data.role, data.config, platform, application, (busy) =>
      post({ busy }),
    );
    stop = poller.stop;
  }

  port.on("message", async (message: "stop" | { log: LogLine }) => {
    if (message !== "stop") {
      recentLines?.add(message.log);
      return;
    }
    await stop();
    metrics.send();
    dynamodb.destroy();
    sqs.destroy();
    post({ stopped: true });
  });
  post({ ready: true });
}
