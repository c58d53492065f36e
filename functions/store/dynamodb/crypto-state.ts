import { randomUUID } from "node:crypto";
import {
  type AttributeValue,
  BatchWriteItemCommand,
  ConditionalCheckFailedException,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  type CryptoOwner,
  type CryptoStateSnapshot,
  type CryptoStateStore,
  StaleCryptoStateError,
} from "../crypto-state.ts";
import { partitionItems } from "./partition.ts";
import { PART_BYTES } from "./set-aside-items.ts";

/** How the partitions of devices' crypto state begin. */
export const CRYPTO_KEY_PREFIX = "CRYPTO#";
const HEAD = "HEAD";

const partitionOf = (owner: CryptoOwner) => `${CRYPTO_KEY_PREFIX}${owner.userId}#${owner.deviceId}`;
/** A part's sort key: its snapshot's ID (one per save attempt), then its number. */
const partKey = (snapshot: string, part: number) =>
  `PART#${snapshot}#${String(part).padStart(5, "0")}`;

/**
 * Devices' crypto state in the table, one partition each (`CRYPTO#<userId>#<deviceId>`): a
 * `HEAD` item naming the current snapshot (`version`, `snapshot` ID, `parts`), and the snapshot's
 * bytes in parts of `PART_BYTES` (`PART#<snapshot>#<n>`), so a state of any size is kept.
 *
 * A save writes its parts under a new snapshot ID, then moves `HEAD` to them with one
 * conditional write (`version` still the one loaded): that write is the commit, so a reader sees
 * a whole snapshot or the one before, and of two writers one wins. The loser deletes its parts;
 * the winner deletes the snapshot it replaced. Parts a crash left behind (written but never
 * committed, or replaced but not deleted) are seen by the next load and deleted by the next save.
 */
export class DynamoDbCryptoStateStore implements CryptoStateStore {
  /** Parts of no current snapshot, seen by a load, by partition: deleted at the next save. */
  private readonly strays = new Map<string, string[]>();

  constructor(
    private readonly client: DynamoDBClient,
    private readonly tableName: string,
  ) {}

  async load(owner: CryptoOwner): Promise<CryptoStateSnapshot | undefined> {
    const pk = partitionOf(owner);
    // A save may delete the parts of the snapshot it replaced between the read of the HEAD and
    // of its parts: one consistent query reads both, and a torn read is read again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const items = await partitionItems(this.client, this.tableName, pk);
      const head = items.find((item) => item.sk?.S === HEAD);
      if (!head) return undefined;
      const snapshot = head.snapshot?.S as string;
      const count = Number(head.parts?.N);
      const prefix = `PART#${snapshot}#`;
      const parts = items.filter((item) => item.sk?.S?.startsWith(prefix));
      if (parts.length !== count) continue;
      this.strays.set(
        pk,
        items
          .map((item) => item.sk?.S as string)
          .filter((sk) => sk !== HEAD && !sk.startsWith(prefix)),
      );
      const data = Buffer.concat(parts.map((item) => item.part?.B as Uint8Array));
      return { version: Number(head.version?.N), data: new Uint8Array(data) };
    }
    throw new Error(
      `The crypto state of ${owner.userId} ${owner.deviceId} could not be read whole`,
    );
  }

  async version(owner: CryptoOwner): Promise<number> {
    const answer = await this.client.send(
      new GetItemCommand({
        TableName: this.tableName,
        Key: { pk: { S: partitionOf(owner) }, sk: { S: HEAD } },
        ProjectionExpression: "#version",
        ExpressionAttributeNames: { "#version": "version" },
        ConsistentRead: true,
      }),
    );
    return Number(answer.Item?.version?.N ?? 0);
  }

  async save(owner: CryptoOwner, expected: number, data: Uint8Array): Promise<number> {
    const pk = partitionOf(owner);
    // Taken now: the parts a load saw before are of snapshots this save replaces or of saves it
    // beats. A load while it saves (another machine of this process) sees this save's own parts,
    // or those of the save after it: never to be deleted by it.
    const strays = this.strays.get(pk);
    const snapshot = randomUUID();
    const parts = Math.max(1, Math.ceil(data.length / PART_BYTES));
    const keys = Array.from({ length: parts }, (_, part) => partKey(snapshot, part));
    await Promise.all(
      keys.map((sk, part) =>
        this.client.send(
          new PutItemCommand({
            TableName: this.tableName,
            Item: {
              pk: { S: pk },
              sk: { S: sk },
              part: { B: data.subarray(part * PART_BYTES, (part + 1) * PART_BYTES) },
            },
          }),
        ),
      ),
    );
    const next = expected + 1;
    let replaced: Record<string, AttributeValue> | undefined;
    try {
      const answer = await this.client.send(
        new UpdateItemCommand({
          TableName: this.tableName,
          Key: { pk: { S: pk }, sk: { S: HEAD } },
          UpdateExpression:
            "SET #version = :next, #snapshot = :snapshot, #parts = :parts, #bytes = :bytes, #savedAt = :now",
          ConditionExpression: expected === 0 ? "attribute_not_exists(pk)" : "#version = :expected",
          // Some of these names are DynamoDB reserved words.
          ExpressionAttributeNames: {
            "#version": "version",
            "#snapshot": "snapshot",
            "#parts": "parts",
            "#bytes": "bytes",
            "#savedAt": "savedAt",
          },
          ExpressionAttributeValues: {
            ":next": { N: String(next) },
            ":snapshot": { S: snapshot },
            ":parts": { N: String(parts) },
            ":bytes": { N: String(data.length) },
            ":now": { N: String(Date.now()) },
            ...(expected !== 0 && { ":expected": { N: String(expected) } }),
          },
          ReturnValues: "UPDATED_OLD",
        }),
      );
      replaced = answer.Attributes;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw error;
      await this.deleteKeys(pk, keys);
      throw new StaleCryptoStateError(owner, expected);
    }
    const old = replaced?.snapshot?.S;
    const oldKeys = old
      ? Array.from({ length: Number(replaced?.parts?.N) }, (_, part) => partKey(old, part))
      : [];
    if (this.strays.get(pk) === strays) this.strays.delete(pk);
    // Best effort: a part left behind is found and deleted after the next load.
    await this.deleteKeys(pk, [...new Set([...oldKeys, ...(strays ?? [])])]).catch(() => undefined);
    return next;
  }

  private async deleteKeys(pk: string, keys: string[]) {
    for (let i = 0; i < keys.length; i += 25) {
      let requests = keys.slice(i, i + 25).map((sk) => ({
        DeleteRequest: { Key: { pk: { S: pk }, sk: { S: sk } } },
      }));
      for (let attempt = 0; requests.length > 0 && attempt < 5; attempt++) {
        const answer = await this.client.send(
          new BatchWriteItemCommand({ RequestItems: { [this.tableName]: requests } }),
        );
        requests = (answer.UnprocessedItems?.[this.tableName] ?? []) as typeof requests;
      }
    }
  }
}
