import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SQSClient } from "@aws-sdk/client-sqs";
import middy from "@middy/core";
import type { Context, SQSBatchResponse, SQSEvent, SQSRecord } from "aws-lambda";
import { createNamespaceMatcher } from "../appservice/protocol/namespaces.ts";
import type { Registration } from "../appservice/protocol/registration.ts";
import { DEFAULT_BACKOFF } from "../matrix/backoff.ts";
import { BotProfileKeeper, botProfile } from "../matrix/bot-profile.ts";
import { HttpHomeserverClient } from "../matrix/http-client.ts";
import { decideOutboundAction, MAX_CALLS_PER_ACTION, type OutboxDeps } from "../matrix/outbox.ts";
import type { OutboundAction } from "../matrix/request.ts";
import { queueJson, type ReceivedMessageControl, RetryLater } from "../queue/queue.ts";
import { SqsMessageControl } from "../queue/sqs/message-control.ts";
import { sha256 } from "../shared/hash.ts";
import type { Metrics } from "../shared/metrics.ts";
import { DynamoDbStore } from "../store/dynamodb/store.ts";
import { processFifoBatch } from "./shared/fifo-batch.ts";
import { lambdaHandler, requiredEnv } from "./shared/lambda-handler.ts";
import { createLogger } from "./shared/logger.ts";
import { createCloudWatchMetrics, flushMetrics } from "./shared/metrics.ts";
import { secretFromEnv } from "./shared/secrets.ts";

/** How long the outbox waits for one answer of the homeserver. */
export const HOMESERVER_TIMEOUT_MS = 20_000;

/**
 * The longest one action may take: each of its calls waiting the full timeout, and the requests
 * to DynamoDB and SQS around them. No message is started with less time left than this.
 */
export const actionBudgetMs = (homeserverTimeoutMs: number) =>
  homeserverTimeoutMs * MAX_CALLS_PER_ACTION + 5_000;

/**
 * How long the outbox function may run: two actions at their worst, so that every batch makes
 * progress, and an ordinary one (calls answered in milliseconds) finishes whole.
 */
export const OUTBOX_TIMEOUT_MS = 2 * actionBudgetMs(HOMESERVER_TIMEOUT_MS);

export interface OutboxHandlerDeps extends OutboxDeps {
  control: ReceivedMessageControl;
  metrics: Metrics;
  /** `actionBudgetMs` of the homeserver's timeout. */
  recordBudgetMs: number;
}

/**
 * The outbound queue's consumer: hands each action to the outbox (`decideOutboundAction`), in
 * order per group, and does what it decided: a message to retry is failed with its wait; one
 * that can never succeed goes to the dead-letter queue, so its room goes on.
 */
export const createOutboxHandler = (deps: OutboxHandlerDeps) => {
  const processRecord = async (record: SQSRecord) => {
    const action = JSON.parse(record.body) as OutboundAction;
    const attempt = Number(record.attributes.ApproximateReceiveCount) - 1;
    const decision = await decideOutboundAction(action, attempt, deps);
    deps.metrics.count(decision.metric);
    if (decision.kind === "retry") throw new RetryLater(decision.delaySeconds, decision.reason);
    if (decision.kind === "dead") {
      await deps.control.deadLetter({
        groupId: record.attributes.MessageGroupId ?? action.userId,
        // Not the action's id, which a refused action may not have in a form SQS takes.
        deduplicationId: sha256(record.body),
        body: queueJson(decision.deadLetter),
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
      HOMESERVER_TIMEOUT_MS,
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
    recordBudgetMs: actionBudgetMs(HOMESERVER_TIMEOUT_MS),
    control: new SqsMessageControl(
      sqs,
      requiredEnv("OUTBOUND_QUEUE_URL"),
      requiredEnv("OUTBOUND_DEAD_LETTER_QUEUE_URL"),
    ),
  };
}, createOutboxHandler);
