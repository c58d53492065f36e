import type { Logger } from "@aws-lambda-powertools/logger";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SQSClient } from "@aws-sdk/client-sqs";
import type { ServiceDeps } from "../../appservice/service-context.ts";
import { httpHomeserverReader } from "../../matrix/room-state.ts";
import { SqsFifoQueue } from "../../queue/sqs/queue.ts";
import { DynamoDbAppData } from "../../store/dynamodb/app-data.ts";
import { requiredEnv } from "./lambda-handler.ts";
import { createLogger } from "./logger.ts";
import { secretFromEnv } from "./secrets.ts";

/**
 * The application's services from the environment: `OUTBOUND_QUEUE_URL`, `BOT_USER_ID`,
 * `HOMESERVER_URL`, `AS_TOKEN_SECRET_ARN`, `TABLE_NAME`, `PUBLIC_BASE_URL`.
 */
export async function serviceDepsFromEnv(): Promise<ServiceDeps & { log: Logger }> {
  const botUserId = requiredEnv("BOT_USER_ID");
  const asToken = await secretFromEnv("AS_TOKEN_SECRET_ARN");
  return {
    log: createLogger(),
    outboundQueue: new SqsFifoQueue(new SQSClient({}), requiredEnv("OUTBOUND_QUEUE_URL")),
    botUserId,
    homeserver: httpHomeserverReader(requiredEnv("HOMESERVER_URL"), asToken, botUserId),
    data: new DynamoDbAppData(new DynamoDBClient({}), requiredEnv("TABLE_NAME")),
    publicBaseUrl: requiredEnv("PUBLIC_BASE_URL").replace(/\/+$/, ""),
    secretKey: asToken,
  };
}
