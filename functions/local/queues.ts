import { CreateQueueCommand, GetQueueAttributesCommand, type SQSClient } from "@aws-sdk/client-sqs";
import { MAX_MESSAGE_BYTES } from "../queue/queue.ts";

export interface FifoQueueWithDlq {
  url: string;
  arn: string;
  deadLetterUrl: string;
}

/**
 * Creates a FIFO queue with a FIFO dead-letter queue, as the CDK stack does in AWS:
 * a message that fails `maxReceiveCount` times moves to the dead-letter queue.
 */
export async function ensureFifoQueue(
  sqs: SQSClient,
  name: string,
  options: { visibilityTimeoutSeconds: number; maxReceiveCount: number },
): Promise<FifoQueueWithDlq> {
  // Kept 14 days, and messages up to 1 MiB, as in AWS.
  const fifo = {
    FifoQueue: "true",
    ContentBasedDeduplication: "false",
    MessageRetentionPeriod: String(14 * 24 * 3600),
    MaximumMessageSize: String(MAX_MESSAGE_BYTES),
  };
  const dlq = await sqs.send(
    new CreateQueueCommand({ QueueName: `${name}-dlq.fifo`, Attributes: fifo }),
  );
  const dlqAttributes = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: dlq.QueueUrl, AttributeNames: ["QueueArn"] }),
  );
  const queue = await sqs.send(
    new CreateQueueCommand({
      QueueName: `${name}.fifo`,
      Attributes: {
        ...fifo,
        VisibilityTimeout: String(options.visibilityTimeoutSeconds),
        RedrivePolicy: JSON.stringify({
          deadLetterTargetArn: dlqAttributes.Attributes?.QueueArn,
          maxReceiveCount: options.maxReceiveCount,
        }),
      },
    }),
  );
  const attributes = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queue.QueueUrl, AttributeNames: ["QueueArn"] }),
  );
  return {
    url: queue.QueueUrl as string,
    arn: attributes.Attributes?.QueueArn as string,
    deadLetterUrl: dlq.QueueUrl as string,
  };
}
