import { describe, expect, it } from "vitest";
import {
  type InboundMessage,
  inboundMessages,
  transactionHash,
} from "../../functions/appservice/pipeline/inbound.ts";
import { parseTransaction } from "../../functions/appservice/protocol/transaction.ts";
import { MAX_MESSAGE_BYTES } from "../../functions/queue/queue.ts";
import { MatrixError } from "../../functions/shared/errors.ts";
import { makeEvent } from "../support/appservice.ts";

const badJsonOf = (body: unknown) => {
  try {
    parseTransaction(body);
  } catch (error) {
    expect(error).toBeInstanceOf(MatrixError);
    expect((error as MatrixError).errcode).toBe("M_BAD_JSON");
    return (error as MatrixError).message;
  }
  throw new Error("expected M_BAD_JSON");
};

describe("parseTransaction", () => {
  it("rejects a body without an events array, naming the field", () => {
    expect(badJsonOf({})).toContain("events");
    expect(badJsonOf({ events: "x" })).toContain("events");
    expect(badJsonOf(null)).toContain("object");
    expect(
      badJsonOf({ events: [{ room_id: "!r:x", type: "t", sender: "@a:x", content: {} }] }),
    ).toContain("events.0.event_id");
  });

  it("folds unstable names into the stable ones, and prefers the stable one when both arrive", () => {
    const stable = [{ type: "m.typing", room_id: "!r:x", content: {} }];
    const unstable = [{ type: "m.presence", sender: "@a:x", content: {} }];
    expect(
      parseTransaction({ events: [], "de.sorunome.msc2409.ephemeral": unstable }).ephemeral,
    ).toEqual(unstable);
    expect(
      parseTransaction({ events: [], ephemeral: stable, "de.sorunome.msc2409.ephemeral": unstable })
        .ephemeral,
    ).toEqual(stable);
    const counts = { "@a:x": { DEV: { signed_curve25519: 1 } } };
    expect(
      parseTransaction({ events: [], "org.matrix.msc3202.device_one_time_key_counts": counts })
        .devices,
    ).toEqual({ oneTimeKeysCount: counts });
    expect(parseTransaction({ events: [] })).toEqual({ events: [], ephemeral: [], toDevice: [] });
  });
});

describe("inboundMessages", () => {
  const decode = (body: string) => JSON.parse(body) as InboundMessage;

  it("puts each room's events in one message of that room's group, in order", () => {
    const events = Array.from({ length: 9 }, (_, i) => makeEvent(`!r${i % 3}:x`, `m${i}`));
    const messages = inboundMessages("7", { events, ephemeral: [], toDevice: [] }).messages;
    expect(messages.map((m) => m.groupId)).toEqual(["!r0:x", "!r1:x", "!r2:x"]);
    const room1 = decode(messages[1]?.body as string).items.map((item) => item.id);
    expect(room1).toEqual([events[1], events[4], events[7]].map((e) => e?.event_id));
  });

  it("flags the first message of a transaction with events but no key counts (an events-only retry), and no other", () => {
    const events = [makeEvent("!a:x", "a"), makeEvent("!b:x", "b")];
    const flags = (transaction: Parameters<typeof inboundMessages>[1]) =>
      inboundMessages("9", transaction).messages.map((m) => decode(m.body).extensionsLost);
    expect(flags({ events, ephemeral: [], toDevice: [] })).toEqual([true, undefined]);
    const counts = { "@bot:x": { DEVICE: { signed_curve25519: 50 } } };
    expect(
      flags({ events, ephemeral: [], toDevice: [], devices: { oneTimeKeysCount: counts } }),
    ).toEqual([undefined, undefined, undefined]);
    // No events: nothing a homeserver retries.
    const toDevice = [
      { type: "m.dummy", sender: "@a:x", to_user_id: "@bot:x", to_device_id: "D", content: {} },
    ];
    expect(flags({ events: [], ephemeral: [], toDevice })).toEqual([undefined]);
  });

  it("derives the same deduplication IDs on a retry, and other ones for other events", () => {
    const events = [makeEvent("!r:x", "a")];
    const first = inboundMessages("1", { events, ephemeral: [], toDevice: [] }).messages;
    const retry = inboundMessages("1", { events, ephemeral: [], toDevice: [] }).messages;
    expect(retry).toEqual(first);
    const other = inboundMessages("1", {
      events: [makeEvent("!r:x", "b")],
      ephemeral: [],
      toDevice: [],
    }).messages;
    expect(other[0]?.deduplicationId).not.toBe(first[0]?.deduplicationId);
  });

  it("splits a room too large for one message into several, in order, each within the size limit", () => {
    const events = Array.from({ length: 40 }, (_, i) =>
      makeEvent("!big:x", "x".repeat(60_000) + i),
    );
    const messages = inboundMessages("1", { events, ephemeral: [], toDevice: [] }).messages;
    expect(messages.length).toBeGreaterThan(1);
    for (const message of messages)
      expect(Buffer.byteLength(message.body)).toBeLessThanOrEqual(MAX_MESSAGE_BYTES);
    const ids = messages.flatMap((m) => decode(m.body).items.map((item) => item.id));
    expect(ids).toEqual(events.map((e) => e.event_id));
  });

  it("groups presence by user and to-device by recipient", () => {
    const messages = inboundMessages("1", {
      events: [],
      ephemeral: [{ type: "m.presence", sender: "@a:x", content: {} }],
      toDevice: [{ type: "t", sender: "@a:x", to_user_id: "@b:x", to_device_id: "D", content: {} }],
    }).messages;
    expect(messages.map((m) => m.groupId)).toEqual(["@a:x", "@b:x"]);
  });

  it("hashes only the events: a retry without the ephemeral data is recognised", () => {
    const events = [makeEvent("!r:x", "a")];
    const original = transactionHash({
      events,
      ephemeral: [{ type: "m.typing", content: {} }],
      toDevice: [],
    });
    expect(transactionHash({ events, ephemeral: [], toDevice: [] })).toBe(original);
  });
});
