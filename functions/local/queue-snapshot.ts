// fauxqs keeps its queues in memory only. With DATA_DIR, local mode writes them to a file at a
// clean stop and puts them back at the next start: accepted work outlives the process, as SQS's
// queues outlive the functions in AWS.
import { open, readFile, rename, rm } from "node:fs/promises";
import {
  ChangeMessageVisibilityCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { z } from "zod";
import { MAX_VISIBILITY_SECONDS } from "../queue/sqs/message-control.ts";
import { SqsFifoQueue } from "../queue/sqs/queue.ts";
import type { SqsLocal } from "./sqs-local.ts";

const keptMessage = z.object({
  queue: z.string(),
  body: z.string(),
  groupId: z.string(),
  deduplicationId: z.string(),
  receiveCount: z.number().int().nonnegative(),
  visibleAt: z.number().optional(),
});
type KeptMessage = z.infer<typeof keptMessage>;

/**
 * Writes every message of the named queues to `file`, one JSON object a line, in each queue's
 * order. fauxqs refuses requests first, so nothing changes the queues once they are read. The
 * file is written whole and then renamed into place: a crash leaves the old state or the new.
 */
export async function keepQueues(
  sqsLocal: SqsLocal,
  queueNames: string[],
  file: string,
): Promise<number> {
  await sqsLocal.stopServing();
  const lines: string[] = [];
  for (const queue of queueNames) {
    for (const message of await sqsLocal.messages(queue)) {
      lines.push(JSON.stringify({ queue, ...message }));
    }
  }
  if (lines.length === 0) return 0;
  const temporary = `${file}.tmp`;
  const handle = await open(temporary, "w", 0o600);
  try {
    await handle.writeFile(`${lines.join("\n")}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(temporary, file);
  return lines.length;
}

/**
 * Puts the messages kept in `file` back into new, empty queues (by name → URL), before anything
 * sends or receives: in order within each group, each as often received as before, a received
 * one invisible for what was left of its wait. Then deletes the file. A crash before that loses
 * nothing and doubles nothing: the queues restored into die with the process, and the next
 * start restores the same file again. A file that cannot be read stops the start and stays.
 */
export async function restoreQueues(
  sqs: SQSClient,
  queueUrls: Map<string, string>,
  file: string,
): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return 0;
    throw error;
  }
  const messages: KeptMessage[] = [];
  for (const [index, line] of text.split("\n").entries()) {
    if (line === "") continue;
    let message: KeptMessage;
    try {
      message = keptMessage.parse(JSON.parse(line));
    } catch (error) {
      throw new Error(`${file}, line ${index + 1}: not a kept message`, { cause: error });
    }
    if (!queueUrls.has(message.queue)) {
      throw new Error(`${file}, line ${index + 1}: no queue ${message.queue} in this start`);
    }
    messages.push(message);
  }
  for (const [queue, ofQueue] of groupBy(messages, (message) => message.queue)) {
    await restoreQueue(sqs, queueUrls.get(queue) as string, ofQueue);
  }
  await rm(file);
  return messages.length;
}

async function restoreQueue(sqs: SQSClient, queueUrl: string, messages: KeptMessage[]) {
  const received: { receiptHandle: string; visibleAt?: number }[] = [];
  const rest: KeptMessage[] = [];
  for (const group of groupBy(messages, (message) => message.groupId).values()) {
    const [first, ...others] = group as [KeptMessage, ...KeptMessage[]];
    // fauxqs hands out a group's messages one at a time: only the first can have been received.
    if (first.receiveCount > 0) received.push(await receiveAgain(sqs, queueUrl, first));
    else rest.push(first);
    rest.push(...others);
  }
  // While its first message is received, a group's others wait behind it, in order.
  await new SqsFifoQueue(sqs, queueUrl).send(rest);
  for (const { receiptHandle, visibleAt } of received) {
    const waitMs = (visibleAt ?? 0) - Date.now();
    await setVisibility(sqs, queueUrl, receiptHandle, Math.max(0, Math.ceil(waitMs / 1000)));
  }
}

/**
 * Sends `message` alone and receives it `receiveCount` times, so that its receive count (the
 * outbox's attempt number, the redrive's count) goes on where it was. It stays received.
 */
async function receiveAgain(sqs: SQSClient, queueUrl: string, message: KeptMessage) {
  const { MessageId } = await sqs.send(
    new SendMessageCommand({
      QueueUrl: queueUrl,
      MessageBody: message.body,
      MessageGroupId: message.groupId,
      MessageDeduplicationId: message.deduplicationId,
    }),
  );
  let receiptHandle: string | undefined;
  for (let count = 0; count < message.receiveCount; count++) {
    if (receiptHandle) await setVisibility(sqs, queueUrl, receiptHandle, 0);
    // The messages received before this one stay invisible meanwhile: this is the only one.
    const { Messages } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 1,
        VisibilityTimeout: MAX_VISIBILITY_SECONDS,
      }),
    );
    const got = Messages?.[0];
    if (!got || got.MessageId !== MessageId) {
      throw new Error(`restoring ${queueUrl}: received ${got?.MessageId} instead of ${MessageId}`);
    }
    receiptHandle = got.ReceiptHandle as string;
  }
  return {
    receiptHandle: receiptHandle as string,
    ...(message.visibleAt !== undefined && { visibleAt: message.visibleAt }),
  };
}

const setVisibility = (sqs: SQSClient, queueUrl: string, receiptHandle: string, seconds: number) =>
  sqs.send(
    new ChangeMessageVisibilityCommand({
      QueueUrl: queueUrl,
      ReceiptHandle: receiptHandle,
      VisibilityTimeout: seconds,
    }),
  );

/** `items` by key, keys in the order first seen, each list in the order of `items`. */
function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const group = groups.get(key(item));
    if (group) group.push(item);
    else groups.set(key(item), [item]);
  }
  return groups;
}
