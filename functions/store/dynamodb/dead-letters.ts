import {
  type AttributeValue,
  DeleteItemCommand,
  type DynamoDBClient,
  PutItemCommand,
  QueryCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  type DeadLetterStore,
  type Direction,
  inQueueOrder,
  type ReplayReset,
  type StoredDeadLetter,
} from "../dead-letters.ts";
import { isConditionFailure, keyOf, SERVER_ERRORS_KEY_PREFIX } from "./store.ts";
import { TABLE_KEY } from "./table.ts";

/** How the dead letters' partition keys begin (IAM limits the console to them). */
export const DEAD_LETTER_KEY_PREFIX = "DEADLETTER#";
const partition = (direction: Direction) => `${DEAD_LETTER_KEY_PREFIX}${direction}`;

/** Dead letters in the appservice's table: one partition per queue, an item per message. */
export class DynamoDbDeadLetters implements DeadLetterStore, ReplayReset {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
  ) {}

  async put(letter: StoredDeadLetter): Promise<void> {
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.tableName,
          Item: {
            pk: { S: partition(letter.direction) },
            sk: { S: letter.id },
            groupId: { S: letter.groupId },
            sequenceNumber: { S: letter.sequenceNumber },
            sentAt: { N: String(letter.sentAt) },
            body: { S: letter.body },
          },
          ConditionExpression: "attribute_not_exists(pk)",
        }),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  /** Every item of a queue's partition, page by page (`projection`: those attributes only). */
  private async *items(direction: Direction, projection?: string[]) {
    let startKey: Record<string, AttributeValue> | undefined;
    do {
      const page = await this.client.send(
        new QueryCommand({
          TableName: this.tableName,
          KeyConditionExpression: "pk = :pk",
          ExpressionAttributeValues: { ":pk": { S: partition(direction) } },
          ...(projection && {
            ProjectionExpression: projection.map((_, i) => `#p${i}`).join(", "),
            ExpressionAttributeNames: Object.fromEntries(projection.map((a, i) => [`#p${i}`, a])),
          }),
          ConsistentRead: true,
          ...(startKey && { ExclusiveStartKey: startKey }),
        }),
      );
      yield* page.Items ?? [];
      startKey = page.LastEvaluatedKey;
    } while (startKey);
  }

  async list(direction: Direction): Promise<StoredDeadLetter[]> {
    const letters: StoredDeadLetter[] = [];
    for await (const item of this.items(direction)) {
      letters.push({
        direction,
        id: item.sk?.S ?? "",
        groupId: item.groupId?.S ?? "",
        sequenceNumber: item.sequenceNumber?.S ?? "0",
        sentAt: Number(item.sentAt?.N ?? 0),
        body: item.body?.S ?? "",
      });
    }
    return letters.sort(inQueueOrder);
  }

  async count(direction: Direction): Promise<number> {
    let count = 0;
    // The keys alone (never the bodies), and the expiry an older version gave each.
    const { partitionKey, sortKey, ttlAttribute } = TABLE_KEY;
    for await (const item of this.items(direction, [partitionKey, sortKey, ttlAttribute])) {
      count += 1;
      if (!item[ttlAttribute] || !item.pk || !item.sk) continue;
      // Kept until replayed or discarded: an expiry written before would drop it unseen.
      await this.client
        .send(
          new UpdateItemCommand({
            TableName: this.tableName,
            Key: { pk: item.pk, sk: item.sk },
            UpdateExpression: "REMOVE #expiresAt",
            ConditionExpression: "attribute_exists(pk)",
            ExpressionAttributeNames: { "#expiresAt": ttlAttribute },
          }),
        )
        .catch((error: unknown) => {
          if (!isConditionFailure(error)) throw error;
        });
    }
    return count;
  }

  async delete(direction: Direction, id: string): Promise<boolean> {
    const { Attributes } = await this.client.send(
      new DeleteItemCommand({
        TableName: this.tableName,
        Key: { pk: { S: partition(direction) }, sk: { S: id } },
        ReturnValues: "ALL_OLD",
      }),
    );
    return Attributes !== undefined;
  }

  async reopenClaim(key: string, attempts: number): Promise<boolean> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: keyOf("", key),
          UpdateExpression: "SET #status = :pending, attempts = :none",
          ConditionExpression: "#status = :done AND attempts = :attempts",
          ExpressionAttributeNames: { "#status": "status" },
          ExpressionAttributeValues: {
            ":pending": { S: "PENDING" },
            ":done": { S: "DONE" },
            ":none": { N: "0" },
            ":attempts": { N: String(attempts) },
          },
        }),
      );
      return true;
    } catch (error) {
      if (isConditionFailure(error)) return false;
      throw error;
    }
  }

  async forgetServerErrors(actionId: string): Promise<void> {
    await this.client.send(
      new DeleteItemCommand({
        TableName: this.tableName,
        Key: keyOf(SERVER_ERRORS_KEY_PREFIX, actionId),
      }),
    );
  }
}
