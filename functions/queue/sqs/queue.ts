import {
  SendMessageBatchCommand,
  type SendMessageBatchRequestEntry,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { sha256 } from "../../shared/hash.ts";
import { type FifoMessage, type FifoQueue, MAX_MESSAGE_BYTES } from "../queue.ts";

const MAX_BATCH_ENTRIES = 10;

// SQS group IDs allow at most 128 characters, printable ASCII only: others go by their hash.
const validGroupId = /^[\x21-\x7e]{1,128}$/;
export const sqsGroupId = (groupId: string) =>
  validGroupId.test(groupId) ? groupId : sha256(groupId);

/**
 * Splits messages into SendMessageBatch requests. SQS keeps the order of a group's messages
 * within one request, so a group that fits one request is never split; a larger group becomes
 * a chain of requests sent one after another. Independent requests go out in parallel.
 */
export function planBatches(messages: FifoMessage[]): FifoMessage[][][] {
  const groups = new Map<string, FifoMessage[]>();
  for (const message of messages) {
    const group = groups.get(message.groupId);
    if (group) group.push(message);
    else groups.set(message.groupId, [message]);
  }
  const bytes = (list: FifoMessage[]) =>
    list.reduce((sum, m) => sum + Buffer.byteLength(m.body), 0);
  const chains: FifoMessage[][][] = [];
  let open: FifoMessage[] = [];
  for (const group of groups.values()) {
    const groupBytes = bytes(group);
    if (group.length > MAX_BATCH_ENTRIES || groupBytes > MAX_MESSAGE_BYTES) {
      const chain: FifoMessage[][] = [];
      let batch: FifoMessage[] = [];
      for (const message of group) {
        if (batch.length === MAX_BATCH_ENTRIES || bytes([...batch, message]) > MAX_MESSAGE_BYTES) {
          chain.push(batch);
          batch = [];
        }
        batch.push(message);
      }
      chain.push(batch);
      chains.push(chain);
      continue;
    }
    if (
      open.length + group.length > MAX_BATCH_ENTRIES ||
      bytes(open) + groupBytes > MAX_MESSAGE_BYTES
    ) {
      chains.push([open]);
      open = [];
    }
    open.push(...group);
  }
  if (open.length > 0) chains.push([open]);
  return chains;
}

/** An SQS FIFO queue behind the `FifoQueue` interface. */
export class SqsFifoQueue implements FifoQueue {
  constructor(
    private readonly client: SQSClient,
    private readonly queueUrl: string,
  ) {}

  async send(messages: FifoMessage[]): Promise<void> {
    await Promise.all(
      planBatches(messages).map(async (chain) => {
        for (const batch of chain) await this.sendBatch(batch);
      }),
    );
  }

  private async sendBatch(batch: FifoMessage[]): Promise<void> {
    const entries: SendMessageBatchRequestEntry[] = batch.map((message, index) => ({
      Id: String(index),
      MessageBody: message.body,
      MessageGroupId: sqsGroupId(message.groupId),
      MessageDeduplicationId: message.deduplicationId,
    }));
    const result = await this.client.send(
      new SendMessageBatchCommand({ QueueUrl: this.queueUrl, Entries: entries }),
    );
    if (result.Failed && result.Failed.length > 0) {
      const reasons = result.Failed.map((f) => `${f.Code}: ${f.Message}`).join("; ");
      throw new Error(
        `SQS refused ${result.Failed.length} of ${batch.length} messages: ${reasons}`,
      );
    }
  }
}
