import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { describe, expect, it, onTestFinished } from "vitest";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { localSqs } from "../../functions/local/aws-clients.ts";
import {
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  startTestAppservice,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { startWithHomeserver } from "../support/with-homeserver.ts";

describe("faults", () => {
  it("a poison event (the application always throws) → dead-lettered alone after the configured attempts, with its reason; its room goes on, others are unaffected", async () => {
    const handled: ClientEvent[] = [];
    let poisonAttempts = 0;
    const poison = makeEvent("!sick:test.local", "poison");
    const local = await startTestAppservice({
      inboundRetry: { backoff: { baseSeconds: 1, capSeconds: 1 }, maxAttempts: 3 },
      visibilityTimeoutSeconds: 1,
      application: {
        onEvent(event) {
          if (event.event_id === poison.event_id) {
            poisonAttempts++;
            throw new Error("poison");
          }
          handled.push(event);
        },
      },
    });
    onTestFinished(() => local.stop());
    const token = local.registration.hs_token;
    const healthy = makeEvent("!well:test.local", "unaffected");
    expect(
      (await putTransaction(local.url, "1", { events: [poison, healthy] }, { token })).status,
    ).toBe(200);
    await waitFor(
      () => handled.some((e) => e.event_id === healthy.event_id),
      10_000,
      "the other room",
    );
    // The poison's room is blocked only until the message is dead-lettered.
    const after = makeEvent("!sick:test.local", "after the poison");
    expect((await putTransaction(local.url, "2", { events: [after] }, { token })).status).toBe(200);
    await waitFor(
      () => handled.some((e) => e.event_id === after.event_id),
      30_000,
      "the poisoned room to go on",
    );
    expect(poisonAttempts).toBe(3);
    expect(handled.map((e) => e.event_id)).toEqual([healthy.event_id, after.event_id]);

    const sqs = localSqs(local.sqsEndpoint);
    onTestFinished(() => sqs.destroy());
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: local.inboundDeadLetterUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
      }),
    );
    expect(Messages.map((m) => JSON.parse(m.Body as string))).toEqual([
      expect.objectContaining({
        item: expect.objectContaining({ id: poison.event_id }),
        reason: { error: "Error: poison" },
        attempts: 3,
      }),
    ]);
  });

  it("the homeserver answers 5xx in the middle of 500 outgoing messages over 20 rooms, until every room was refused twice → all delivered once, in order per room", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver({
      application: {
        async onEvent(event, { actions }) {
          await actions.sendMessage(event.room_id, `echo: ${String(event.content.body)}`);
        },
      },
    });
    const rooms = Array.from({ length: 20 }, (_, i) => `!room${i}:test.local`);
    for (const room of rooms) homeserver.createRoom(room, [bot]);
    const sending = (async () => {
      for (let batch = 0; batch < 25; batch++) {
        const events = rooms.map((room) => makeEvent(room, `${room} ${batch}`));
        expect((await send(`load-${batch}`, events)).status).toBe(200);
      }
    })();
    await waitFor(() => homeserver.sent.length >= 100, 60_000, "the first 100");
    homeserver.cue(
      () => true,
      { status: 503, body: { errcode: "M_UNKNOWN", error: "Service unavailable" } },
      1_000_000,
    );
    // Past the backoff's cap (2 s here): each room's call is refused, waits and is tried again.
    const refusals = (room: string) =>
      homeserver.requests.filter(
        (r) => r.status === 503 && r.path.includes(`/rooms/${encodeURIComponent(room)}/`),
      ).length;
    await waitFor(() => rooms.every((room) => refusals(room) >= 2), 60_000, "two refusals a room");
    homeserver.clearCues();
    await sending;
    await waitFor(() => homeserver.sent.length >= 500, 120_000, "all 500");
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent).toHaveLength(500);
    // Each refused call was retried as itself (its txnId unchanged) until it went through.
    const pathsWith = (status: number) =>
      new Set(homeserver.requests.filter((r) => r.status === status).map((r) => r.path));
    const delivered = pathsWith(200);
    expect([...pathsWith(503)].filter((path) => !delivered.has(path))).toEqual([]);
    for (const room of rooms) {
      expect(homeserver.sent.filter((e) => e.roomId === room).map((e) => e.content.body)).toEqual(
        Array.from({ length: 25 }, (_, batch) => `echo: ${room} ${batch}`),
      );
    }
  }, 240_000);
});
