import { describe, expect, it, onTestFinished } from "vitest";
import type { Application } from "../../functions/appservice/application.ts";
import {
  deadLetters,
  makeEvent,
  NO_DEAD_LETTERS,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { RemoteService } from "../support/remote-service.ts";
import { startWithHomeserver } from "../support/with-homeserver.ts";

// Deliveries end to end in local mode: the application's `actions.deliver` on fauxqs's outbound
// queue, the outbox's retries (DynamoDB Local counts server errors), and a real HTTP target.

/** Delivers each message's body to `remote`, in its room's order, and answers `!ping` too. */
const forwarding = (remote: RemoteService): Application => ({
  async onEvent(event, { actions }) {
    if (event.type !== "m.room.message") return;
    await actions.deliver(
      {
        method: "POST",
        url: `${remote.url}/inbox`,
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ text: event.content.body }),
      },
      { orderedWith: event.room_id },
    );
    await actions.sendNotice(event.room_id, `forwarded: ${String(event.content.body)}`);
  },
});

const startRemote = async () => {
  const remote = new RemoteService();
  await remote.start();
  onTestFinished(() => remote.stop());
  return remote;
};

describe("deliveries to a remote service", () => {
  it("500, then 429 with Retry-After, then 200 → delivered once per attempt with one Idempotency-Key; the room's next delivery after it, in order", async () => {
    const remote = await startRemote();
    remote.cue(
      { status: 500, body: "down for a moment" },
      { status: 429, headers: { "retry-after": "2" } },
    );
    const { local, homeserver, send, bot } = await startWithHomeserver({
      application: forwarding(remote),
    });
    homeserver.createRoom("!room:test.local", [bot, "@alice:test.local"]);
    await send("t1", [
      makeEvent("!room:test.local", "first"),
      makeEvent("!room:test.local", "second"),
    ]);
    await waitFor(() => remote.requests.filter((r) => r.status === 200).length >= 2, 30_000);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(remote.requests.map((r) => [JSON.parse(r.body).text, r.status])).toEqual([
      ["first", 500],
      ["first", 429],
      ["first", 200],
      ["second", 200],
    ]);
    const keys = remote.requests.map((r) => r.headers["idempotency-key"]);
    expect(keys[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(keys.slice(0, 3)).toEqual([keys[0], keys[0], keys[0]]);
    expect(keys[3]).not.toBe(keys[0]);
    // The wait the 429 asked for, at least.
    const [, limited, delivered] = remote.requests;
    expect((delivered?.at ?? 0) - (limited?.at ?? 0)).toBeGreaterThanOrEqual(2000);
    expect(local.metrics.counts.get("OutboundCallsRetried")).toBe(2);
    // The room's Matrix calls were not held back by its deliveries (a group of their own).
    expect(homeserver.sent.map((e) => e.content.body)).toEqual([
      "forwarded: first",
      "forwarded: second",
    ]);
  });

  it("a target on an address the operator did not allow → dead-lettered with the reason, never connected; the room goes on", async () => {
    const remote = await startRemote();
    const { local, homeserver, send, bot } = await startWithHomeserver({
      application: forwarding(remote),
      deliveryAllowedAddresses: [],
    });
    homeserver.createRoom("!room:test.local", [bot, "@alice:test.local"]);
    await send("t1", [makeEvent("!room:test.local", "secret")]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual({ ...NO_DEAD_LETTERS, outboundDeadLetters: 1 });
    expect(remote.connections).toBe(0);
    const letters = await deadLetters(local, "outbound");
    expect(letters).toHaveLength(1);
    const [letter] = letters;
    expect(letter.reason).toEqual({
      error: "refused, not sent: 127.0.0.1 is a loopback address",
    });
    expect(letter.action).toMatchObject({
      kind: "delivery",
      roomId: "!room:test.local",
      delivery: { method: "POST", url: `${remote.url}/inbox` },
    });
    expect(homeserver.sent.map((e) => e.content.body)).toEqual(["forwarded: secret"]);
  });
});
