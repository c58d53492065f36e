import { randomUUID } from "node:crypto";
import {
  DeleteMessageBatchCommand,
  type Message,
  ReceiveMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import type { Log } from "../shared/log.ts";

export type SqsHandler = (
  event: SQSEvent,
  context: Context,
) => Promise<SQSBatchResponse | undefined>;

export interface PollerOptions {
  sqs: SQSClient;
  queueUrl: string;
  queueArn: string;
  handler: SqsHandler;
  log: Log;
  /** Receive loops running at once, like Lambda's concurrent pollers. */
  concurrency: number;
  functionName: string;
  /** The function's timeout, as its context's remaining time counts down from it. */
  timeoutMs: number;
  /** Told the number of batches being handled whenever it changes. */
  onBusy?: (busy: number) => void;
}

/** An SQS message as Lambda's event source mapping hands it to a function. */
export const toRecord = (message: Message, queueArn: string): SQSRecord => ({
  messageId: message.MessageId as string,
  receiptHandle: message.ReceiptHandle as string,
  body: message.Body as string,
  attributes: message.Attributes as unknown as SQSRecord["attributes"],
  messageAttributes: {},
  md5OfBody: message.MD5OfBody as string,
  eventSource: "aws:sqs",
  eventSourceARN: queueArn,
  awsRegion: "us-east-1",
});

const lambdaContext = (functionName: string, timeoutMs: number): Context => {
  const deadline = Date.now() + timeoutMs;
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: "$LATEST",
    invokedFunctionArn: `arn:aws:lambda:us-east-1:000000000000:function:${functionName}`,
    memoryLimitInMB: "1024",
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: "local",
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  };
};

/** How long `stop()` lets the batches being handled finish. */
const STOP_WAIT_MS = 3000;

/**
 * What Lambda's SQS event source mapping does, for local mode: receive batches, invoke the
 * handler with an SQS event, delete what succeeded and leave the reported failures to
 * reappear after the visibility timeout (and to go to the dead-letter queue by redrive).
 */
export function startPoller(options: PollerOptions): {
  stop(): Promise<void>;
  /** Batches received and not yet settled: 0 when no handler runs. */
  busy(): number;
} {
  const { sqs, queueUrl, queueArn, handler, log } = options;
  let stopping = false;
  let busy = 0;
  const pollOnce = async () => {
    const { Messages } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        MessageSystemAttributeNames: ["All"],
      }),
    );
    if (!Messages || Messages.length === 0) return;
    options.onBusy?.(++busy);
    try {
      await handle(Messages);
    } finally {
      options.onBusy?.(--busy);
    }
  };
  const handle = async (messages: Message[]) => {
    const records = messages.map((message) => toRecord(message, queueArn));
    let failed: Set<string>;
    let timer: NodeJS.Timeout | undefined;
    try {
      // Lambda ends an invocation at its timeout, and its batch comes back after the visibility
      // timeout: the run left behind here is no longer waited for.
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Task timed out after ${options.timeoutMs / 1000} seconds`)),
          options.timeoutMs,
        );
      });
      const response = await Promise.race([
        handler({ Records: records }, lambdaContext(options.functionName, options.timeoutMs)),
        timedOut,
      ]);
      failed = new Set(response?.batchItemFailures.map((f) => f.itemIdentifier) ?? []);
    } catch (error) {
      log.error("handler failed; the whole batch will be retried", { queueUrl, error });
      return;
    } finally {
      clearTimeout(timer);
    }
    const done = records.filter((record) => !failed.has(record.messageId));
    if (done.length === 0) return;
    await sqs.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: done.map((record, i) => ({ Id: String(i), ReceiptHandle: record.receiptHandle })),
      }),
    );
  };
  const loop = async () => {
    while (!stopping) {
      try {
        await pollOnce();
      } catch (error) {
        if (stopping) return;
        log.warn("queue poll failed; retrying", { queueUrl, error });
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  };
  const loops = Array.from({ length: options.concurrency }, loop);
  return {
    // A receive is not cut short (it waits a second at most): fauxqs would still hand out its
    // messages, to no one. A batch that outlasts the wait is left to its visibility timeout.
    async stop() {
      stopping = true;
      let timer: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        Promise.all(loops).then(() => true),
        new Promise<false>((resolve) => {
          timer = setTimeout(() => resolve(false), STOP_WAIT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (!finished) {
        log.warn("a batch was still being handled at the stop: it stays queued, to be retried", {
          queueUrl,
        });
      }
    },
    busy: () => busy,
  };
}
