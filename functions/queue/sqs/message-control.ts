import {
  ChangeMessageVisibilityCommand,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { FifoMessage, ReceivedMessageControl } from "../queue.ts";
import { sqsGroupId } from "./queue.ts";

/** SQS's maximum visibility timeout: 12 hours. */
export const MAX_VISIBILITY_SECONDS = 12 * 3600;

export class SqsMessageControl implements ReceivedMessageControl {
  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
    private readonly deadLetterQueueUrl: string,
  ) {}

  async retryAfter(receiptHandle: string, seconds: number): Promise<void> {
    await this.client.send(
      new ChangeMessageVisibilityCommand({
        QueueUrl: this.queueUrl,
        ReceiptHandle: receiptHandle,
        VisibilityTimeout: Math.min(MAX_VISIBILITY_SECONDS, Math.max(0, Math.ceil(seconds))),
      }),
    );
  }

  async deadLetter(message: FifoMessage): Promise<void> {
    await this.client.send(
      new SendMessageCommand({
        QueueUrl: this.deadLetterQueueUrl,
        MessageBody: message.body,
        MessageGroupId: sqsGroupId(message.groupId),
        MessageDeduplicationId: message.deduplicationId,
      }),
    );
  }
}
