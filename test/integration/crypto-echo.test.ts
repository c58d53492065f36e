import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { application as echoBot } from "../../functions/applications/echo-bot/index.ts";
import { botDeviceIdOf } from "../../functions/crypto/device-crypto.ts";
import { sendRequest } from "../../functions/crypto/requests.ts";
import {
  NO_DEAD_LETTERS,
  putTransaction,
  tempDir,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import {
  BOT,
  encryptedAppservice,
  inviteToEncryptedRoom,
  pushedEvent,
} from "../support/encrypted-appservice.ts";
import type { ScriptedHomeserver } from "../support/homeserver.ts";
import { type NpmStart, startNpmFor, stopAllNpmStarts } from "../support/npm-start.ts";
import { homeserverWithRegistration, SERVER } from "../support/with-homeserver.ts";

/** Where the homeserver's records stand: what comes after is what a step did. */
const recordsOf = (homeserver: ScriptedHomeserver) => ({
  requests: homeserver.requests.length,
  sent: homeserver.sent.length,
});

/**
 * What a strict person's client checks after her encrypted `!ping` (`ping`) went into `room`:
 * one answer from the bot since `from`, `m.room.encrypted`, that she decrypts from the bot's
 * cross-signed device; nothing the homeserver was asked since holds the ping or the answer in
 * clear.
 */
async function answeredEncrypted(
  homeserver: ScriptedHomeserver,
  alice: CryptoPerson,
  room: string,
  ping: string,
  from: ReturnType<typeof recordsOf>,
) {
  const answers = () =>
    homeserver.sent
      .slice(from.sent)
      .filter((event) => event.roomId === room && event.sender === BOT);
  await waitFor(() => answers().length > 0, 60_000, "the bot's answer");
  const [answer] = answers();
  expect(answers()).toHaveLength(1);
  expect(answer).toMatchObject({ type: "m.room.encrypted" });
  const reply = `echo: ${ping}`;
  const asked = JSON.stringify(homeserver.requests.slice(from.requests));
  expect(asked).not.toContain(reply);
  expect(asked).not.toContain(ping);
  // Her strict client (only from devices their owner cross-signed) reads it.
  await alice.track([BOT]);
  await alice.sync();
  expect(await alice.decrypt(alice.event(answer?.eventId as string))).toEqual({
    type: "m.room.message",
    content: { msgtype: "m.text", body: reply },
    senderDevice: botDeviceIdOf(BOT),
  });
}

/**
 * Both halves of encrypted rooms wired, end to end in process: the echo bot in an encrypted room
 * reads a strict person's message decrypted, and its answer goes back encrypted by the bot's
 * cross-signed device, never in clear.
 */
describe("an encrypted room with the echo bot", () => {
  let setup: Awaited<ReturnType<typeof encryptedAppservice>>;
  let alice: CryptoPerson;
  const people: CryptoPerson[] = [];

  beforeAll(async () => {
    setup = await encryptedAppservice(echoBot);
    alice = await CryptoPerson.create(setup.homeserver, "alice");
    people.push(alice);
  });
  afterAll(async () => {
    for (const person of people) person.close();
    await setup?.stop();
  });

  it("a strict person's encrypted !ping is answered encrypted, decrypted by her from the bot's trusted device; no clear reply is sent", async () => {
    const { homeserver } = setup;
    const room = `!echo-${randomUUID().slice(0, 8)}:${SERVER}`;
    await setup.encryptedRoom(room, alice);
    const from = recordsOf(homeserver);
    const ping = `!ping ${randomUUID()}`;
    expect(await setup.sendAndPush(room, alice, ping)).toMatchObject({
      content: { body: ping },
      decryption: { status: "decrypted", senderTrust: "cross-signed" },
    });
    await answeredEncrypted(homeserver, alice, room, ping, from);
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
  });
  it("after an outage lost a device-list change, an events-only retry has the bot query again: its next answer reaches her new device", async () => {
    const { homeserver } = setup;
    const room = `!outage-${randomUUID().slice(0, 8)}:${SERVER}`;
    await setup.encryptedRoom(room, alice);
    const answers = () =>
      homeserver.sent.filter((event) => event.roomId === room && event.sender === BOT);
    // Before: the bot tracks her, her one device known.
    await setup.sendAndPush(room, alice, "before the outage");
    await waitFor(() => answers().length === 1, 60_000, "the first answer");

    // During the outage she signs in on a new device and verifies it from the first.
    const newDevice = await CryptoPerson.create(homeserver, "alice", { crossSigned: false });
    people.push(newDevice);
    await alice.sync();
    const device = await alice.machine.getDevice(
      new alice.sdk.UserId(alice.userId),
      new alice.sdk.DeviceId(newDevice.deviceId),
    );
    if (!device) throw new Error("her new device is not known to her first one");
    await sendRequest(alice.machine, await device.verify(), (call) => alice.call(call));
    // The push that announced it failed: Synapse drops its device lists and to-device messages.
    homeserver.encryption.takeTransactionExtensions();
    const ping = await alice.sendEncrypted(room, [alice.userId, BOT], {
      msgtype: "m.text",
      body: "after the outage",
    });
    // Its retry: the events alone, no key counts.
    const retried = await putTransaction(
      setup.local.url,
      `retried-${randomUUID()}`,
      { events: [setup.pushed(ping)] },
      { token: setup.local.registration.hs_token },
    );
    expect(retried.status).toBe(200);
    await waitFor(() => answers().length === 2, 60_000, "the answer after the outage");

    // Her new device, strict too, reads the bot's answer: the room key was shared with it.
    await newDevice.track([BOT]);
    await newDevice.sync();
    expect(await newDevice.decrypt(newDevice.event(answers()[1]?.eventId as string))).toMatchObject(
      {
        content: { body: "echo: after the outage" },
        senderDevice: botDeviceIdOf(BOT),
      },
    );
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
  });
});

/**
 * The same as the README runs it: `npm start`, its functions in threads of their own; then
 * started again on the same DATA_DIR (its crypto store secret) and DynamoDB, as after a reboot.
 */
describe("an encrypted room with the echo bot, through npm start (ENCRYPTED_ROOMS=true)", () => {
  let withRegistration: Awaited<ReturnType<typeof homeserverWithRegistration>>;
  let homeserver: ScriptedHomeserver;
  let alice: CryptoPerson;
  let env: Record<string, string>;
  let first: NpmStart;
  const room = `!echo-npm-${randomUUID().slice(0, 8)}:${SERVER}`;

  /** Her encrypted `!ping` into the room, pushed; she reads the bot's encrypted answer. */
  const pingAnswered = async () => {
    const from = recordsOf(homeserver);
    const ping = `!ping ${randomUUID()}`;
    const eventId = await alice.sendEncrypted(room, [alice.userId, BOT], {
      msgtype: "m.text",
      body: ping,
    });
    expect((await homeserver.pushTransaction([pushedEvent(homeserver, eventId)])).status).toBe(200);
    await answeredEncrypted(homeserver, alice, room, ping, from);
  };

  beforeAll(async () => {
    withRegistration = await homeserverWithRegistration({
      id: `echo-npm-${randomUUID().slice(0, 8)}`,
    });
    ({ homeserver } = withRegistration);
    env = { APPLICATION: "echo-bot", ENCRYPTED_ROOMS: "true", DATA_DIR: await tempDir() };
    first = await startNpmFor(withRegistration, env);
    alice = await CryptoPerson.create(homeserver, "alice");
  }, 120_000);
  afterAll(async () => {
    alice?.close();
    await stopAllNpmStarts("SIGTERM");
    await homeserver?.stop();
  });

  it("a strict person's encrypted !ping is answered encrypted, decrypted by her; no clear reply is sent", async () => {
    await inviteToEncryptedRoom(homeserver, room, alice);
    // The echo bot joins once the invite made its device: then people can encrypt for it.
    await waitFor(
      () => homeserver.requests.some((r) => r.method === "POST" && r.path.includes("/join")),
      60_000,
      "the bot's join",
    );
    await pingAnswered();
  }, 120_000);

  it("started again on the same DATA_DIR: the same device and keys, none made; her next !ping (the same room key) is answered, and she decrypts it", async () => {
    const deviceId = botDeviceIdOf(BOT);
    const keysBefore = homeserver.encryption.device(BOT, deviceId)?.keys;
    const masterBefore = homeserver.encryption.crossSigning.get(BOT)?.master;
    expect(keysBefore).toBeDefined();
    await first.stop("SIGTERM");
    const from = homeserver.requests.length;
    await startNpmFor(withRegistration, env);
    await pingAnswered();
    // The homeserver's device list: still the one device, with the keys it had.
    expect([...(homeserver.encryption.devices.get(BOT)?.keys() ?? [])]).toEqual([deviceId]);
    expect(homeserver.encryption.device(BOT, deviceId)?.keys).toEqual(keysBefore);
    expect(homeserver.encryption.crossSigning.get(BOT)?.master).toEqual(masterBefore);
    const making = homeserver.requests
      .slice(from)
      .filter((r) => /\/devices\/|\/login$|\/keys\/device_signing\/upload$/.test(r.path));
    expect(making.map((r) => `${r.method} ${r.path}`)).toEqual([]);
  }, 120_000);
});
