import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { waitForEventId } from "../../functions/appservice/sent-events.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { DynamoDbAppData } from "../../functions/store/dynamodb/app-data.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { linkMap } from "../../functions/store/links.ts";
import { messageLinker, messageMap } from "../../functions/store/messages.ts";

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

  it("message maps: one per room; the outbox's link is made once, a repeat finds it, an event linked elsewhere is refused; a wait sees a link made meanwhile", async () => {
    const data = new DynamoDbAppData(client, tableName);
    const room = `!${randomUUID()}`;
    const linker = messageLinker(data);
    expect(await linker.linkMessage(room, "m1", "$e1")).toBe(true);
    expect(await linker.linkMessage(room, "m1", "$e1")).toBe(true);
    // Another send for m1 (its image beside its text): the first link holds.
    expect(await linker.linkMessage(room, "m1", "$e2")).toBe(true);
    expect(await linker.linkMessage(room, "m2", "$e1")).toBe(false);
    const map = messageMap(data, room);
    expect(await map.byRemoteId("m1")).toMatchObject({ matrixId: "$e1" });
    expect(await map.byMatrixId("$e1")).toMatchObject({ remoteId: "m1" });
    expect(await map.byRemoteId("m2")).toBeUndefined();
    // Another room's map is another map.
    expect(await messageMap(data, `!${randomUUID()}`).byRemoteId("m1")).toBeUndefined();
    expect(await waitForEventId(map, "m3", 0)).toBeUndefined();
    const waited = waitForEventId(map, "m3", 5_000);
    setTimeout(() => void linker.linkMessage(room, "m3", "$e3"), 300);
    expect(await waited).toBe("$e3");
  });
});
