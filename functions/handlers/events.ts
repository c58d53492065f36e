import { SQSClient } from "@aws-sdk/client-sqs";
import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { application } from "../app/index.ts";
import type { Application } from "../appservice/application.ts";
import type { InboundMessage } from "../appservice/pipeline/inbound.ts";
import {
  INBOUND_RETRY,
  type InboundRetryPolicy,
  processInboundMessage,
} from "../appservice/pipeline/process-inbound.ts";
import { type ServiceDeps, serviceContext } from "../appservice/service-context.ts";
import type { ReceivedMessageControl } from "../queue/queue.ts";
import { SqsMessageControl } from "../queue/sqs/message-control.ts";
import type { Metrics } from "../shared/metrics.ts";
import type { ClaimStore } from "../store/store.ts";
import { dynamoDbStoreFromEnv } from "./shared/dynamodb.ts";
import { processFifoBatch } from "./shared/fifo-batch.ts";
import { lambdaHandler, requiredEnv } from "./shared/lambda-handler.ts";
import { createCloudWatchMetrics, flushMetrics } from "./shared/metrics.ts";
import { serviceDepsFromEnv } from "./shared/services.ts";

/** How long the events function may run (the stack's timeout, and the claims' lease). */
export const EVENTS_TIMEOUT_MS = 30_000;
/**
 * No message is started with less time left than this: room for a handler that reads room state
 * a few times (5 s each at most); one that runs longer meets the function's timeout.
 */
export const EVENTS_RECORD_BUDGET_MS = 10_000;

export interface EventsDeps extends ServiceDeps {
  claims: ClaimStore;
  application: Application;
  /** Lease on an item being processed; must run out before the message is visible again. */
  leaseMs: number;
  metrics: Metrics;
  /** The inbound queue: a failed message's next attempt, and its dead-letter queue. */
  control: ReceivedMessageControl;
  retry: InboundRetryPolicy;
  recordBudgetMs: number;
}

/**
 * The inbound queue's consumer. FIFO: when a message fails, the rest of its group in the batch
 * is failed too and made visible again at once, to come back behind it; the failed one comes
 * back after its backoff. Other groups go on.
 */
export const createEventsHandler = (deps: EventsDeps) => {
  const processRecord = async (record: SQSRecord) => {
    const message = JSON.parse(record.body) as InboundMessage;
    const groupId = record.attributes.MessageGroupId as string;
    const outcome = await processInboundMessage(
      message,
      // The lease owner is derived from the delivery, so a redelivery is a new owner.
      { owner: `${record.messageId}#${record.attributes.ApproximateReceiveCount}`, groupId },
      {
        ...deps,
        contextFor: (origin) => serviceContext(deps, origin),
        deadLetters: deps.control,
      },
    );
    deps.metrics.count("ItemsHandled", outcome.handled);
    deps.metrics.count("ItemsDuplicate", outcome.duplicates);
    deps.log.debug("inbound message processed", { txnId: message.txnId, groupId, ...outcome });
  };
  return middy<SQSEvent, SQSBatchResponse>()
    .use(flushMetrics(deps.metrics))
    .handler((event, context: Context) =>
      processFifoBatch(event, context, processRecord, {
        control: deps.control,
        recordBudgetMs: deps.recordBudgetMs,
        log: deps.log,
      }),
    );
};

export const handler = lambdaHandler(
  async () => ({
    ...(await serviceDepsFromEnv()),
    claims: dynamoDbStoreFromEnv(),
    application,
    leaseMs: EVENTS_TIMEOUT_MS,
    metrics: createCloudWatchMetrics(),
    control: new SqsMessageControl(
      new SQSClient({}),
      requiredEnv("INBOUND_QUEUE_URL"),
      requiredEnv("INBOUND_DEAD_LETTER_QUEUE_URL"),
    ),
    retry: INBOUND_RETRY,
    recordBudgetMs: EVENTS_RECORD_BUDGET_MS,
  }),
  createEventsHandler,
);
