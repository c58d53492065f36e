import {
  DeleteItemCommand,
  type DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  type DeadLetterStore,
  type Direction,
  inQueueOrder,
  type ReplayReset,
  type StoredDeadLetter,
} from "../dead-letters.ts";
import { partitionItems } from "./partition.ts";
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

  async list(direction: Direction): Promise<StoredDeadLetter[]> {
    const items = await partitionItems(this.client, this.tableName, partition(direction));
    const letters = items.map(
      (item): StoredDeadLetter => ({
        direction,
        id: item.sk?.S ?? "",
        groupId: item.groupId?.S ?? "",
        sequenceNumber: item.sequenceNumber?.S ?? "0",
        sentAt: Number(item.sentAt?.N ?? 0),
        body: item.body?.S ?? "",
      }),
    );
    return letters.sort(inQueueOrder);
  }

  async count(direction: Direction): Promise<number> {
    // The keys alone (never the bodies), and the expiry an older version gave each.
    const { partitionKey, sortKey, ttlAttribute } = TABLE_KEY;
    const items = await partitionItems(this.client, this.tableName, partition(direction), [
      partitionKey,
      sortKey,
      ttlAttribute,
    ]);
    for (const item of items) {
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
    return items.length;
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
