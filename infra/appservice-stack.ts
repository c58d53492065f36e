import { Duration, RemovalPolicy, Stack, type StackProps } from "aws-cdk-lib";
import { AttributeType, BillingMode, Table } from "aws-cdk-lib/aws-dynamodb";
import { Queue, QueueEncryption } from "aws-cdk-lib/aws-sqs";
import type { Construct } from "constructs";
import { TABLE_KEY } from "../functions/store/dynamodb/table.ts";

/** How long the events consumer may run; the inbound queue's visibility is six times this. */
export const EVENTS_FUNCTION_TIMEOUT = Duration.seconds(30);
/** Deliveries of a message before it moves to the dead-letter queue. */
export const MAX_RECEIVE_COUNT = 5;

/**
 * The appservice's storage: the single DynamoDB table and the inbound FIFO queue with its
 * dead-letter queue. (The functions and the HTTP API come with the infrastructure issue.)
 */
export class AppserviceStack extends Stack {
  readonly table: Table;
  readonly inboundQueue: Queue;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    this.table = new Table(this, "Table", {
      partitionKey: { name: TABLE_KEY.partitionKey, type: AttributeType.STRING },
      sortKey: { name: TABLE_KEY.sortKey, type: AttributeType.STRING },
      timeToLiveAttribute: TABLE_KEY.ttlAttribute,
      billingMode: BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      removalPolicy: RemovalPolicy.RETAIN,
    });
    const fifo = {
      fifo: true,
      contentBasedDeduplication: false,
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    };
    const deadLetterQueue = new Queue(this, "InboundDeadLetterQueue", {
      ...fifo,
      retentionPeriod: Duration.days(14),
    });
    this.inboundQueue = new Queue(this, "InboundQueue", {
      ...fifo,
      visibilityTimeout: Duration.seconds(EVENTS_FUNCTION_TIMEOUT.toSeconds() * 6),
      deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: MAX_RECEIVE_COUNT },
    });
  }
}
