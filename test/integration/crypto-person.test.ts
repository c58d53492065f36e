import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CryptoPerson } from "../support/crypto-person.ts";
import { ScriptedHomeserver } from "../support/homeserver.ts";

const SERVER = "test.local";
const ROOM = `!encrypted:${SERVER}`;

/** The devices `sender`'s `PUT /sendToDevice/{type}` requests addressed, as `user device`. */
function toDeviceTargets(
  homeserver: ScriptedHomeserver,
  sender: string,
  type = "m.room.encrypted",
) {
  const owner = (authorization: string | undefined) =>
    homeserver.encryption.tokenOwner(authorization)?.userId;
  return homeserver.requests
    .filter((r) => r.path.startsWith(`/_matrix/client/v3/sendToDevice/${type}/`))
    .filter((r) => owner(r.authorization) === sender)
    .flatMap((r) =>
      Object.entries(
        (r.body as { messages: Record<string, Record<string, unknown>> }).messages,
      ).flatMap(([user, byDevice]) => Object.keys(byDevice).map((device) => `${user} ${device}`)),
    );
}

describe("people with real crypto devices on the scripted homeserver", () => {
  const homeserver = new ScriptedHomeserver("as-token", SERVER, `@bot:${SERVER}`, () => false);
  let alice: CryptoPerson;
  let bob: CryptoPerson;
  let mallory: CryptoPerson;
  const members = [`@alice:${SERVER}`, `@bob:${SERVER}`, `@mallory:${SERVER}`];

  beforeAll(async () => {
    await homeserver.start();
    alice = await CryptoPerson.create(homeserver, "alice");
    bob = await CryptoPerson.create(homeserver, "bob");
    // A device its owner never cross-signed, whose client shares keys with every device.
    mallory = await CryptoPerson.create(homeserver, "mallory", {
      crossSigned: false,
      strict: false,
    });
    homeserver.createRoom(ROOM, members);
    homeserver.setState(ROOM, "m.room.encryption", "", { algorithm: "m.megolm.v1.aes-sha2" });
  });
  afterAll(async () => {
    for (const person of [alice, bob, mallory]) person?.close();
    await homeserver.stop();
  });

  it("publishes each strict person's cross-signing identity, its device signed by it", async () => {
    for (const person of [alice, bob]) {
      const status = await person.machine.crossSigningStatus();
      expect(status.hasMaster && status.hasSelfSigning && status.hasUserSigning).toBe(true);
      expect(homeserver.encryption.crossSigning.get(person.userId)?.master).toBeDefined();
    }
    expect(homeserver.encryption.crossSigning.get(mallory.userId)).toBeUndefined();
    // Bob sees Alice's device as cross-signed by her, and Mallory's as not.
    await bob.machine.updateTrackedUsers(members.map((id) => new bob.sdk.UserId(id)));
    await bob.sendOutgoing();
    const aliceDevice = await bob.machine.getDevice(
      new bob.sdk.UserId(alice.userId),
      new bob.sdk.DeviceId(alice.deviceId),
    );
    const malloryDevice = await bob.machine.getDevice(
      new bob.sdk.UserId(mallory.userId),
      new bob.sdk.DeviceId(mallory.deviceId),
    );
    expect(aliceDevice?.isCrossSigningTrusted() || aliceDevice?.isCrossSignedByOwner()).toBe(true);
    expect(malloryDevice?.isCrossSignedByOwner()).toBe(false);
  });

  it("exchanges encrypted messages both ways; the uncross-signed device gets no room key", async () => {
    const hello = await alice.sendEncrypted(ROOM, members, { msgtype: "m.text", body: "hello" });
    expect(homeserver.sent.find((e) => e.eventId === hello)?.type).toBe("m.room.encrypted");
    expect(JSON.stringify(homeserver.sent.find((e) => e.eventId === hello))).not.toContain("hello");
    expect(toDeviceTargets(homeserver, alice.userId)).toContain(`${bob.userId} ${bob.deviceId}`);
    // Olm-encrypted to-device messages (the room key) for Bob, none for Mallory: she is told
    // the key is withheld from her unverified device.
    expect(toDeviceTargets(homeserver, alice.userId).join()).not.toContain(mallory.userId);
    expect(toDeviceTargets(homeserver, alice.userId, "m.room_key.withheld")).toEqual([
      `${mallory.userId} ${mallory.deviceId}`,
    ]);

    await bob.sync();
    expect(await bob.decrypt(bob.event(hello))).toEqual({
      type: "m.room.message",
      content: { msgtype: "m.text", body: "hello" },
      senderDevice: alice.deviceId,
    });
    await mallory.sync();
    await expect(mallory.decrypt(mallory.event(hello))).rejects.toMatchObject({
      code: mallory.sdk.DecryptionErrorCode.MissingRoomKey,
    });

    const reply = await bob.sendEncrypted(ROOM, members, { msgtype: "m.text", body: "hi alice" });
    await alice.sync();
    expect((await alice.decrypt(alice.event(reply))).content).toEqual({
      msgtype: "m.text",
      body: "hi alice",
    });
  });

  it("refuses, strictly, a message from a device its owner did not cross-sign", async () => {
    const sneaky = await mallory.sendEncrypted(ROOM, members, { msgtype: "m.text", body: "psst" });
    // Mallory's client shared the room key with everyone: Alice has it ...
    expect(toDeviceTargets(homeserver, mallory.userId)).toContain(
      `${alice.userId} ${alice.deviceId}`,
    );
    await alice.sync();
    const event = alice.event(sneaky);
    // ... and refuses to decrypt under the strict policy.
    await expect(alice.decrypt(event)).rejects.toMatchObject({
      code: alice.sdk.DecryptionErrorCode.UnsignedSenderDevice,
    });
    // The key is there: only the policy stands in the way.
    const lenient = await alice.machine.decryptRoomEvent(
      JSON.stringify(event),
      new alice.sdk.RoomId(ROOM),
      new alice.sdk.DecryptionSettings(alice.sdk.TrustRequirement.Untrusted),
    );
    expect(JSON.parse(lenient.event).content.body).toBe("psst");
  });
});
