import { type DynamoDBClient, PutItemCommand } from "@aws-sdk/client-dynamodb";
import type { SetAsideItems } from "../store.ts";
import { partitionItems } from "./partition.ts";
import { RETENTION_SECONDS } from "./store.ts";

/** How the keys of inbound items set aside begin. */
export const SET_ASIDE_KEY_PREFIX = "INBOUND#";

/**
 * The bytes of JSON one table item holds: DynamoDB's items are at most 400 KB, names and keys
 * included.
 */
export const PART_BYTES = 350_000;

/**
 * Inbound items set aside in the table, each in parts of `PART_BYTES` (binary, so that a part
 * may end inside a character) under `INBOUND#<sha256>`, sorted by part number. Kept as long as
 * the claims (a message and its dead letter are kept 14 days each).
 */
export class DynamoDbSetAsideItems implements SetAsideItems {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
    private readonly now: () => number = Date.now,
  ) {}

  async put(items: { sha256: string; json: string }[]): Promise<void> {
    const expiresAt = { N: String(Math.floor(this.now() / 1000) + RETENTION_SECONDS) };
    const writes: Promise<unknown>[] = [];
    for (const { sha256, json } of items) {
      const bytes = Buffer.from(json);
      for (let part = 0; part * PART_BYTES < bytes.length; part++) {
        writes.push(
          this.client.send(
            new PutItemCommand({
              TableName: this.tableName,
              Item: {
                pk: { S: `${SET_ASIDE_KEY_PREFIX}${sha256}` },
                sk: { S: String(part).padStart(4, "0") },
                part: { B: bytes.subarray(part * PART_BYTES, (part + 1) * PART_BYTES) },
                expiresAt,
              },
            }),
          ),
        );
      }
    }
    await Promise.all(writes);
  }

  async get(sha256: string): Promise<string | undefined> {
    const items = await partitionItems(
      this.client,
      this.tableName,
      `${SET_ASIDE_KEY_PREFIX}${sha256}`,
    );
    const parts = items.flatMap((item) => (item.part?.B ? [item.part.B] : []));
    return parts.length > 0 ? Buffer.concat(parts).toString("utf8") : undefined;
  }
}
