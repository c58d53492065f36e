import {
  ChangeMessageVisibilityBatchCommand,
  ChangeMessageVisibilityCommand,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { FifoMessage, ReceivedMessageControl } from "../queue.ts";
import { sqsGroupId } from "./queue.ts";

/** SQS's maximum visibility timeout: 12 hours. */
export const MAX_VISIBILITY_SECONDS = 12 * 3600;
/** SQS's limit on the entries of one batch request. */
const MAX_BATCH_ENTRIES = 10;

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

  async retryNow(receiptHandles: string[]): Promise<void> {
    // Last first: a queue that puts a returned message back at the front of its group (fauxqs
    // does; SQS keeps each message's place) then holds them in their order too.
    const entries = receiptHandles
      .map((receiptHandle, i) => ({
        Id: String(i),
        ReceiptHandle: receiptHandle,
        VisibilityTimeout: 0,
      }))
      .reverse();
    for (let i = 0; i < entries.length; i += MAX_BATCH_ENTRIES) {
      const { Failed = [] } = await this.client.send(
        new ChangeMessageVisibilityBatchCommand({
          QueueUrl: this.queueUrl,
          Entries: entries.slice(i, i + MAX_BATCH_ENTRIES),
        }),
      );
      if (Failed.length > 0) {
        throw new Error(
          `SQS kept ${Failed.length} messages invisible: ${Failed.map((f) => `${f.Code}: ${f.Message}`).join("; ")}`,
        );
      }
    }
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
