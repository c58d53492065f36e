import type { Context, SQSRecord } from "aws-lambda";
import type { InboundMessage } from "../appservice/pipeline/inbound.ts";
import { processInboundMessage } from "../appservice/pipeline/process-inbound.ts";
import { serviceContext } from "../appservice/service-context.ts";
// The application's part this function runs, and only that part's code and packages.
import { eventsPart } from "../wiring/application.ts";
import { withBotCrypto } from "../wiring/crypto.ts";
import { eventsDeps } from "../wiring/deps.ts";
import type { EventsDeps } from "../wiring/handler-deps.ts";
import { fifoConsumer } from "./shared/fifo-batch.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";

/**
 * The inbound queue's consumer. FIFO: when a message fails, the rest of its group in the batch
 * is failed too and made visible again at once, to come back behind it; the failed one comes
 * back after its backoff. Other groups go on.
 */
export const createEventsHandler = (deps: EventsDeps) => {
  const processRecord = async (record: SQSRecord, lambda: Context) => {
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
        time: {
          leftMs: () => lambda.getRemainingTimeInMillis(),
          itemBudgetMs: deps.recordBudgetMs,
        },
      },
    );
    deps.metrics.count("ItemsHandled", outcome.handled);
    deps.metrics.count("ItemsDuplicate", outcome.duplicates);
    deps.log.debug("inbound message processed", { txnId: message.txnId, groupId, ...outcome });
  };
  return fifoConsumer(processRecord, deps);
};

export const handler = lambdaHandler(
  () =>
    lambdaDeps("events", async (config, platform) =>
      withBotCrypto(await eventsDeps(config, platform, await eventsPart()), config, platform),
    ),
  createEventsHandler,
);
