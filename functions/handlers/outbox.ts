import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { sha256 } from "../appservice/hash.ts";
import type { Metrics } from "../appservice/metrics.ts";
import { type OutboxDeps, performAction } from "../matrix/outbox.ts";
import type { OutboundAction } from "../matrix/request.ts";
import { queueJson, type ReceivedMessageControl, RetryLater } from "../queue/queue.ts";
import { outboxDeps } from "../wiring/deps.ts";
import { processFifoBatch } from "./shared/fifo-batch.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";
import { flushMetrics } from "./shared/metrics.ts";

export interface OutboxHandlerDeps extends OutboxDeps {
  control: ReceivedMessageControl;
  metrics: Metrics;
  /** `actionBudgetMs` of the homeserver's timeout. */
  recordBudgetMs: number;
}

/**
 * The outbound queue's consumer: performs each action on the homeserver, in order per group.
 * A message to retry is failed with the wait the outbox chose; one that can never succeed goes
 * to the dead-letter queue with its reason, so its room goes on.
 */
export const createOutboxHandler = (deps: OutboxHandlerDeps) => {
  const processRecord = async (record: SQSRecord) => {
    const action = JSON.parse(record.body) as OutboundAction;
    const attempt = Number(record.attributes.ApproximateReceiveCount) - 1;
    const outcome = await performAction(action, attempt, deps);
    const about = {
      actionId: action.id,
      kind: action.kind,
      userId: action.userId,
      roomId: action.roomId,
    };
    deps.metrics.count(
      outcome.kind === "done"
        ? "OutboundCallsDone"
        : outcome.kind === "retry"
          ? "OutboundCallsRetried"
          : "OutboundCallsDeadLettered",
    );
    if (outcome.kind === "retry") {
      deps.log.warn("outbound call to retry", { ...about, attempt, ...outcome });
      throw new RetryLater(outcome.delaySeconds, outcome.reason);
    }
    if (outcome.kind === "dead") {
      deps.log.error("outbound call failed for good: dead-lettered", {
        ...about,
        reason: outcome.reason,
      });
      await deps.control.deadLetter({
        groupId: record.attributes.MessageGroupId ?? action.userId,
        // Not the action's id, which a refused action may not have in a form SQS takes.
        deduplicationId: sha256(record.body),
        body: queueJson({
          action,
          reason: outcome.reason,
          failedAt: new Date().toISOString(),
        }),
      });
    }
  };
  return middy<SQSEvent, SQSBatchResponse>()
    .use(flushMetrics(deps.metrics))
    .handler((event, context: Context) =>
      processFifoBatch(event, context, processRecord, {
        control: deps.control,
        recordBudgetMs: deps.recordBudgetMs,
        log: deps.log,
      }),
    );
};

export const handler = lambdaHandler(() => lambdaDeps("outbox", outboxDeps), createOutboxHandler);
