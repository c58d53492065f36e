import {
  type AttributeValue,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
} from "@aws-sdk/client-dynamodb";
import type { IntentMemory, ProfileFields, UserMemory } from "../intent-memory.ts";
import { keyOf, storedId } from "./store.ts";

/**
 * The users' items: `USER#<userId>` / `-` `{registered}` (the outbox's and the user queries'
 * since the start) and `USER#<userId>` / `PROFILE` `{profile}` (the bot's since the start, now
 * every user's).
 */
export const USER_KEY_PREFIX = "USER#";
/** The memberships: `ROOM#<roomId>` / `MEMBER#<userId>` `{joined, look}`. */
export const ROOM_KEY_PREFIX = "ROOM#";

const PROFILE_SORT_KEY = "PROFILE";
const memberKey = (roomId: string, userId: string) =>
  keyOf(ROOM_KEY_PREFIX, roomId, `MEMBER#${storedId(userId)}`);

const fieldsOf = (map: Record<string, AttributeValue> | undefined): ProfileFields =>
  Object.fromEntries(Object.entries(map ?? {}).map(([field, value]) => [field, value.S ?? ""]));
/** Fields with a value each (the Intent writes none undefined). */
const mapOf = (fields: ProfileFields): AttributeValue => ({
  M: Object.fromEntries(Object.entries(fields).map(([field, value]) => [field, { S: value }])),
});

/** The Intent's memory in the appservice's table. Nothing expires: registrations and joins last. */
export class DynamoDbIntentMemory implements IntentMemory {
  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
  ) {}

  /** One request: the user's partition holds both of its items. */
  async user(userId: string): Promise<UserMemory> {
    const { pk } = keyOf(USER_KEY_PREFIX, userId);
    const { Items = [] } = await this.client.send(
      new QueryCommand({
        TableName: this.tableName,
        KeyConditionExpression: "pk = :pk",
        ExpressionAttributeValues: { ":pk": pk },
        ConsistentRead: true,
      }),
    );
    const item = (sk: string) => Items.find((each) => each.sk?.S === sk);
    return {
      registered: item("-")?.registered?.BOOL === true,
      profile: fieldsOf(item(PROFILE_SORT_KEY)?.profile?.M),
    };
  }

  async markRegistered(userId: string): Promise<void> {
    await this.put({ ...keyOf(USER_KEY_PREFIX, userId), registered: { BOOL: true } });
  }

  async markProfileSet(userId: string, profile: ProfileFields): Promise<void> {
    await this.put({
      ...keyOf(USER_KEY_PREFIX, userId, PROFILE_SORT_KEY),
      profile: mapOf(profile),
    });
  }

  async member(roomId: string, userId: string): Promise<ProfileFields | undefined> {
    const { Item } = await this.client.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: memberKey(roomId, userId),
        ConsistentRead: true,
      }),
    );
    return Item?.joined?.BOOL === true ? fieldsOf(Item.look?.M) : undefined;
  }

  async markJoined(roomId: string, userId: string, look: ProfileFields): Promise<void> {
    await this.put({ ...memberKey(roomId, userId), joined: { BOOL: true }, look: mapOf(look) });
  }

  /** A put, not a delete: the functions that write memberships may put items, not delete them. */
  async markLeft(roomId: string, userId: string): Promise<void> {
    await this.put({ ...memberKey(roomId, userId), joined: { BOOL: false } });
  }

  private async put(item: Record<string, AttributeValue>) {
    await this.client.send(new PutItemCommand({ TableName: this.tableName, Item: item }));
  }
}
