import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { onWebhookCommand } from "../../functions/app/webhooks/commands.ts";
import { listWebhooks } from "../../functions/app/webhooks/store.ts";
import { serviceContext } from "../../functions/appservice/service-context.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import type { OutboundAction } from "../../functions/matrix/request.ts";
import type { FifoMessage } from "../../functions/queue/queue.ts";
import { DynamoDbAppData } from "../../functions/store/dynamodb/app-data.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { makeEvent, noServices } from "../support/appservice.ts";

describe("!webhook new, handled again after a crash (DynamoDB Local)", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `hooks-${randomUUID().slice(0, 8)}`;
  beforeAll(() => ensureTable(client, tableName));
  afterAll(() => client.destroy());

  it("hands out the same URL under the same action ID, and keeps one webhook", async () => {
    const data = new DynamoDbAppData(client, tableName);
    const queued: FifoMessage[] = [];
    const services = {
      ...noServices,
      data,
      // The moderator's level, as the room's power levels give it.
      homeserver: {
        roomState: async () => ({ users: { "@mod:test.local": 100 } }),
        roomStateEvent: async () => undefined,
      },
      outboundQueue: { send: async (messages: FifoMessage[]) => void queued.push(...messages) },
    };
    const command = makeEvent("!r:test.local", "!webhook new ci", { sender: "@mod:test.local" });
    // The claim key seeds the actions, as the events consumer does it.
    for (let run = 0; run < 2; run++) {
      await onWebhookCommand(command, serviceContext(services, `EVENT#${command.event_id}`));
    }
    const [first, second] = queued.map((m) => JSON.parse(m.body) as OutboundAction);
    expect(queued).toHaveLength(2);
    expect(second?.id).toBe(first?.id);
    expect(second?.request).toEqual(first?.request);
    expect(JSON.stringify(first?.request.body)).toMatch(/\/webhook\/[\w-]{43}/);
    expect((await listWebhooks(data, "!r:test.local")).map((w) => w.name)).toEqual(["ci"]);

    // Another command for the same name is refused.
    const again = makeEvent("!r:test.local", "!webhook new ci", { sender: "@mod:test.local" });
    await onWebhookCommand(again, serviceContext(services, `EVENT#${again.event_id}`));
    const refusal = JSON.parse(queued[2]?.body as string) as OutboundAction;
    expect((refusal.request.body as { body: string }).body).toContain("already has a webhook");
  });
});
