import { processPartialResponse, SqsFifoPartialProcessorAsync } from "@aws-lambda-powertools/batch";
import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { application } from "../app/index.ts";
import type { Application } from "../appservice/application.ts";
import type { InboundMessage } from "../appservice/pipeline/inbound.ts";
import { processInboundMessage } from "../appservice/pipeline/process-inbound.ts";
import { type ServiceDeps, serviceContext } from "../appservice/service-context.ts";
import type { Metrics } from "../shared/metrics.ts";
import type { ClaimStore } from "../store/store.ts";
import { dynamoDbStoreFromEnv } from "./shared/dynamodb.ts";
import { lambdaHandler, requiredEnv } from "./shared/lambda-handler.ts";
import { createCloudWatchMetrics, flushMetrics } from "./shared/metrics.ts";
import { serviceDepsFromEnv } from "./shared/services.ts";

export interface EventsDeps extends ServiceDeps {
  claims: ClaimStore;
  application: Application;
  /** Lease on an item being processed; must run out before the message is visible again. */
  leaseMs: number;
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
      contextFor: (origin) => serviceContext(deps, origin),
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
    ...(await serviceDepsFromEnv()),
    claims: dynamoDbStoreFromEnv(),
    application,
    leaseMs: Number(requiredEnv("LEASE_MS")),
    metrics: createCloudWatchMetrics(),
  }),
  createEventsHandler,
);
