import { createHash } from "node:crypto";
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import type {
  ClaimOutcome,
  ClaimStore,
  RecordOutcome,
  TransactionRecord,
  TransactionStore,
} from "../store.ts";

/** How long transaction and item records are kept to recognise retries (TTL). */
export const RETENTION_SECONDS = 30 * 24 * 3600;

// Partition keys allow 2048 bytes; an ID longer than this is stored under its hash.
const MAX_ID_BYTES = 1024;
const keyOf = (prefix: string, id: string) => ({
  pk: {
    S: `${prefix}${Buffer.byteLength(id) > MAX_ID_BYTES ? `sha256:${createHash("sha256").update(id).digest("hex")}` : id}`,
  },
  sk: { S: "-" },
});

const expiresAt = (nowMs: number) => ({ N: String(Math.floor(nowMs / 1000) + RETENTION_SECONDS) });

const isConditionFailure = (error: unknown): error is ConditionalCheckFailedException =>
  error instanceof ConditionalCheckFailedException ||
  (error as { name?: string }).name === "ConditionalCheckFailedException";

/** The single-table DynamoDB adapter (`pk`/`sk` strings, `expiresAt` TTL). */
export class DynamoDbStore implements TransactionStore, ClaimStore {
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

  async claim(key: string, owner: string, leaseMs: number): Promise<ClaimOutcome> {
    const now = this.now();
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.tableName,
          Item: {
            ...keyOf("", key),
            status: { S: "INPROGRESS" },
            leaseOwner: { S: owner },
            leaseUntil: { N: String(now + leaseMs) },
            expiresAt: expiresAt(now),
          },
          ConditionExpression:
            "attribute_not_exists(pk) OR (#status = :inProgress AND leaseUntil < :now)",
          ExpressionAttributeNames: { "#status": "status" },
          ExpressionAttributeValues: {
            ":inProgress": { S: "INPROGRESS" },
            ":now": { N: String(now) },
          },
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
      );
      return "claimed";
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
    try {
      await this.client.send(
        new DeleteItemCommand({
          TableName: this.tableName,
          Key: keyOf("", key),
          ConditionExpression: "#status = :inProgress AND leaseOwner = :owner",
          ExpressionAttributeNames: { "#status": "status" },
          ExpressionAttributeValues: { ":inProgress": { S: "INPROGRESS" }, ":owner": { S: owner } },
        }),
      );
    } catch (error) {
      // Someone else holds or finished it: nothing of ours to give up.
      if (!isConditionFailure(error)) throw error;
    }
  }
}
