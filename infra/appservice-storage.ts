import { Duration, RemovalPolicy } from "aws-cdk-lib";
import { AttributeType, BillingMode, Table } from "aws-cdk-lib/aws-dynamodb";
import { type IGrantable, PolicyStatement } from "aws-cdk-lib/aws-iam";
import {
  DeduplicationScope,
  FifoThroughputLimit,
  type IQueue,
  Queue,
  QueueEncryption,
} from "aws-cdk-lib/aws-sqs";
import type { Construct } from "constructs";
import { INBOUND_MAX_RECEIVE_COUNT } from "../functions/appservice/pipeline/process-inbound.ts";
import { MAX_MESSAGE_BYTES } from "../functions/queue/queue.ts";
import { OUTBOUND_MAX_RECEIVE_COUNT } from "../functions/shared/backoff.ts";
import { TABLE_KEY } from "../functions/store/dynamodb/table.ts";
import {
  EVENTS_TIMEOUT_MS,
  OUTBOX_TIMEOUT_MS,
  visibilityTimeoutSeconds,
} from "../functions/wiring/timeouts.ts";

/** Every queue, and every dead-letter queue, keeps a message this long (SQS's maximum). */
export const QUEUE_RETENTION = Duration.days(14);

export interface AppserviceStorageProps {
  /** @default true */
  tableDeletionProtection?: boolean;
}

/**
 * What the appservice keeps: the DynamoDB table (one table, its items by key prefix), the inbound
 * FIFO queue (the transactions' events, for the events function) and the outbound one (the calls
 * on the homeserver, for the outbox), each with its dead-letter queue. All retained: a replaced
 * table or queue (a new logical ID) must not take its items or messages with it.
 *
 * It grants by action and key prefix (`grantTable`) and by queue (`grantSend`): the functions
 * get the least they need (appservice-functions.ts says which).
 *
 * Made in the appservice's own scope, not a construct of its own: see `MatrixAppservice`.
 */
export class AppserviceStorage {
  readonly table: Table;
  readonly inboundQueue: Queue;
  readonly inboundDeadLetterQueue: Queue;
  readonly outboundQueue: Queue;
  readonly outboundDeadLetterQueue: Queue;

  constructor(scope: Construct, props: AppserviceStorageProps) {
    this.table = new Table(scope, "Table", {
      partitionKey: { name: TABLE_KEY.partitionKey, type: AttributeType.STRING },
      sortKey: { name: TABLE_KEY.sortKey, type: AttributeType.STRING },
      timeToLiveAttribute: TABLE_KEY.ttlAttribute,
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: props.tableDeletionProtection ?? true,
      removalPolicy: RemovalPolicy.RETAIN,
    });

    // High-throughput FIFO (free): deduplication and the throughput limit per group, not per
    // queue. Retained: a replaced queue (a new logical ID) must not take its messages with it.
    const fifo = {
      fifo: true,
      contentBasedDeduplication: false,
      deduplicationScope: DeduplicationScope.MESSAGE_GROUP,
      fifoThroughputLimit: FifoThroughputLimit.PER_MESSAGE_GROUP_ID,
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: QUEUE_RETENTION,
      // SQS's most: an inbound item over it is set aside in the table and queued by reference.
      maxMessageSizeBytes: MAX_MESSAGE_BYTES,
      removalPolicy: RemovalPolicy.RETAIN,
    };
    this.inboundDeadLetterQueue = new Queue(scope, "InboundDeadLetterQueue", fifo);
    // The events consumer counts each item's attempts and dead-letters a failing item itself:
    // SQS's redrive is only the last resort.
    this.inboundQueue = new Queue(scope, "InboundQueue", {
      ...fifo,
      visibilityTimeout: Duration.seconds(visibilityTimeoutSeconds(EVENTS_TIMEOUT_MS)),
      deadLetterQueue: {
        queue: this.inboundDeadLetterQueue,
        maxReceiveCount: INBOUND_MAX_RECEIVE_COUNT,
      },
    });

    // The outbox sets each retry's wait itself and dead-letters what can never succeed: SQS's
    // redrive is only the last resort, after days of retries.
    this.outboundDeadLetterQueue = new Queue(scope, "OutboundDeadLetterQueue", fifo);
    this.outboundQueue = new Queue(scope, "OutboundQueue", {
      ...fifo,
      visibilityTimeout: Duration.seconds(visibilityTimeoutSeconds(OUTBOX_TIMEOUT_MS)),
      deadLetterQueue: {
        queue: this.outboundDeadLetterQueue,
        maxReceiveCount: OUTBOUND_MAX_RECEIVE_COUNT,
      },
    });
  }

  /** The dead-letter queues: the operator console's, and the last resort of SQS's redrive. */
  get deadLetterQueues(): Queue[] {
    return [this.inboundDeadLetterQueue, this.outboundDeadLetterQueue];
  }

  /**
   * Lets `fn` call these table actions (`GetItem`, …), on the items whose partition key starts
   * with one of `keyPrefixes` alone when given (`dynamodb:LeadingKeys`).
   */
  grantTable(fn: IGrantable, actions: string[], keyPrefixes?: string[]) {
    fn.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({
        actions: actions.map((action) => `dynamodb:${action}`),
        resources: [this.table.tableArn],
        ...(keyPrefixes && {
          conditions: {
            "ForAllValues:StringLike": {
              "dynamodb:LeadingKeys": keyPrefixes.map((prefix) => `${prefix}*`),
            },
          },
        }),
      }),
    );
  }

  /** Lets `fn` send to `queue`, and nothing else of it. */
  grantSend(fn: IGrantable, queue: IQueue) {
    fn.grantPrincipal.addToPrincipalPolicy(
      new PolicyStatement({ actions: ["sqs:SendMessage"], resources: [queue.queueArn] }),
    );
  }
}
