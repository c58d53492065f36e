import type { ApplicationOperator } from "../appservice/application.ts";
import { serviceContext } from "../appservice/service-context.ts";
import type { OperatorPlatform } from "../cloudwatch/operator-platform.ts";
import { checkHomeserver } from "../matrix/homeserver-health.ts";
import { RequestBudget } from "../operator/access.ts";
import { createOperatorApi } from "../operator/api.ts";
import { OperatorConsole } from "../operator/console.ts";
import { SqsDeadLetterQueue, sqsQueueDepth } from "../queue/sqs/inspect.ts";
import { SqsFifoQueue } from "../queue/sqs/queue.ts";
import type { Log } from "../shared/log.ts";
import { DynamoDbDeadLetters } from "../store/dynamodb/dead-letters.ts";
import { type Platform, type Settings, serviceDeps } from "./deps.ts";
import type { AdminHandlerDeps } from "./handler-deps.ts";

// Apart from deps.ts, which every function bundles: only the admin function carries the console.

/** The operator console: its core over the queues, the table and the platform's logs. */
export async function adminDeps<L extends Log>(
  config: Settings<"admin">,
  platform: Platform<L>,
  application: ApplicationOperator,
  operatorPlatform: OperatorPlatform,
): Promise<AdminHandlerDeps & { log: L }> {
  const [service, asToken, adminToken] = await Promise.all([
    serviceDeps(config, platform),
    platform.secrets("asToken"),
    platform.secrets("adminToken"),
  ]);
  const { sqs } = platform;
  const urls = {
    inbound: config.inboundQueueUrl,
    outbound: config.outboundQueueUrl,
    inboundDeadLetters: config.inboundDeadLetterQueueUrl,
    outboundDeadLetters: config.outboundDeadLetterQueueUrl,
  };
  const deadLetters = new DynamoDbDeadLetters(platform.dynamodb, config.tableName);
  const operatorConsole = new OperatorConsole({
    deadLetterQueues: {
      inbound: new SqsDeadLetterQueue(sqs, urls.inboundDeadLetters),
      outbound: new SqsDeadLetterQueue(sqs, urls.outboundDeadLetters),
    },
    deadLetters,
    replayReset: deadLetters,
    queues: {
      inbound: new SqsFifoQueue(sqs, urls.inbound),
      outbound: new SqsFifoQueue(sqs, urls.outbound),
    },
    monitor: {
      depth: (queue) => sqsQueueDepth(sqs, urls[queue]),
      oldestAgeSeconds: (queue) => operatorPlatform.queueAge(urls[queue]),
    },
    logs: operatorPlatform.logs,
    homeserver: () => checkHomeserver(config.homeserverUrl, config.registration.id, asToken),
    sections: application.consoleSections ?? [],
    applicationContext: () => serviceContext(service, "operator-console"),
    version: config.version,
    log: platform.log,
  });
  return {
    api: createOperatorApi({
      console: operatorConsole,
      adminToken,
      budget: new RequestBudget(),
      log: platform.log,
    }),
    sweep: () => operatorConsole.sweep(),
    log: platform.log,
  };
}
