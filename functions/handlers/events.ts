import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import type { ApplicationEvents } from "../appservice/application.ts";
import type { InboundMessage } from "../appservice/pipeline/inbound.ts";
import {
  type InboundRetryPolicy,
  processInboundMessage,
} from "../appservice/pipeline/process-inbound.ts";
import { type ServiceDeps, serviceContext } from "../appservice/service-context.ts";
import type { ReceivedMessageControl } from "../queue/queue.ts";
import type { Metrics } from "../shared/metrics.ts";
import type { ClaimStore, SetAsideItems } from "../store/store.ts";
// The application's part this function runs, and only that part's code and packages.
import { eventsPart } from "../wiring/application.ts";
import { eventsDeps } from "../wiring/deps.ts";
import { processFifoBatch } from "./shared/fifo-batch.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";
import { flushMetrics } from "./shared/metrics.ts";

export interface EventsDeps extends ServiceDeps {
  claims: ClaimStore;
  /** The items queued by reference, too large for a message. */
  setAsideItems: Pick<SetAsideItems, "get">;
  application: ApplicationEvents;
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
  () =>
    lambdaDeps("events", async (config, platform) =>
      eventsDeps(config, platform, await eventsPart()),
    ),
  createEventsHandler,
);
