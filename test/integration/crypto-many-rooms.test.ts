import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import type { CryptoPerson } from "../support/crypto-person.ts";
import { BOT, encryptedAppservice } from "../support/encrypted-appservice.ts";
import {
  deliveryProblems,
  encryptedRooms,
  pushInTransactions,
  sendRoundRobin,
} from "../support/many-encrypted-rooms.ts";

const ROOMS = 20;
/** The issue's 500: with the devices' machines kept warm, 7–10 s on 2 quiet cores. */
const MESSAGES = 500;

/**
 * Strict people's encrypted messages over many encrypted rooms, mixed in each transaction: the
 * application's `onEvent` sees each decrypted exactly once, in its room's order.
 */
describe("encrypted messages over many rooms", () => {
  let setup: Awaited<ReturnType<typeof encryptedAppservice>>;
  let people: CryptoPerson[] = [];
  let rooms: Awaited<ReturnType<typeof encryptedRooms>>["rooms"];

  beforeAll(async () => {
    setup = await encryptedAppservice();
    const made = await encryptedRooms(setup.homeserver, BOT, { roomCount: ROOMS, peopleCount: 4 });
    ({ people, rooms } = made);
    // The invites in one transaction: the first makes the bot's device, cross-signed.
    expect((await setup.homeserver.pushTransaction(made.invites)).status).toBe(200);
    await waitFor(
      () => made.invites.every((invite) => setup.delivered(invite.event_id).length === 1),
      60_000,
      "the invites delivered",
    );
  });
  afterAll(async () => {
    for (const person of people) person.close();
    await setup?.stop();
  });

  it(`${MESSAGES} messages over ${ROOMS} rooms reach onEvent decrypted, each once, in each room's order`, async () => {
    const sent = await sendRoundRobin(rooms, BOT, MESSAGES);
    await pushInTransactions(
      setup.homeserver,
      sent.map(({ eventId }) => setup.pushed(eventId)),
    );
    const delivered = () => sent.filter(({ eventId }) => setup.delivered(eventId).length > 0);
    await waitFor(() => delivered().length === MESSAGES, 120_000, "every message delivered");
    // At rest, so that no late duplicate can still come.
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
    expect(deliveryProblems(sent, setup.received)).toEqual([]);
  }, 180_000);
});
