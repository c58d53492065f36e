import { processPartialResponse, SqsFifoPartialProcessorAsync } from "@aws-lambda-powertools/batch";
import { SQSClient } from "@aws-sdk/client-sqs";
import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import type { Application } from "../app/application.ts";
import { application } from "../app/index.ts";
import type { InboundMessage } from "../appservice/inbound.ts";
import type { Log } from "../appservice/log.ts";
import type { Metrics } from "../appservice/metrics.ts";
import { processInboundMessage } from "../appservice/process-inbound.ts";
import { createActions } from "../matrix/actions.ts";
import type { FifoQueue } from "../queue/queue.ts";
import { SqsFifoQueue } from "../queue/sqs/queue.ts";
import type { ClaimStore } from "../store/store.ts";
import { dynamoDbStoreFromEnv } from "./shared/dynamodb.ts";
import { lambdaHandler, requiredEnv } from "./shared/lambda-handler.ts";
import { createLogger } from "./shared/logger.ts";
import { createCloudWatchMetrics, flushMetrics } from "./shared/metrics.ts";

export interface EventsDeps {
  claims: ClaimStore;
  application: Application;
  log: Log;
  /** Lease on an item being processed; must run out before the message is visible again. */
  leaseMs: number;
  outboundQueue: FifoQueue;
  botUserId: string;
  metrics: Metrics;
}

/**
 * The inbound queue's consumer. FIFO: when a message fails, the rest of its group in the
 * batch is failed too (and retried in order); other groups go on.
 */
export const createEventsHandler = (deps: EventsDeps) => {
  const processRecord = async (record: SQSRecord) => {
    const message = JSON.parse(record.body) as InboundMessage;
    // The lease owner is derived from the delivery, so a redelivery is a new owner.
    const owner = `${record.messageId}#${record.attributes.ApproximateReceiveCount}`;
    const outcome = await processInboundMessage(message, owner, {
      ...deps,
      actionsFor: (origin) =>
        createActions({ botUserId: deps.botUserId, outboundQueue: deps.outboundQueue, origin }),
    });
    deps.metrics.count("ItemsHandled", outcome.handled);
    deps.metrics.count("ItemsDuplicate", outcome.duplicates);
    deps.log.debug("inbound message processed", {
      txnId: message.txnId,
      groupId: record.attributes.MessageGroupId,
      ...outcome,
    });
  };
  return middy<SQSEvent, SQSBatchResponse>()
    .use(flushMetrics(deps.metrics))
    .handler((event, context: Context) =>
      processPartialResponse(event, processRecord, new SqsFifoPartialProcessorAsync(), {
        context,
        skipGroupOnError: true,
        throwOnFullBatchFailure: false,
      }),
    );
};

export const handler = lambdaHandler(
  async () => ({
    claims: dynamoDbStoreFromEnv(),
    application,
    log: createLogger(),
    leaseMs: Number(requiredEnv("LEASE_MS")),
    outboundQueue: new SqsFifoQueue(new SQSClient({}), requiredEnv("OUTBOUND_QUEUE_URL")),
    botUserId: requiredEnv("BOT_USER_ID"),
    metrics: createCloudWatchMetrics(),
  }),
  createEventsHandler,
);
