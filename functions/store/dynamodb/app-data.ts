import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  paginateQuery,
  TransactionCanceledException,
  type TransactWriteItem,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import type { AppDataStore, AppDataWrite, AppValue } from "../app-data.ts";

/** The partition keys of application data: the stack keeps the application's code to them. */
export const APP_DATA_KEY_PREFIX = "APP#";
/**
 * The partition keys of what the immediate calls remember for the application (rooms by key,
 * media by hash, puppets): apart from its data, so that nothing it writes there can clash.
 */
export const CALL_RECORDS_KEY_PREFIX = "CALLS#";
/**
 * The partition keys of the encrypted events the events function delivered without their room
 * key, kept (their ciphertext) to be delivered again once it comes.
 */
export const UNDECRYPTABLE_KEY_PREFIX = "UNDECRYPTABLE#";

// The table's TTL deletes an expired item only within days: until then reads skip it, and a
// write `ifAbsent` takes its place.
const expired = (item: Record<string, { N?: string }>, nowMs: number) =>
  item.expiresAt?.N !== undefined && Number(item.expiresAt.N) * 1000 <= nowMs;

/**
 * Application data in the appservice's table: a collection is a partition, `APP#<name>` (or
 * under another prefix, for the immediate calls' records).
 */
export class DynamoDbAppData implements AppDataStore {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
    private readonly keyPrefix: string = APP_DATA_KEY_PREFIX,
    private readonly now: () => number = Date.now,
  ) {}

  private keyOf(collection: string, key: string) {
    return { pk: { S: `${this.keyPrefix}${collection}` }, sk: { S: key } };
  }

  async get(collection: string, key: string): Promise<AppValue | undefined> {
    const { Item } = await this.client.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: this.keyOf(collection, key),
        ConsistentRead: true,
      }),
    );
    if (!Item?.value?.S || expired(Item, this.now())) return undefined;
    return JSON.parse(Item.value.S) as AppValue;
  }

  async list(collection: string): Promise<{ key: string; value: AppValue }[]> {
    const entries: { key: string; value: AppValue }[] = [];
    const pages = paginateQuery(
      { client: this.client },
      {
        TableName: this.tableName,
        KeyConditionExpression: "pk = :pk",
        ExpressionAttributeValues: { ":pk": { S: `${this.keyPrefix}${collection}` } },
        ConsistentRead: true,
      },
    );
    for await (const page of pages) {
      for (const item of page.Items ?? []) {
        if (expired(item, this.now())) continue;
        entries.push({ key: item.sk?.S as string, value: JSON.parse(item.value?.S ?? "{}") });
      }
    }
    return entries;
  }

  /** The write as one of a transaction's items (`Put` or `Delete`, the same shape as alone). */
  private itemOf(write: AppDataWrite): TransactWriteItem {
    if ("delete" in write) {
      return {
        Delete: { TableName: this.tableName, Key: this.keyOf(write.collection, write.key) },
      };
    }
    return {
      Put: {
        TableName: this.tableName,
        Item: {
          ...this.keyOf(write.collection, write.key),
          value: { S: JSON.stringify(write.value) },
          ...(write.expiresAt !== undefined && {
            expiresAt: { N: String(Math.ceil(write.expiresAt / 1000)) },
          }),
        },
        ...(write.ifAbsent && {
          ConditionExpression: "attribute_not_exists(pk) OR expiresAt <= :now",
          ExpressionAttributeValues: { ":now": { N: String(Math.floor(this.now() / 1000)) } },
        }),
        // The stored text is what JSON.stringify wrote, which parsing and
        // stringifying again gives back unchanged.
        ...(write.ifEquals && {
          ConditionExpression: "#value = :expected",
          ExpressionAttributeNames: { "#value": "value" },
          ExpressionAttributeValues: { ":expected": { S: JSON.stringify(write.ifEquals) } },
        }),
      },
    };
  }

  async write(writes: AppDataWrite[]): Promise<boolean> {
    // One write goes alone: a transaction racing another on the same item fails with
    // `TransactionConflict`, where a lone conditional write simply finds its condition false.
    if (writes.length === 1) {
      const item = this.itemOf(writes[0] as AppDataWrite);
      try {
        if (item.Put) await this.client.send(new PutItemCommand(item.Put));
        else if (item.Delete) await this.client.send(new DeleteItemCommand(item.Delete));
        return true;
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) return false;
        throw error;
      }
    }
    try {
      await this.client.send(
        new TransactWriteItemsCommand({ TransactItems: writes.map((write) => this.itemOf(write)) }),
      );
      return true;
    } catch (error) {
      const reasons = (error as TransactionCanceledException).CancellationReasons ?? [];
      if (
        error instanceof TransactionCanceledException &&
        reasons.some((reason) => reason.Code === "ConditionalCheckFailed") &&
        reasons.every((reason) => ["None", "ConditionalCheckFailed"].includes(reason.Code ?? ""))
      ) {
        return false;
      }
      throw error;
    }
  }
}
