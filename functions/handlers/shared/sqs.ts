import { SQSClient } from "@aws-sdk/client-sqs";
import { SqsFifoQueue } from "../../queue/sqs/queue.ts";
import { requiredEnv } from "./lambda-handler.ts";

/** The inbound FIFO queue at `INBOUND_QUEUE_URL`. */
export const inboundQueueFromEnv = () =>
  new SqsFifoQueue(new SQSClient({}), requiredEnv("INBOUND_QUEUE_URL"));
