import { processPartialResponse, SqsFifoPartialProcessorAsync } from "@aws-lambda-powertools/batch";
import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { type ReceivedMessageControl, RetryLater } from "../../queue/queue.ts";
import type { Log } from "../../shared/log.ts";
import type { Metrics } from "../../shared/metrics.ts";
import { flushMetrics } from "./metrics.ts";

export interface FifoBatchOptions {
  control: ReceivedMessageControl;
  /** The longest one record may take: none is started with less time than this left. */
  recordBudgetMs: number;
  log: Log;
}

class NotStarted extends Error {
  override name = "NotStarted";
}

/**
 * Runs an SQS FIFO batch in order: when a record fails, the rest of its group in the batch fails
 * with it (Powertools' FIFO processor), and other groups go on.
 *
 * A record that throws `RetryLater` comes back after the wait it names. Records failed without
 * running — behind a failure in their group, or left because the time left could not cover one
 * more — are made visible again at once: they come back behind the failed one (the group waits
 * for it) or at the next receive, not after the visibility timeout, and a record left for lack of
 * time never runs twice. Any other failure is logged, and the record comes back after the
 * visibility timeout.
 */
export async function processFifoBatch(
  event: SQSEvent,
  context: Context,
  processRecord: (record: SQSRecord, context: Context) => Promise<void>,
  { control, recordBudgetMs, log }: FifoBatchOptions,
): Promise<SQSBatchResponse> {
  const started = new Set<string>();
  const response = await processPartialResponse(
    event,
    async (record: SQSRecord) => {
      if (context.getRemainingTimeInMillis() < recordBudgetMs) throw new NotStarted();
      started.add(record.messageId);
      try {
        await processRecord(record, context);
      } catch (error) {
        const about = { messageId: record.messageId, groupId: record.attributes.MessageGroupId };
        if (!(error instanceof RetryLater)) {
          log.error("a queue message failed: it comes back after the visibility timeout", {
            ...about,
            error,
          });
          throw error;
        }
        await control.retryAfter(record.receiptHandle, error.delaySeconds).catch((cause) =>
          log.warn("a retry's wait could not be set: it comes back after the visibility timeout", {
            ...about,
            error: cause,
          }),
        );
        throw error;
      }
    },
    new SqsFifoPartialProcessorAsync(),
    { context, skipGroupOnError: true, throwOnFullBatchFailure: false },
  );
  const receiptOf = new Map(event.Records.map((r) => [r.messageId, r.receiptHandle]));
  const notStarted = response.batchItemFailures
    .map(({ itemIdentifier }) => itemIdentifier)
    .filter((id) => !started.has(id));
  if (notStarted.length > 0) {
    await control
      .retryNow(notStarted.map((id) => receiptOf.get(id) as string))
      .catch((error: unknown) =>
        log.warn(
          "messages not run could not be made visible: they come back after the visibility timeout",
          {
            count: notStarted.length,
            error,
          },
        ),
      );
  }
  return response;
}

/**
 * A FIFO queue's consumer (the events and outbox functions): each batch through
 * `processFifoBatch`, and the invocation's metrics flushed however it ends.
 */
export const fifoConsumer = (
  processRecord: (record: SQSRecord, context: Context) => Promise<void>,
  deps: FifoBatchOptions & { metrics: Metrics },
) =>
  middy<SQSEvent, SQSBatchResponse>()
    .use(flushMetrics(deps.metrics))
    .handler((event, context: Context) => processFifoBatch(event, context, processRecord, deps));
