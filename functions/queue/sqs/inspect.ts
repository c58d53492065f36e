import {
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { DeadLetterQueue, InspectedMessage, QueueDepth } from "../queue.ts";

/** A queue's depth from SQS's approximate counters. */
export async function sqsQueueDepth(client: SQSClient, queueUrl: string): Promise<QueueDepth> {
  const { Attributes = {} } = await client.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
      ],
    }),
  );
  return {
    waiting: Number(Attributes.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(Attributes.ApproximateNumberOfMessagesNotVisible ?? 0),
    delayed: Number(Attributes.ApproximateNumberOfMessagesDelayed ?? 0),
  };
}

/** Long enough to keep a received message while it is stored elsewhere and deleted. */
const INSPECT_VISIBILITY_SECONDS = 60;

export class SqsDeadLetterQueue implements DeadLetterQueue {
  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
  ) {}

  async receive(): Promise<InspectedMessage[]> {
    const { Messages = [] } = await this.client.send(
      new ReceiveMessageCommand({
        QueueUrl: this.queueUrl,
        MaxNumberOfMessages: 10,
        VisibilityTimeout: INSPECT_VISIBILITY_SECONDS,
        WaitTimeSeconds: 0,
        MessageSystemAttributeNames: ["MessageGroupId", "SequenceNumber", "SentTimestamp"],
      }),
    );
    return Messages.map((message) => ({
      id: message.MessageId ?? "",
      receiptHandle: message.ReceiptHandle ?? "",
      groupId: message.Attributes?.MessageGroupId ?? "",
      sequenceNumber: message.Attributes?.SequenceNumber ?? "0",
      sentAt: Number(message.Attributes?.SentTimestamp ?? Date.now()),
      body: message.Body ?? "",
    }));
  }

  async delete(receiptHandle: string): Promise<void> {
    await this.client.send(
      new DeleteMessageCommand({ QueueUrl: this.queueUrl, ReceiptHandle: receiptHandle }),
    );
  }
}
