import { Logger } from "@aws-lambda-powertools/logger";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SQSClient } from "@aws-sdk/client-sqs";
import type { Application } from "../app/application.ts";
import { application as defaultApplication } from "../app/index.ts";
import type { Log } from "../appservice/log.ts";
import { loadRegistration, type Registration } from "../appservice/registration.ts";
import type { FifoQueue } from "../queue/queue.ts";
import { SqsFifoQueue } from "../queue/sqs/queue.ts";
import { DynamoDbStore } from "../store/dynamodb/store.ts";
import type { ClaimStore, TransactionStore } from "../store/store.ts";

/** Everything the handlers need, built once per process (cold start). */
export interface Runtime {
  registration: Registration;
  store: TransactionStore & ClaimStore;
  inboundQueue: FifoQueue;
  application: Application;
  log: Log;
  /** Lease on an item being processed; must be shorter than the inbound visibility timeout. */
  leaseMs: number;
}

export interface RuntimeOptions {
  registration: Registration;
  dynamodb: DynamoDBClient;
  sqs: SQSClient;
  tableName: string;
  inboundQueueUrl: string;
  application?: Application;
  log?: Log;
  leaseMs?: number;
}

export const DEFAULT_LEASE_MS = 60_000;

export const createLogger = () => new Logger({ serviceName: "matrix-appservice" });

export function createRuntime(options: RuntimeOptions): Runtime {
  return {
    registration: options.registration,
    store: new DynamoDbStore(options.dynamodb, options.tableName),
    inboundQueue: new SqsFifoQueue(options.sqs, options.inboundQueueUrl),
    application: options.application ?? defaultApplication,
    log: options.log ?? createLogger(),
    leaseMs: options.leaseMs ?? DEFAULT_LEASE_MS,
  };
}

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`Environment variable ${name} is required`);
  return value;
}

let environmentRuntime: Promise<Runtime> | undefined;

/**
 * The runtime a deployed function builds from its environment: `REGISTRATION` (file path),
 * `TABLE_NAME`, `INBOUND_QUEUE_URL`, optional `LEASE_MS`. SDK endpoints follow the SDK's own
 * `AWS_ENDPOINT_URL_*` variables.
 */
const runtimeFromEnvironment = (): Promise<Runtime> => {
  environmentRuntime ??= loadRegistration(requiredEnv("REGISTRATION")).then((registration) =>
    createRuntime({
      registration,
      dynamodb: new DynamoDBClient({}),
      sqs: new SQSClient({}),
      tableName: requiredEnv("TABLE_NAME"),
      inboundQueueUrl: requiredEnv("INBOUND_QUEUE_URL"),
      leaseMs: process.env.LEASE_MS ? Number(process.env.LEASE_MS) : undefined,
    }),
  );
  return environmentRuntime;
};

/** A Lambda entry point for a handler factory, its runtime built on the first invocation. */
export function fromEnvironment<E, R, C>(
  create: (runtime: Runtime) => (event: E, context: C) => Promise<R>,
): (event: E, context: C) => Promise<R> {
  let handler: Promise<(event: E, context: C) => Promise<R>> | undefined;
  return async (event, context) => {
    handler ??= runtimeFromEnvironment().then(create);
    return (await handler)(event, context);
  };
}
