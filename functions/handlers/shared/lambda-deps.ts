import type { Logger } from "@aws-lambda-powertools/logger";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SQSClient } from "@aws-sdk/client-sqs";
import type { Platform } from "../../wiring/deps.ts";
import { type Config, readConfig } from "../../wiring/env.ts";
import { createLogger } from "./logger.ts";
import { createCloudWatchMetrics } from "./metrics.ts";
import { hsTokenVersionsSource, secretStringSource, secretsManagerSource } from "./secrets.ts";

type AwsFunction = "transactions" | "events" | "outbox" | "queries" | "app" | "admin";

/**
 * A Lambda function's dependencies: its configuration read from the environment the stack set,
 * the SDK's clients at their AWS endpoints (`AWS_ENDPOINT_URL_*` if set), its tokens from
 * Secrets Manager, then built by the wiring.
 */
export function lambdaDeps<F extends AwsFunction, D>(
  fn: F,
  build: (config: Config<F>, platform: Platform<Logger>) => Promise<D>,
): Promise<D> {
  const config = readConfig(fn, process.env);
  const remoteSecretArn = (config as { remoteSecretArn?: string }).remoteSecretArn;
  const hsTokenSecretArn = (config as { hsTokenSecretArn?: string }).hsTokenSecretArn;
  const cryptoStoreSecretArn = (config as { cryptoStoreSecretArn?: string }).cryptoStoreSecretArn;
  return build(config, {
    dynamodb: new DynamoDBClient({}),
    sqs: new SQSClient({}),
    secrets: secretsManagerSource(config),
    ...(hsTokenSecretArn && { hsTokenVersions: hsTokenVersionsSource(hsTokenSecretArn) }),
    ...(remoteSecretArn && { remoteSecret: secretStringSource(remoteSecretArn) }),
    ...(cryptoStoreSecretArn && { cryptoStoreSecret: secretStringSource(cryptoStoreSecretArn) }),
    log: createLogger(),
    metrics: createCloudWatchMetrics(),
  });
}
