import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { DynamoDbAppData } from "../../functions/store/dynamodb/app-data.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { linkMap } from "../../functions/store/links.ts";

describe("portals and puppets in the application's data (DynamoDB Local)", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `links-${randomUUID().slice(0, 8)}`;
  beforeAll(() => ensureTable(client, tableName));
  afterAll(() => client.destroy());
  const portals = () => linkMap(new DynamoDbAppData(client, tableName), `portals-${randomUUID()}`);

  it("handlers racing to link one remote channel to rooms of their own end with one portal", async () => {
    const map = portals();
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        map.link("general", `!room${i}:test`, { name: `general ${i}` }),
      ),
    );
    const winners = results.filter((r) => r.created);
    expect(winners).toHaveLength(1);
    const { created: _, ...winner } = winners[0] as (typeof results)[number];
    for (const result of results) expect(result).toMatchObject(winner);
    expect(await map.byRemoteId("general")).toEqual(winner);
    expect(await map.byMatrixId(winner.matrixId)).toEqual(winner);
    // The losers' rooms are linked to nothing.
    const losers = results.map((_, i) => `!room${i}:test`).filter((id) => id !== winner.matrixId);
    for (const room of losers) expect(await map.byMatrixId(room)).toBeUndefined();
  });

  it("a room linked to another channel is refused; update is a compare-and-set; unlink frees both sides", async () => {
    const map = portals();
    const link = await map.link("a", "!a:test");
    await expect(map.link("b", "!a:test")).rejects.toThrow(/!a:test is linked to "a", not "b"/);
    expect(await map.byRemoteId("b")).toBeUndefined();
    expect(await map.update(link, { topic: "new" })).toBe(true);
    // A second writer that read the old value loses.
    expect(await map.update(link, { topic: "stale" })).toBe(false);
    expect((await map.byRemoteId("a"))?.value).toEqual({ topic: "new" });
    await map.unlink(link);
    expect(await map.byRemoteId("a")).toBeUndefined();
    expect(await map.byMatrixId("!a:test")).toBeUndefined();
    expect((await map.link("b", "!a:test")).created).toBe(true);
  });
});
