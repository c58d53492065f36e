import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { application as echoBot } from "../../functions/applications/echo-bot/index.ts";
import { botDeviceIdOf } from "../../functions/crypto/device-crypto.ts";
import { NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { BOT, encryptedAppservice } from "../support/encrypted-appservice.ts";
import { SERVER } from "../support/with-homeserver.ts";

/**
 * Both halves of encrypted rooms wired, end to end in process: the echo bot in an encrypted room
 * reads a strict person's message decrypted, and its answer goes back encrypted by the bot's
 * cross-signed device, never in clear.
 */
describe("an encrypted room with the echo bot", () => {
  let setup: Awaited<ReturnType<typeof encryptedAppservice>>;
  let alice: CryptoPerson;

  beforeAll(async () => {
    setup = await encryptedAppservice(echoBot);
    alice = await CryptoPerson.create(setup.homeserver, "alice");
  });
  afterAll(async () => {
    alice?.close();
    await setup?.stop();
  });

  it("a strict person's encrypted !ping is answered encrypted, decrypted by her from the bot's trusted device; no clear reply is sent", async () => {
    const { homeserver } = setup;
    const room = `!echo-${randomUUID().slice(0, 8)}:${SERVER}`;
    await setup.encryptedRoom(room, alice);
    const from = homeserver.requests.length;
    const ping = `!ping ${randomUUID()}`;
    const reply = `echo: ${ping}`;
    const received = await setup.sendAndPush(room, alice, ping);
    expect(received).toMatchObject({
      content: { body: ping },
      decryption: { status: "decrypted", senderTrust: "cross-signed" },
    });

    const answers = () =>
      homeserver.sent.filter((event) => event.roomId === room && event.sender === BOT);
    await waitFor(() => answers().length > 0, 30_000, "the bot's answer");
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
    const [answer] = answers();
    expect(answers()).toHaveLength(1);
    expect(answer).toMatchObject({ type: "m.room.encrypted" });
    // Nothing the homeserver was asked since holds the reply, or the ping, in clear.
    const asked = JSON.stringify(homeserver.requests.slice(from));
    expect(asked).not.toContain(reply);
    expect(asked).not.toContain(ping);

    // Her strict client (only from devices their owner cross-signed) reads it.
    await alice.track([BOT]);
    await alice.sync();
    const decrypted = await alice.decrypt(alice.event(answer?.eventId as string));
    expect(decrypted).toEqual({
      type: "m.room.message",
      content: { msgtype: "m.text", body: reply },
      senderDevice: botDeviceIdOf(BOT),
    });
  });
});
