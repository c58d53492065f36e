import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createRelay } from "../../functions/applications/relay/index.ts";
import { botDeviceIdOf } from "../../functions/crypto/device-crypto.ts";
import { encryptAttachment } from "../../functions/matrix/encrypted-attachment.ts";
import { makeEvent, NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { BOT, encryptedAppservice } from "../support/encrypted-appservice.ts";
import { pngHeader } from "../support/images.ts";
import { RemoteService, signedRequest } from "../support/remote-service.ts";
import { SERVER } from "../support/with-homeserver.ts";

// The relay in a portal a Matrix admin turned encryption on in (its portals are made public and
// clear): a strict person (Element's policy) talks with the remote service's users both ways,
// in process (DynamoDB Local, fauxqs, the scripted homeserver), and the homeserver sees no text.

const SECRET = "a-test-secret-of-the-relay-0123456789";
const CHANNEL = "secret";
const DAVE = `@_relay_dave:${SERVER}`;
const ERIN = `@_relay_erin:${SERVER}`;
const MEGOLM = { algorithm: "m.megolm.v1.aes-sha2" };
const IMAGE = pngHeader(320, 200);
const CAROLS_IMAGE = pngHeader(64, 48);

describe("relay: an encrypted portal", () => {
  let remote: RemoteService;
  let setup: Awaited<ReturnType<typeof encryptedAppservice>>;
  let carol: CryptoPerson;
  let portal: string;
  /** The homeserver's requests from when the portal was encrypted. */
  let from: number;

  const relay = (method: "POST" | "PUT" | "DELETE", path: string, body: unknown) =>
    signedRequest(method, `${setup.local.url}/relay/${CHANNEL}${path}`, SECRET, body).then(
      (response) => expect(response.status).toBe(202),
    );

  beforeAll(async () => {
    remote = new RemoteService(SECRET);
    await remote.start();
    setup = await encryptedAppservice(createRelay({ remoteUrl: remote.url }), {
      remoteSecret: SECRET,
      remoteServiceUrl: remote.url,
    });
    const { homeserver } = setup;
    carol = await CryptoPerson.create(homeserver, "carol");
    // The channel's first message makes the portal, in clear; then a Matrix admin encrypts it.
    await relay("POST", "/messages", { id: "m0", user: "dave", text: "before encryption" });
    await waitFor(() => homeserver.sent.length === 1, 30_000, "the first message");
    portal = homeserver.aliases.get(`#_relay_${CHANNEL}:${SERVER}`) as string;
    homeserver.rooms.get(portal)?.add(carol.userId);
    homeserver.setState(portal, "m.room.encryption", "", MEGOLM);
    const encryption = makeEvent(portal, "", {
      type: "m.room.encryption",
      sender: carol.userId,
      state_key: "",
      content: MEGOLM,
    });
    expect((await homeserver.pushTransaction([encryption])).status).toBe(200);
    await waitFor(() => setup.delivered(encryption.event_id).length === 1);
    from = homeserver.requests.length;
  }, 60_000);
  afterAll(async () => {
    carol?.close();
    await setup?.stop();
    await remote?.stop();
  });

  it("the bot's device is made when encryption is turned on (no invite made the portal)", () => {
    expect(setup.homeserver.encryption.crossSigning.get(BOT)?.master).toBeDefined();
  });

  it("Matrix → remote: her encrypted text, image (an encrypted attachment), edit and reaction reach the remote service decrypted", async () => {
    const { homeserver } = setup;
    const encrypted = (content: Record<string, unknown>, type?: string) =>
      carol.sendEncrypted(portal, [carol.userId, BOT], content, type);
    const text = await encrypted({ msgtype: "m.text", body: "carol's secret words" });
    // Her client encrypts the file before its upload and names it by `file`.
    const { data, keys } = encryptAttachment(CAROLS_IMAGE);
    homeserver.media.set("carols-image", { creator: carol.userId, bytes: data });
    const image = await encrypted({
      msgtype: "m.image",
      body: "cat.png",
      file: { url: `mxc://${SERVER}/carols-image`, ...keys },
      info: { mimetype: "image/png" },
    });
    const edit = await encrypted({
      msgtype: "m.text",
      body: "* carol's edited words",
      "m.new_content": { msgtype: "m.text", body: "carol's edited words" },
      "m.relates_to": { rel_type: "m.replace", event_id: text },
    });
    const reaction = await encrypted(
      { "m.relates_to": { rel_type: "m.annotation", event_id: text, key: "🙂" } },
      "m.reaction",
    );
    const pushed = [text, image, edit, reaction].map((eventId) => setup.pushed(eventId));
    expect((await homeserver.pushTransaction(pushed)).status).toBe(200);
    await waitFor(() => remote.requests.length === 4, 30_000, "the four deliveries");
    expect(setup.delivered(text)).toMatchObject([
      { decryption: { status: "decrypted", senderTrust: "cross-signed" } },
    ]);
    const channel = `/channels/${CHANNEL}`;
    expect(remote.requests.map((r) => [r.method, r.path, JSON.parse(r.body)])).toEqual([
      [
        "POST",
        `${channel}/messages`,
        expect.objectContaining({ id: text, sender: carol.userId, text: "carol's secret words" }),
      ],
      [
        "POST",
        `${channel}/messages`,
        expect.objectContaining({
          id: image,
          text: "",
          image: { content_type: "image/png", data: CAROLS_IMAGE.toString("base64") },
        }),
      ],
      [
        "PUT",
        `${channel}/messages/${encodeURIComponent(text)}`,
        { sender: carol.userId, text: "carol's edited words" },
      ],
      [
        "POST",
        `${channel}/reactions`,
        { id: reaction, sender: carol.userId, message_id: text, key: "🙂" },
      ],
    ]);
  });

  it("remote → Matrix: a message, reply, edit, reaction and image go in encrypted by each puppet's own device, and she decrypts each, trusted; deletions are clear redactions without a reason; the homeserver sees no text", async () => {
    const { homeserver, local } = setup;
    const sentFrom = homeserver.sent.length;
    await relay("POST", "/messages", { id: "m1", user: "dave", text: "dave's secret" });
    await relay("POST", "/messages", {
      id: "m2",
      user: "erin",
      text: "erin's secret answer",
      reply_to: "m1",
    });
    await relay("PUT", "/messages/m1", { user: "dave", text: "dave's edited secret" });
    await relay("POST", "/reactions", { id: "r1", user: "erin", message_id: "m1", key: "🔒" });
    await relay("POST", "/messages", {
      id: "m3",
      user: "dave",
      text: "",
      image: { content_type: "image/png", data: IMAGE.toString("base64"), filename: "plan.png" },
    });
    await waitFor(() => homeserver.sent.length === sentFrom + 5, 60_000, "the five sends");
    // Erin's answer deleted by dave (a moderator: the bot redacts), erin's reaction taken back.
    await relay("DELETE", "/messages/m2", { user: "dave" });
    await relay("DELETE", "/reactions/r1", {});
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);

    const sent = homeserver.sent.slice(sentFrom);
    expect(sent.map((e) => [e.sender, e.type])).toEqual([
      [DAVE, "m.room.encrypted"],
      [ERIN, "m.room.encrypted"],
      [DAVE, "m.room.encrypted"],
      [ERIN, "m.room.encrypted"],
      [DAVE, "m.room.encrypted"],
    ]);
    await carol.track([DAVE, ERIN]);
    await carol.sync();
    const [message, answer, edit, reaction, image] = await Promise.all(
      sent.map((e) => carol.decrypt(carol.event(e.eventId))),
    );
    const dave = botDeviceIdOf(DAVE);
    const erin = botDeviceIdOf(ERIN);
    const messageId = sent[0]?.eventId;
    expect(message).toEqual({
      type: "m.room.message",
      content: { msgtype: "m.text", body: "dave's secret" },
      senderDevice: dave,
    });
    expect(answer).toMatchObject({
      content: {
        body: "erin's secret answer",
        "m.relates_to": { "m.in_reply_to": { event_id: messageId } },
      },
      senderDevice: erin,
    });
    expect(edit).toMatchObject({
      content: {
        "m.new_content": { body: "dave's edited secret" },
        "m.relates_to": { rel_type: "m.replace", event_id: messageId },
      },
      senderDevice: dave,
    });
    expect(reaction).toEqual({
      type: "m.reaction",
      content: { "m.relates_to": { rel_type: "m.annotation", event_id: messageId, key: "🔒" } },
      senderDevice: erin,
    });
    // The remote image uploaded encrypted, named by `file`; she decrypts its bytes.
    expect(image?.content).toMatchObject({ msgtype: "m.image", body: "plan.png" });
    expect(image?.content.url).toBeUndefined();
    const file = image?.content.file as { url: string };
    const uploaded = homeserver.media.get(file.url.split("/").pop() as string)?.bytes;
    const { sdk } = carol;
    const bytes = sdk.Attachment.decrypt(
      new sdk.EncryptedAttachment(new Uint8Array(uploaded as Buffer), JSON.stringify(file)),
    );
    expect(Buffer.from(bytes).equals(IMAGE)).toBe(true);
    expect([...homeserver.media.values()].some((m) => m.bytes?.equals(IMAGE))).toBe(false);

    // Redactions have no encrypted form: clear, and without the reason naming who deleted.
    const redactions = homeserver.requests.filter((r) => r.path.includes("/redact/"));
    expect(redactions.map((r) => [r.query.user_id ?? "the bot", r.body])).toEqual([
      ["the bot", {}],
      [ERIN, {}],
    ]);
    // Relations stay outside the ciphertext, as the spec has them and clients send them (the
    // homeserver aggregates edits and reactions): a reaction's key is seen, as from any client.
    expect(sent.map((e) => e.content["m.relates_to"])).toEqual([
      undefined,
      { "m.in_reply_to": { event_id: messageId } },
      { rel_type: "m.replace", event_id: messageId },
      { rel_type: "m.annotation", event_id: messageId, key: "🔒" },
      undefined,
    ]);
    const asked = JSON.stringify(homeserver.requests.slice(from));
    for (const text of [
      "carol's secret words",
      "carol's edited words",
      "dave's secret",
      "erin's secret answer",
      "dave's edited secret",
      "deleted by",
    ]) {
      expect(asked).not.toContain(text);
    }
  });
});
