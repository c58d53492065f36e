import {
  type AttributeValue,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import type { ServerErrorCounter } from "../../queue/outbound.ts";
import { sha256 } from "../../shared/hash.ts";
import type { SentEventReader, SentEventRecorder } from "../sent-events.ts";
import {
  ABANDONED_RUN_REASON,
  type ClaimOutcome,
  type ClaimStore,
  holdsClaim,
  type LastTransaction,
  type RecordOutcome,
  type TransactionHistory,
  type TransactionRecord,
  type TransactionStore,
} from "../store.ts";

/** How long transaction and item records are kept to recognise retries (TTL). */
export const RETENTION_SECONDS = 30 * 24 * 3600;

// Partition keys allow 2048 bytes; an ID longer than this is stored under its hash.
const MAX_ID_BYTES = 1024;
/**
 * How the keys of the outbox's records of an action begin: its server errors counted, its event
 * ID once sent (for the sends that asked).
 */
export const SERVER_ERRORS_KEY_PREFIX = "OUTBOX#";
/** How the key of an item whose ID is too long for a partition key begins. */
export const HASHED_KEY_PREFIX = "sha256:";
export const storedId = (id: string) =>
  Buffer.byteLength(id) > MAX_ID_BYTES ? `${HASHED_KEY_PREFIX}${sha256(id)}` : id;
export const keyOf = (prefix: string, id: string, sk = "-") => ({
  pk: { S: `${prefix}${storedId(id)}` },
  sk: { S: sk },
});

/** Makes a record claimable again at once (PENDING, no lease). */
const GIVE_UP_LEASE = "REMOVE leaseOwner, leaseUntil";
/** A failed run on the record: its reason and time set, and counted. */
const FAILED_RUN = { set: "lastError = :reason, failedAt = :now", add: "ADD attempts :one" };

// A failure's reason is kept for whoever looks at the record, not in full.
const MAX_REASON_CHARS = 1000;

const expiresAt = (nowMs: number, seconds = RETENTION_SECONDS) => ({
  N: String(Math.floor(nowMs / 1000) + seconds),
});
/** How long a send's event ID is kept: a waiting request reads it within seconds. */
const SENT_EVENT_RETENTION_SECONDS = 24 * 3600;

export const isConditionFailure = (error: unknown): error is ConditionalCheckFailedException =>
  error instanceof ConditionalCheckFailedException ||
  (error as { name?: string }).name === "ConditionalCheckFailedException";

/** The single-table DynamoDB adapter (`pk`/`sk` strings, `expiresAt` TTL). */
export class DynamoDbStore
  implements
    TransactionStore,
    TransactionHistory,
    ClaimStore,
    ServerErrorCounter,
    SentEventRecorder,
    SentEventReader
{
  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
    private readonly now: () => number = Date.now,
  ) {}

  async recordTransaction(txnId: string, { bodyHash }: TransactionRecord): Promise<RecordOutcome> {
    try {
      const { Attributes } = await this.client.send(
        new PutItemCommand({
          TableName: this.tableName,
          Item: {
            ...keyOf("TXN#", txnId),
            bodyHash: { S: bodyHash },
            recordedAt: { N: String(this.now()) },
            expiresAt: expiresAt(this.now()),
          },
          ConditionExpression: "attribute_not_exists(pk) OR bodyHash <> :hash",
          ExpressionAttributeValues: { ":hash": { S: bodyHash } },
          ReturnValues: "ALL_OLD",
        }),
      );
      return Attributes ? "replaced" : "recorded";
    } catch (error) {
      if (isConditionFailure(error)) return "duplicate";
      throw error;
    }
  }

  /**
   * A Scan of the table (each TXN# record is a partition of its own): no cost on the ack path,
   * and read only when someone asks (`npm run ping`), at about $0.02 per GB of table in AWS.
   */
  async lastTransaction(): Promise<LastTransaction | undefined> {
    let last: { txnId: string; recordedAt: number } | undefined;
    let startKey: Record<string, AttributeValue> | undefined;
    do {
      const page = await this.client.send(
        new ScanCommand({
          TableName: this.tableName,
          FilterExpression: "begins_with(pk, :txn)",
          ExpressionAttributeValues: { ":txn": { S: "TXN#" } },
          ProjectionExpression: "pk, recordedAt, expiresAt",
          ...(startKey && { ExclusiveStartKey: startKey }),
        }),
      );
      for (const item of page.Items ?? []) {
        // Records written before recordedAt existed: their expiry tells the second.
        const recordedAt = item.recordedAt?.N
          ? Number(item.recordedAt.N)
          : (Number(item.expiresAt?.N) - RETENTION_SECONDS) * 1000;
        if (!last || recordedAt > last.recordedAt) {
          last = { txnId: (item.pk?.S ?? "").slice("TXN#".length), recordedAt };
        }
      }
      startKey = page.LastEvaluatedKey;
    } while (startKey);
    return last && { txnId: last.txnId, recordedAt: new Date(last.recordedAt) };
  }

  /**
   * One conditional write per key, all at once: each key's outcome depends on its own record
   * alone, so a transaction would add nothing but its double price (2 write units a key).
   */
  async claim(keys: string[], owner: string, leaseMs: number): Promise<Map<string, ClaimOutcome>> {
    const now = this.now();
    const results = await Promise.allSettled(
      keys.map((key) => this.claimOne(key, owner, leaseMs, now)),
    );
    const failure = results.find((result) => result.status === "rejected");
    if (failure) {
      // The caller learns nothing of what was claimed: give it back (or it expires with its lease).
      await Promise.all(
        keys.map((key, i) => {
          const result = results[i];
          return result?.status === "fulfilled" && holdsClaim(result.value)
            ? this.release(key, owner).catch(() => undefined)
            : undefined;
        }),
      );
      throw failure.reason;
    }
    return new Map(
      keys.map((key, i) => [key, (results[i] as PromiseFulfilledResult<ClaimOutcome>).value]),
    );
  }

  private async claimOne(
    key: string,
    owner: string,
    leaseMs: number,
    now: number,
  ): Promise<ClaimOutcome> {
    try {
      const { Attributes } = await this.client.send(
        // An update, not a put: the record keeps the count of the item's failed runs.
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: keyOf("", key),
          UpdateExpression:
            "SET #status = :inProgress, leaseOwner = :owner, leaseUntil = :until, expiresAt = :expiresAt",
          ConditionExpression:
            "attribute_not_exists(pk) OR #status = :pending OR (#status = :inProgress AND leaseUntil < :now)",
          ExpressionAttributeNames: { "#status": "status" },
          ExpressionAttributeValues: {
            ":inProgress": { S: "INPROGRESS" },
            ":pending": { S: "PENDING" },
            ":owner": { S: owner },
            ":until": { N: String(now + leaseMs) },
            ":expiresAt": expiresAt(now),
            ":now": { N: String(now) },
          },
          // The status before tells a lease that ran out (no extra write unit).
          ReturnValues: "UPDATED_OLD",
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
      );
      return Attributes?.status?.S === "INPROGRESS" ? "taken over" : "claimed";
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
      return error.Item?.status?.S === "DONE" ? "done" : "busy";
    }
  }

  async complete(key: string): Promise<void> {
    await this.client.send(
      new UpdateItemCommand({
        TableName: this.tableName,
        Key: keyOf("", key),
        UpdateExpression:
          "SET #status = :done, expiresAt = :expiresAt REMOVE leaseOwner, leaseUntil",
        ExpressionAttributeNames: { "#status": "status" },
        ExpressionAttributeValues: { ":done": { S: "DONE" }, ":expiresAt": expiresAt(this.now()) },
      }),
    );
  }

  async release(key: string, owner: string): Promise<void> {
    await this.updateOwnLease(key, owner, `SET #status = :pending ${GIVE_UP_LEASE}`, {
      ":pending": { S: "PENDING" },
    });
  }

  async fail(key: string, owner: string, reason: string): Promise<number> {
    const attributes = await this.updateOwnLease(
      key,
      owner,
      `SET #status = :pending, ${FAILED_RUN.set} ${GIVE_UP_LEASE} ${FAILED_RUN.add}`,
      { ":pending": { S: "PENDING" }, ...this.failedRun(reason) },
    );
    return Number(attributes?.attempts?.N ?? 0);
  }

  async countAbandonedRun(key: string, owner: string): Promise<number> {
    const attributes = await this.updateOwnLease(
      key,
      owner,
      `SET ${FAILED_RUN.set} ${FAILED_RUN.add}`,
      this.failedRun(ABANDONED_RUN_REASON),
    );
    return Number(attributes?.attempts?.N ?? 0);
  }

  private failedRun(reason: string): Record<string, AttributeValue> {
    return {
      ":reason": { S: reason.slice(0, MAX_REASON_CHARS) },
      ":now": { N: String(this.now()) },
      ":one": { N: "1" },
    };
  }

  /**
   * Updates a record while `owner` holds its lease; undefined when someone else holds or
   * finished it.
   */
  private async updateOwnLease(
    key: string,
    owner: string,
    updateExpression: string,
    values: Record<string, AttributeValue>,
  ): Promise<Record<string, AttributeValue> | undefined> {
    try {
      const { Attributes } = await this.client.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: keyOf("", key),
          UpdateExpression: updateExpression,
          ConditionExpression: "#status = :inProgress AND leaseOwner = :owner",
          ExpressionAttributeNames: { "#status": "status" },
          ExpressionAttributeValues: {
            ":inProgress": { S: "INPROGRESS" },
            ":owner": { S: owner },
            ...values,
          },
          ReturnValues: "UPDATED_NEW",
        }),
      );
      return Attributes ?? {};
    } catch (error) {
      // Someone else holds or finished it: nothing of ours to change.
      if (isConditionFailure(error)) return undefined;
      throw error;
    }
  }

  async countServerError(actionId: string): Promise<number> {
    const { Attributes } = await this.client.send(
      new UpdateItemCommand({
        TableName: this.tableName,
        Key: keyOf(SERVER_ERRORS_KEY_PREFIX, actionId),
        UpdateExpression: "ADD serverErrors :one SET expiresAt = :expiresAt",
        ExpressionAttributeValues: { ":one": { N: "1" }, ":expiresAt": expiresAt(this.now()) },
        ReturnValues: "UPDATED_NEW",
      }),
    );
    return Number(Attributes?.serverErrors?.N);
  }

  async recordEventId(actionId: string, eventId: string): Promise<void> {
    await this.client.send(
      new UpdateItemCommand({
        TableName: this.tableName,
        Key: keyOf(SERVER_ERRORS_KEY_PREFIX, actionId),
        UpdateExpression: "SET eventId = :eventId, expiresAt = :expiresAt",
        ExpressionAttributeValues: {
          ":eventId": { S: eventId },
          ":expiresAt": expiresAt(this.now(), SENT_EVENT_RETENTION_SECONDS),
        },
      }),
    );
  }

  async eventIdOf(actionId: string): Promise<string | undefined> {
    const { Item } = await this.client.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: keyOf(SERVER_ERRORS_KEY_PREFIX, actionId),
        ProjectionExpression: "eventId",
        ConsistentRead: true,
      }),
    );
    return Item?.eventId?.S;
  }
}
