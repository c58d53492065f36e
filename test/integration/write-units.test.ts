import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import {
  type InboundMessage,
  inboundMessages,
  transactionHash,
} from "../../functions/appservice/pipeline/inbound.ts";
import {
  INBOUND_RETRY,
  processInboundMessage,
} from "../../functions/appservice/pipeline/process-inbound.ts";
import { parseTransaction } from "../../functions/appservice/protocol/transaction.ts";
import { serviceContext } from "../../functions/appservice/service-context.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { makeEvent, noServices } from "../support/appservice.ts";

/**
 * What an event costs in DynamoDB write units, as DynamoDB Local counts them
 * (`ReturnConsumedCapacity`), from the ack to the application's run. The README's cost table
 * and docs/performance.md use these figures.
 */
describe("DynamoDB write units per event", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `units-${randomUUID().slice(0, 8)}`;
  let writeUnits = 0;
  client.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as { ReturnConsumedCapacity?: string };
      input.ReturnConsumedCapacity = "TOTAL";
      const result = await next(args);
      const consumed = (result.output as { ConsumedCapacity?: unknown }).ConsumedCapacity;
      // Every request on this path is a write: its capacity units are write units.
      for (const { CapacityUnits } of [consumed ?? []].flat() as { CapacityUnits?: number }[]) {
        writeUnits += CapacityUnits ?? 0;
      }
      return result;
    },
    { step: "initialize", name: "countWriteUnits" },
  );
  const store = new DynamoDbStore(client, tableName);

  beforeAll(() => ensureTable(client, tableName));
  afterAll(() => client.destroy());

  /** The write units of one transaction of `events` events (one room), acked then processed. */
  async function unitsOf(events: number): Promise<number> {
    const room = `!r-${randomUUID()}:test.local`;
    const transaction = parseTransaction({
      events: Array.from({ length: events }, (_, i) => makeEvent(room, `message ${i}`)),
    });
    const txnId = randomUUID();
    writeUnits = 0;
    // What the ack writes to DynamoDB (its enqueue is SQS's), then what each queue message costs.
    await store.recordTransaction(txnId, { bodyHash: transactionHash(transaction) });
    for (const [i, message] of inboundMessages(txnId, transaction).messages.entries()) {
      await processInboundMessage(
        JSON.parse(message.body) as InboundMessage,
        { owner: `delivery-${i}`, groupId: message.groupId },
        {
          claims: store,
          application: { onEvent: () => undefined },
          log: noServices.log,
          leaseMs: 60_000,
          contextFor: (origin) => serviceContext(noServices, origin),
          setAsideItems: { get: () => Promise.reject(new Error("no reference expected")) },
          retry: INBOUND_RETRY,
          deadLetters: { deadLetter: () => Promise.reject(new Error("no dead letter expected")) },
        },
      );
    }
    return writeUnits;
  }

  it("one event per transaction: the txn record, the claim and the done mark, 1 unit each", async () => {
    expect(await unitsOf(1)).toBe(3);
  });

  it("ten events per transaction: 1 for the transaction, then 2 an event", async () => {
    expect(await unitsOf(10)).toBe(21);
  });
});
