import { processPartialResponse, SqsFifoPartialProcessorAsync } from "@aws-lambda-powertools/batch";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SQSClient } from "@aws-sdk/client-sqs";
import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { createNamespaceMatcher } from "../appservice/protocol/namespaces.ts";
import type { Registration } from "../appservice/protocol/registration.ts";
import { DEFAULT_BACKOFF } from "../matrix/backoff.ts";
import { BotProfileKeeper, botProfile } from "../matrix/bot-profile.ts";
import { HttpHomeserverClient } from "../matrix/http-client.ts";
import { type OutboxDeps, performAction } from "../matrix/outbox.ts";
import type { OutboundAction } from "../matrix/request.ts";
import { queueJson, type ReceivedMessageControl } from "../queue/queue.ts";
import { SqsMessageControl } from "../queue/sqs/message-control.ts";
import { sha256 } from "../shared/hash.ts";
import type { Metrics } from "../shared/metrics.ts";
import { DynamoDbStore } from "../store/dynamodb/store.ts";
import { lambdaHandler, requiredEnv } from "./shared/lambda-handler.ts";
import { createLogger } from "./shared/logger.ts";
import { createCloudWatchMetrics, flushMetrics } from "./shared/metrics.ts";
import { secretFromEnv } from "./shared/secrets.ts";

export interface OutboxHandlerDeps extends OutboxDeps {
  control: ReceivedMessageControl;
  metrics: Metrics;
}

class RetryLater extends Error {
  override name = "RetryLater";
}

/**
 * The outbound queue's consumer: performs each action on the homeserver, in order per group.
 * A message to retry is failed with the wait the outbox chose; one that can never succeed goes
 * to the dead-letter queue with its reason, so its room goes on.
 */
export const createOutboxHandler = (deps: OutboxHandlerDeps) =>
  middy<SQSEvent, SQSBatchResponse>()
    .use(flushMetrics(deps.metrics))
    .handler(async (event, context: Context) => {
      const attempted = new Set<string>();
      const processRecord = async (record: SQSRecord) => {
        attempted.add(record.messageId);
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
          await deps.control.retryAfter(record.receiptHandle, outcome.delaySeconds);
          throw new RetryLater(outcome.reason);
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
      const response = await processPartialResponse(
        event,
        processRecord,
        new SqsFifoPartialProcessorAsync(),
        {
          context,
          skipGroupOnError: true,
          throwOnFullBatchFailure: false,
        },
      );
      // Messages failed only because an earlier one of their group failed: visible again at once.
      // They stay behind that one, which the FIFO queue hands out first when its wait is over.
      const receiptOf = new Map(event.Records.map((r) => [r.messageId, r.receiptHandle]));
      await Promise.all(
        response.batchItemFailures
          .filter(({ itemIdentifier }) => !attempted.has(itemIdentifier))
          .map(({ itemIdentifier }) =>
            deps.control.retryAfter(receiptOf.get(itemIdentifier) as string, 0),
          ),
      );
      return response;
    });

export const handler = lambdaHandler(async () => {
  const sqs = new SQSClient({});
  const store = new DynamoDbStore(new DynamoDBClient({}), requiredEnv("TABLE_NAME"));
  const botUserId = requiredEnv("BOT_USER_ID");
  // The stack validated the registration at synth time.
  const { namespaces } = JSON.parse(requiredEnv("REGISTRATION_JSON")) as Pick<
    Registration,
    "namespaces"
  >;
  const users = createNamespaceMatcher(namespaces);
  const log = createLogger();
  return {
    homeserver: new HttpHomeserverClient(
      requiredEnv("HOMESERVER_URL"),
      await secretFromEnv("AS_TOKEN_SECRET_ARN"),
      botUserId,
      Number(process.env.HOMESERVER_TIMEOUT_MS ?? 20_000),
    ),
    membership: store,
    serverErrors: store,
    botUserId,
    isOurUser: (userId: string) => users.matches("users", userId),
    backoff: DEFAULT_BACKOFF,
    log,
    // The stack sets BOT_DISPLAY_NAME (its default: the registration's id).
    botProfile: new BotProfileKeeper(
      botUserId,
      botProfile(requiredEnv("BOT_DISPLAY_NAME"), process.env.BOT_AVATAR_URL),
      store,
      log,
    ),
    metrics: createCloudWatchMetrics(),
    control: new SqsMessageControl(
      sqs,
      requiredEnv("OUTBOUND_QUEUE_URL"),
      requiredEnv("OUTBOUND_DEAD_LETTER_QUEUE_URL"),
    ),
  };
}, createOutboxHandler);
