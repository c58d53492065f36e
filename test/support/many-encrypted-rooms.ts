import { randomUUID } from "node:crypto";
import type { DeliveredEvent } from "../../functions/appservice/application.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { CryptoPerson } from "./crypto-person.ts";
import type { ScriptedHomeserver } from "./homeserver.ts";

// What the many-rooms test and its bench (bench/encrypted-rooms.ts) share: no vitest here.

/** Events per pushed transaction, as a busy homeserver batches them. */
const PER_TRANSACTION = 50;

/** What a person sent: its room, event ID and body, in the order sent. */
export interface SentMessage {
  room: string;
  eventId: string;
  body: string;
}

/**
 * `roomCount` encrypted rooms (Megolm) of `peopleCount` strict people (each several rooms), the
 * bot in each; resolves with the people, the rooms and the bot's invites (to be pushed).
 */
export async function encryptedRooms(
  homeserver: ScriptedHomeserver,
  bot: string,
  { roomCount, peopleCount }: { roomCount: number; peopleCount: number },
) {
  const people: CryptoPerson[] = [];
  for (let i = 0; i < peopleCount; i++) {
    people.push(await CryptoPerson.create(homeserver, `person${i}`));
  }
  const prefix = `!many-${randomUUID().slice(0, 8)}`;
  const rooms = Array.from({ length: roomCount }, (_, i) => ({
    roomId: `${prefix}-${i}:${homeserver.serverName}`,
    person: people[i % peopleCount] as CryptoPerson,
  }));
  const invites: ClientEvent[] = rooms.map(({ roomId, person }) => {
    homeserver.createRoom(roomId, [person.userId, bot]);
    homeserver.setState(roomId, "m.room.encryption", "", { algorithm: "m.megolm.v1.aes-sha2" });
    return {
      event_id: `$invite-${randomUUID()}`,
      room_id: roomId,
      type: "m.room.member",
      sender: person.userId,
      state_key: bot,
      origin_server_ts: Date.now(),
      content: { membership: "invite" },
    };
  });
  return { people, rooms, invites };
}

/**
 * `count` messages, encrypted by each room's person round robin over the rooms (so that each
 * transaction mixes them, as a busy homeserver's do); resolves with what was sent, in order.
 */
export async function sendRoundRobin(
  rooms: { roomId: string; person: CryptoPerson }[],
  bot: string,
  count: number,
): Promise<SentMessage[]> {
  const sent: SentMessage[] = [];
  for (let i = 0; i < count; i++) {
    const { roomId, person } = rooms[i % rooms.length] as (typeof rooms)[number];
    const body = `message ${i} in ${roomId}`;
    const eventId = await person.sendEncrypted(roomId, [person.userId, bot], {
      msgtype: "m.text",
      body,
    });
    sent.push({ room: roomId, eventId, body });
  }
  return sent;
}

/**
 * Pushes what was sent in transactions of 50 events, as Synapse does: the room keys (to-device)
 * come with the first. Throws on an answer other than 200.
 */
export async function pushInTransactions(
  homeserver: ScriptedHomeserver,
  events: ClientEvent[],
): Promise<void> {
  for (let i = 0; i < events.length; i += PER_TRANSACTION) {
    const response = await homeserver.pushTransaction(events.slice(i, i + PER_TRANSACTION));
    if (response.status !== 200) throw new Error(`a transaction got ${response.status}`);
  }
}

/**
 * What went wrong between what was sent and what the application received, per room: messages
 * delivered twice or more, never delivered, delivered not decrypted or out of the room's order.
 * Empty when each was delivered decrypted, exactly once, in its room's order.
 */
export function deliveryProblems(sent: SentMessage[], received: DeliveredEvent[]): string[] {
  const problems: string[] = [];
  for (const room of new Set(sent.map((message) => message.room))) {
    const expected = sent.filter((message) => message.room === room);
    const got = received.filter(
      (event) => event.room_id === room && event.type !== "m.room.member",
    );
    const times = (eventId: string) => got.filter((event) => event.event_id === eventId).length;
    const twice = expected.filter(({ eventId }) => times(eventId) > 1).length;
    const never = expected.filter(({ eventId }) => times(eventId) === 0).length;
    const wrong = expected.filter(({ eventId, body }) =>
      got.some(
        (event) =>
          event.event_id === eventId &&
          (event.decryption?.status !== "decrypted" || event.content.body !== body),
      ),
    ).length;
    const firsts = [...new Set(got.map((event) => event.event_id))];
    const inOrder = expected
      .map(({ eventId }) => eventId)
      .filter((eventId) => firsts.includes(eventId));
    const outOfOrder = JSON.stringify(firsts) !== JSON.stringify(inOrder);
    if (twice || never || wrong || outOfOrder) {
      problems.push(
        `${room}: ${twice} delivered more than once, ${never} never, ${wrong} not decrypted` +
          ` or not as sent${outOfOrder ? ", out of order" : ""}`,
      );
    }
  }
  return problems;
}
