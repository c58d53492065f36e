import {
  type DynamoDBClient,
  GetItemCommand,
  type Put,
  paginateQuery,
  TransactionCanceledException,
  TransactWriteItemsCommand,
} from "@aws-sdk/client-dynamodb";
import type { AppDataStore, AppDataWrite, AppValue } from "../app-data.ts";

/** The partition keys of application data: the stack keeps the application's code to them. */
export const APP_DATA_KEY_PREFIX = "APP#";

const keyOf = (collection: string, key: string) => ({
  pk: { S: `${APP_DATA_KEY_PREFIX}${collection}` },
  sk: { S: key },
});

// The table's TTL deletes an expired item only within days: until then reads skip it, and a
// write `ifAbsent` takes its place.
const expired = (item: Record<string, { N?: string }>, nowMs: number) =>
  item.expiresAt?.N !== undefined && Number(item.expiresAt.N) * 1000 <= nowMs;

/** Application data in the appservice's table: a collection is a partition, `APP#<name>`. */
export class DynamoDbAppData implements AppDataStore {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
    private readonly now: () => number = Date.now,
  ) {}

  async get(collection: string, key: string): Promise<AppValue | undefined> {
    const { Item } = await this.client.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: keyOf(collection, key),
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
        ExpressionAttributeValues: { ":pk": { S: `${APP_DATA_KEY_PREFIX}${collection}` } },
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

  /** The condition of an `ifAbsent` or `ifEquals` put. */
  private condition(
    write: Exclude<AppDataWrite, { delete: true }>,
  ): Pick<Put, "ConditionExpression" | "ExpressionAttributeNames" | "ExpressionAttributeValues"> {
    if (write.ifAbsent) {
      return {
        ConditionExpression: "attribute_not_exists(pk) OR expiresAt <= :now",
        ExpressionAttributeValues: { ":now": { N: String(Math.floor(this.now() / 1000)) } },
      };
    }
    if (write.ifEquals) {
      // The stored text is what JSON.stringify wrote, which parsing and stringifying again
      // gives back unchanged.
      return {
        ConditionExpression: "#value = :expected",
        ExpressionAttributeNames: { "#value": "value" },
        ExpressionAttributeValues: { ":expected": { S: JSON.stringify(write.ifEquals) } },
      };
    }
    return {};
  }

  async write(writes: AppDataWrite[]): Promise<boolean> {
    try {
      await this.client.send(
        new TransactWriteItemsCommand({
          TransactItems: writes.map((write) =>
            "delete" in write
              ? { Delete: { TableName: this.tableName, Key: keyOf(write.collection, write.key) } }
              : {
                  Put: {
                    TableName: this.tableName,
                    Item: {
                      ...keyOf(write.collection, write.key),
                      value: { S: JSON.stringify(write.value) },
                      ...(write.expiresAt !== undefined && {
                        expiresAt: { N: String(Math.ceil(write.expiresAt / 1000)) },
                      }),
                    },
                    ...this.condition(write),
                  },
                },
          ),
        }),
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
