import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { application } from "../../functions/applications/webhooks/events.ts";
import {
  onUrlMessageRequest,
  onWebhookCommand,
  URL_MESSAGE_REQUEST,
} from "../../functions/applications/webhooks/webhooks/commands.ts";
import { listWebhooks } from "../../functions/applications/webhooks/webhooks/store.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { type ServiceDeps, serviceContext } from "../../functions/appservice/service-context.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import type { OutboundAction } from "../../functions/matrix/request.ts";
import { isDelivery, type QueuedAction } from "../../functions/outbox/decide.ts";
import type { FifoMessage } from "../../functions/queue/queue.ts";
import { addressPolicy } from "../../functions/remote/address-policy.ts";
import { DynamoDbAppData } from "../../functions/store/dynamodb/app-data.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { countingStore, makeEvent, noServices } from "../support/appservice.ts";

describe("!webhook commands, handled again after a crash (DynamoDB Local)", () => {
  const client = localDynamoDb(inject("dynamodbEndpoint"));
  const tableName = `hooks-${randomUUID().slice(0, 8)}`;
  beforeAll(() => ensureTable(client, tableName));
  afterAll(() => client.destroy());

  const setUp = () => {
    const data = new DynamoDbAppData(client, tableName);
    const queued: OutboundAction[] = [];
    const services = {
      ...noServices,
      data,
      // The moderator's level, as the room's power levels give it.
      homeserver: {
        ...noServices.homeserver,
        roomState: async () => ({ users: { "@mod:test.local": 100 } }),
        roomStateEvent: async () => undefined,
      },
      outboundQueue: {
        send: async (messages: FifoMessage[]) =>
          void queued.push(...messages.map((m) => JSON.parse(m.body) as OutboundAction)),
      },
    };
    return { data, queued, services };
  };

  it("new: the same DM request under the same action IDs, one webhook, and no URL in the room", async () => {
    const { data, queued, services } = setUp();
    const command = makeEvent("!r:test.local", "!webhook new ci", { sender: "@mod:test.local" });
    // The claim key seeds the actions, as the events consumer does it.
    for (let run = 0; run < 2; run++) {
      await onWebhookCommand(command, serviceContext(services, `EVENT#${command.event_id}`));
    }
    expect(queued).toHaveLength(4);
    const [createRoom, notice, ...again] = queued;
    expect(again.map((a) => a.id)).toEqual([createRoom?.id, notice?.id]);
    expect(again.map((a) => a.request)).toEqual([createRoom?.request, notice?.request]);
    // A direct message room for the creator alone, which asks for the URL once it exists.
    expect(createRoom?.request).toMatchObject({
      method: "POST",
      path: "/_matrix/client/v3/createRoom",
      body: {
        invite: ["@mod:test.local"],
        is_direct: true,
        preset: "private_chat",
        initial_state: [
          { type: URL_MESSAGE_REQUEST, state_key: "", content: { command: command.event_id } },
        ],
      },
    });
    expect(notice?.roomId).toBe("!r:test.local");
    expect(JSON.stringify(notice?.request.body)).toContain("in a direct message");
    expect(JSON.stringify(queued)).not.toMatch(/\/webhook\/[\w-]{43}/);
    const [webhook] = await listWebhooks(data, "!r:test.local");
    expect(webhook?.name).toBe("ci");
    expect(webhook?.userId).toMatch(/^@_webhook_[0-9a-f]{12}_ci:test\.local$/);

    // The homeserver hands back the DM room's state: the URL goes there, once per event.
    const request = makeEvent("!dm:test.local", "", {
      type: URL_MESSAGE_REQUEST,
      state_key: "",
      sender: "@bot:test.local",
      content: { command: command.event_id },
    });
    for (let run = 0; run < 2; run++) {
      await onUrlMessageRequest(request, serviceContext(services, `EVENT#${request.event_id}`));
    }
    const [url, urlAgain] = queued.slice(4);
    expect(urlAgain?.id).toBe(url?.id);
    expect(url?.roomId).toBe("!dm:test.local");
    expect(JSON.stringify(url?.request.body)).toMatch(/\/webhook\/[\w-]{43}/);

    // Another command for the same name is refused.
    const other = makeEvent("!r:test.local", "!webhook new ci", { sender: "@mod:test.local" });
    await onWebhookCommand(other, serviceContext(services, `EVENT#${other.event_id}`));
    expect(JSON.stringify(queued[6]?.request.body)).toContain("already has a webhook");
  });

  it("arguments are checked before storage sees them: each bad one gets its usage", async () => {
    const { data, queued, services } = setUp();
    const cases: [string, RegExp][] = [
      [`!webhook remove ${"x".repeat(5000)}`, /^Usage: !webhook remove <name>/],
      ["!webhook remove", /^Usage: !webhook remove <name>/],
      ["!webhook remove Not/Valid", /^Usage: !webhook remove <name>/],
      ["!webhook remove a b", /^Usage: !webhook remove <name>/],
      [`!webhook new ${"a".repeat(33)}`, /^Usage: !webhook new <name>/],
      ["!webhook new a b", /^Usage: !webhook new <name>/],
      ["!webhook list everything", /^Usage: !webhook list$/],
      ["!webhook help me", /^Usage: !webhook help$/],
      [`!webhook ${"y".repeat(5000)}`, new RegExp(`^Unknown command "${"y".repeat(32)}"`)],
    ];
    for (const [body, answer] of cases) {
      const event = makeEvent("!r2:test.local", body, { sender: "@mod:test.local" });
      await onWebhookCommand(event, serviceContext(services, `EVENT#${event.event_id}`));
      const reply = queued.at(-1);
      expect(reply?.roomId, body.slice(0, 30)).toBe("!r2:test.local");
      const text = (reply?.request.body as { body?: string } | undefined)?.body;
      expect(text, body.slice(0, 30)).toMatch(answer);
    }
    expect(queued).toHaveLength(cases.length);
    expect(await listWebhooks(data, "!r2:test.local")).toEqual([]);
  });

  /** The events function's application handles an event, as the events consumer runs it. */
  const handle = (event: ClientEvent, services: ServiceDeps) =>
    application.onEvent?.(event, {
      ...serviceContext(services, `EVENT#${event.event_id}`),
      txnId: "t1",
    });

  /** What a queued action does, in a few words: a delivery's URL, a notice's text. */
  const what = (action: QueuedAction) =>
    isDelivery(action)
      ? `delivery to ${action.delivery.url}`
      : String((action.request.body as { body?: unknown }).body);

  it("through the events application, `!webhook new --expires`: its answer, then in the same run the room is told it expires", async () => {
    const { queued, services } = setUp();
    const command = makeEvent("!soon:test.local", "!webhook new soon --expires 12h", {
      sender: "@mod:test.local",
    });
    await handle(command, services);
    expect(queued.filter((a) => a.roomId === "!soon:test.local").map(what)).toEqual([
      expect.stringContaining("in a direct message"),
      expect.stringMatching(/^Webhook soon expires at /),
    ]);
  });

  it("a room message: the room's outbound webhooks and webhooks read at once; its delivery, the pong, then the expiry notice, under the same IDs when handled again", async () => {
    const { data, queued, services } = setUp();
    const room = "!msg:test.local";
    const moderated = {
      ...services,
      homeserver: { ...services.homeserver, directRoom: async () => "!dm:test.local" },
      deliveryPolicy: addressPolicy(["127.0.0.0/8"]),
    };
    for (const body of [
      "!webhook new soon --expires 12h",
      "!webhook out out1 http://127.0.0.1:9/in",
    ]) {
      const command = makeEvent(room, body, { sender: "@mod:test.local" });
      await onWebhookCommand(command, serviceContext(moderated, `EVENT#${command.event_id}`));
    }
    queued.length = 0;
    const counting = countingStore(data);
    const ping = makeEvent(room, "!ping", { sender: "@alice:test.local" });
    for (let run = 0; run < 2; run++) {
      await handle(ping, { ...moderated, data: counting.store });
    }
    expect(counting.most.list).toBe(2);
    const [delivery, pong, expiry, ...again] = queued as QueuedAction[];
    expect([delivery, pong, expiry].map((a) => a && what(a))).toEqual([
      "delivery to http://127.0.0.1:9/in",
      "pong",
      expect.stringMatching(/^Webhook soon expires at /),
    ]);
    // The notice was recorded: the run again asks for the rest under the same IDs.
    expect(again.map((a) => a.id)).toEqual([delivery?.id, pong?.id]);
  });
});
