import { processPartialResponse, SqsFifoPartialProcessorAsync } from "@aws-lambda-powertools/batch";
import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import type { InboundMessage } from "../appservice/inbound.ts";
import { processInboundMessage } from "../appservice/process-inbound.ts";
import { fromEnvironment, type Runtime } from "./runtime.ts";

/**
 * The inbound queue's consumer. FIFO: when a message fails, the rest of its group in the
 * batch is failed too (and retried in order); other groups go on.
 */
export const createEventsHandler = (runtime: Runtime) => {
  const processRecord = async (record: SQSRecord) => {
    const message = JSON.parse(record.body) as InboundMessage;
    // The lease owner is derived from the delivery, so a redelivery is a new owner.
    const owner = `${record.messageId}#${record.attributes.ApproximateReceiveCount}`;
    const outcome = await processInboundMessage(message, owner, {
      claims: runtime.store,
      application: runtime.application,
      log: runtime.log,
      leaseMs: runtime.leaseMs,
    });
    runtime.log.debug("inbound message processed", {
      txnId: message.txnId,
      groupId: record.attributes.MessageGroupId,
      ...outcome,
    });
  };
  return middy<SQSEvent, SQSBatchResponse>().handler((event, context: Context) =>
    processPartialResponse(event, processRecord, new SqsFifoPartialProcessorAsync(), {
      context,
      skipGroupOnError: true,
      throwOnFullBatchFailure: false,
    }),
  );
};

export const handler = fromEnvironment(createEventsHandler);
