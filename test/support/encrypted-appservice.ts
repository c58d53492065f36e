import { expect } from "vitest";
import type { Application, DeliveredEvent } from "../../functions/appservice/application.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import type { LocalAppservice, LocalOptions } from "../../functions/local/local.ts";
import { makeEvent, putTransaction, startTestAppservice, waitFor } from "./appservice.ts";
import type { CryptoPerson } from "./crypto-person.ts";
import { pushedEvent, type ScriptedHomeserver } from "./homeserver.ts";
import { homeserverWithRegistration, SERVER } from "./with-homeserver.ts";

export { pushedEvent } from "./homeserver.ts";

export const BOT = `@bot:${SERVER}`;
const SECRET = "a crypto store secret of at least 32 characters";

/**
 * An encrypted room (`m.room.encryption`: Megolm) of `person`'s with the bot in it, the bot's
 * invite pushed to the appservice; resolves with the invite.
 */
export async function inviteToEncryptedRoom(
  homeserver: ScriptedHomeserver,
  roomId: string,
  person: CryptoPerson,
) {
  homeserver.createRoom(roomId, [person.userId, BOT]);
  homeserver.setState(roomId, "m.room.encryption", "", { algorithm: "m.megolm.v1.aes-sha2" });
  const invite = makeEvent(roomId, "", {
    type: "m.room.member",
    sender: person.userId,
    state_key: BOT,
    content: { membership: "invite" },
  });
  expect((await homeserver.pushTransaction([invite])).status).toBe(200);
  return invite;
}

/**
 * An appservice in process (DynamoDB Local, fauxqs) with encrypted rooms on (a crypto store
 * secret), against the scripted homeserver that pushes what Synapse pushes with MSC2409/MSC3202,
 * running `application` (with `options`, a remote service's say) and recording every event it
 * was handed (`received`).
 */
export async function encryptedAppservice(
  application: Application = {},
  options: Partial<LocalOptions> = {},
) {
  const { homeserver, registrationPath } = await homeserverWithRegistration({
    ...(application.userPrefixes && { userPrefixes: application.userPrefixes }),
    ...(application.aliasPrefixes && { aliasPrefixes: application.aliasPrefixes }),
  });
  const received: DeliveredEvent[] = [];
  const recording: Application = {
    ...application,
    async onEvent(event, context) {
      received.push(event);
      await application.onEvent?.(event, context);
    },
  };
  let tableName: string | undefined;
  const setup = {
    homeserver: homeserver as ScriptedHomeserver,
    bot: BOT,
    received,
    local: undefined as unknown as LocalAppservice,

    /** Starts the appservice (again, on the same table: a restart). */
    async start() {
      setup.local = await startTestAppservice({
        registrationPath,
        homeserverUrl: homeserver.url,
        serverName: SERVER,
        application: recording,
        cryptoStoreSecret: SECRET,
        ...options,
        ...(tableName && { tableName }),
      });
      tableName = setup.local.tableName;
      homeserver.appservice = {
        id: setup.local.registration.id,
        url: setup.local.url,
        hsToken: setup.local.registration.hs_token,
      };
    },

    async stop() {
      await setup.local?.stop();
      await homeserver.stop();
    },

    pushed: (eventId: string) => pushedEvent(homeserver, eventId),

    /** A transaction of `events` alone, as a homeserver sends it. */
    send: (txnId: string, events: ClientEvent[]) =>
      putTransaction(
        setup.local.url,
        txnId,
        { events },
        { token: setup.local.registration.hs_token },
      ),

    delivered: (eventId: string) => received.filter((event) => event.event_id === eventId),

    /**
     * `body` encrypted by `person` into `room`, pushed with its room key in one transaction as
     * Synapse pushes them; resolves with what the application got.
     */
    async sendAndPush(room: string, person: CryptoPerson, body: string) {
      const eventId = await person.sendEncrypted(room, [person.userId, BOT], {
        msgtype: "m.text",
        body,
      });
      expect((await homeserver.pushTransaction([setup.pushed(eventId)])).status).toBe(200);
      await waitFor(() => setup.delivered(eventId).length === 1, 30_000, "the event delivered");
      return setup.delivered(eventId)[0] as DeliveredEvent;
    },

    /**
     * An encrypted room of `person`'s with the bot in it, the bot's invite pushed (its device
     * made then) and handed to the application.
     */
    async encryptedRoom(roomId: string, person: CryptoPerson) {
      const invite = await inviteToEncryptedRoom(homeserver, roomId, person);
      await waitFor(() => setup.delivered(invite.event_id).length === 1);
    },
  };
  await setup.start();
  return setup;
}
