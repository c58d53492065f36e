// Apart from table.ts: reading a partition (set-aside items, dead letters) depends on nothing of
// the table's creation.
import { type AttributeValue, type DynamoDBClient, QueryCommand } from "@aws-sdk/client-dynamodb";

/**
 * Every item of one partition, in sort key order, read consistently page by page (`projection`:
 * those attributes only).
 */
export async function partitionItems(
  client: DynamoDBClient,
  tableName: string,
  pk: string,
  projection?: string[],
): Promise<Record<string, AttributeValue>[]> {
  const items: Record<string, AttributeValue>[] = [];
  let startKey: Record<string, AttributeValue> | undefined;
  do {
    const page = await client.send(
      new QueryCommand({
        TableName: tableName,
        KeyConditionExpression: "pk = :pk",
        ExpressionAttributeValues: { ":pk": { S: pk } },
        ...(projection && {
          ProjectionExpression: projection.map((_, i) => `#p${i}`).join(", "),
          ExpressionAttributeNames: Object.fromEntries(projection.map((a, i) => [`#p${i}`, a])),
        }),
        ConsistentRead: true,
        ...(startKey && { ExclusiveStartKey: startKey }),
      }),
    );
    items.push(...(page.Items ?? []));
    startKey = page.LastEvaluatedKey;
  } while (startKey);
  return items;
}
