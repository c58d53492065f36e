import { describe, expect, it, onTestFinished } from "vitest";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { MAX_MESSAGE_BYTES } from "../../functions/queue/queue.ts";
import {
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  recordingApplication,
  startTestAppservice,
  waitUntilDrained,
} from "../support/appservice.ts";

/** A state event whose content, and its previous content in `unsigned`, hold `emoji` emoji. */
const emojiStateEvent = (roomId: string, emoji: number): ClientEvent => {
  const content = { topic: "😀".repeat(emoji) };
  return makeEvent(roomId, "", {
    type: "m.room.topic",
    state_key: "",
    content,
    unsigned: { prev_content: content },
  });
};

describe("events too large for a queue message", () => {
  // Before: 413 for both, and a homeserver retries a refused transaction for ever, one at a time.
  it("a transaction of events over 256 KiB and over 1 MiB once queued → 200; each handled once, whole, in its room's order", async () => {
    const { application, events: handled } = recordingApplication();
    const local = await startTestAppservice({ application });
    onTestFinished(() => local.stop());
    const token = local.registration.hs_token;
    const room = "!big:test.local";
    // Any member of a room the bot joined can send these: content under Matrix's 64 KiB, its
    // emoji 12 bytes each as a queue writes them (`\ud83d\ude00`), twice over with `unsigned`.
    const overOldLimit = emojiStateEvent(room, 15_000);
    // `unsigned` has no bound at all: a homeserver may send an event of megabytes.
    const overMessage = emojiStateEvent(room, 100_000);
    expect(JSON.stringify(overMessage).length * 3).toBeGreaterThan(MAX_MESSAGE_BYTES);
    const events = [
      makeEvent(room, "before"),
      overOldLimit,
      overMessage,
      makeEvent(room, "after"),
      makeEvent("!other:test.local", "elsewhere"),
    ];
    expect((await putTransaction(local.url, "1", { events }, { token })).status).toBe(200);
    // A retry after a lost answer: still once.
    expect((await putTransaction(local.url, "1", { events }, { token })).status).toBe(200);
    expect(await waitUntilDrained(local, 60_000)).toEqual(NO_DEAD_LETTERS);
    expect(handled.filter((e) => e.room_id === room)).toEqual(events.slice(0, 4));
    expect(handled.map((e) => e.event_id).sort()).toEqual(events.map((e) => e.event_id).sort());
  });

  // Before: 413 past 6,000,000 bytes, below what Lambda takes (6,291,556, the body escaped).
  it("a transaction of 6.1 MB, under Lambda's limit once escaped → 200; each event handled once", async () => {
    const { application, events: handled } = recordingApplication();
    const local = await startTestAppservice({ application });
    onTestFinished(() => local.stop());
    const events = Array.from({ length: 100 }, (_, i) =>
      makeEvent(`!r${i % 7}:test.local`, "x".repeat(61_000)),
    );
    const body = JSON.stringify({ events });
    expect(Buffer.byteLength(body)).toBeGreaterThan(6_100_000);
    const token = local.registration.hs_token;
    expect((await putTransaction(local.url, "1", body, { token })).status).toBe(200);
    expect(await waitUntilDrained(local, 60_000)).toEqual(NO_DEAD_LETTERS);
    expect(handled.map((e) => e.event_id).sort()).toEqual(events.map((e) => e.event_id).sort());
  });
});
