import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { application as webhooks } from "../../functions/applications/webhooks/index.ts";
import { botDeviceIdOf } from "../../functions/crypto/device-crypto.ts";
import { NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { CryptoPerson } from "../support/crypto-person.ts";
import { encryptedAppservice } from "../support/encrypted-appservice.ts";
import { newWebhook } from "../support/webhooks.ts";
import { SERVER } from "../support/with-homeserver.ts";

const ROOM = `!hooks-sealed:${SERVER}`;
const PDF = Buffer.from("%PDF-1.7 the quarterly report, not for the homeserver's eyes");
const TEXT = "deploy 42 finished: secret build notes";

/**
 * The webhooks application with encrypted rooms on: a webhook's text and file into a room with
 * `m.room.encryption` reach a strict person (Element's policy) decrypted, from the webhook
 * user's own cross-signed device, and the homeserver never sees either in clear.
 */
describe("webhooks into an encrypted room", () => {
  let setup: Awaited<ReturnType<typeof encryptedAppservice>>;
  let alice: CryptoPerson;

  beforeAll(async () => {
    setup = await encryptedAppservice(webhooks);
    alice = await CryptoPerson.create(setup.homeserver, "alice");
  });
  afterAll(async () => {
    alice?.close();
    await setup?.stop();
  });

  it("a POST of text and a file: she decrypts both from the webhook user's trusted device, the file's bytes too; no clear text reaches the homeserver", async () => {
    const { homeserver } = setup;
    homeserver.createRoom(ROOM, [alice.userId, setup.bot]);
    homeserver.setState(ROOM, "m.room.power_levels", "", { users: { [alice.userId]: 50 } });
    // Made while the room is in clear, so that the bot's answers can be read by the helper.
    const { url } = await newWebhook(setup, "sealed", alice.userId, ROOM);
    homeserver.setState(ROOM, "m.room.encryption", "", { algorithm: "m.megolm.v1.aes-sha2" });
    const from = homeserver.requests.length;

    const form = new FormData();
    form.append("text", TEXT);
    form.append("file", new Blob([PDF], { type: "application/pdf" }), "report.pdf");
    expect((await fetch(url, { method: "POST", body: form })).status).toBe(202);
    const posted = () =>
      homeserver.sent.filter((e) => e.roomId === ROOM && e.sender.startsWith("@_webhook_"));
    await waitFor(() => posted().length === 2, 60_000, "the webhook's two messages");
    expect(await waitUntilDrained(setup.local)).toEqual(NO_DEAD_LETTERS);
    expect(posted().map((e) => e.type)).toEqual(["m.room.encrypted", "m.room.encrypted"]);

    // Her strict client reads both, from the webhook user's own device, cross-signed.
    const hookUser = posted()[0]?.sender as string;
    await alice.track([hookUser]);
    await alice.sync();
    const [text, file] = await Promise.all(
      posted().map((e) => alice.decrypt(alice.event(e.eventId))),
    );
    const device = botDeviceIdOf(hookUser);
    expect(text).toEqual({
      type: "m.room.message",
      content: expect.objectContaining({ msgtype: "m.text", body: TEXT }),
      senderDevice: device,
    });
    expect(file).toMatchObject({ type: "m.room.message", senderDevice: device });
    const content = file?.content as Record<string, unknown>;
    expect(content).toMatchObject({ msgtype: "m.file", body: "report.pdf" });
    expect(content.url).toBeUndefined();
    const sealed = content.file as { url: string };
    const mediaId = sealed.url.split("/").at(-1) as string;
    const stored = homeserver.media.get(mediaId)?.bytes as Buffer;
    const attachment = new alice.sdk.EncryptedAttachment(
      new Uint8Array(stored),
      JSON.stringify(sealed),
    );
    expect(Buffer.from(alice.sdk.Attachment.decrypt(attachment)).equals(PDF)).toBe(true);

    // What the homeserver was asked since: neither the text nor the file's bytes nor its name.
    const asked = homeserver.requests.slice(from);
    const telling = asked
      .filter(({ bytes: _bytes, ...request }) =>
        [TEXT, "report.pdf"].some((clear) => JSON.stringify(request).includes(clear)),
      )
      .map((r) => `${r.method} ${r.path} ${JSON.stringify(r.query)}`);
    expect(telling).toEqual([]);
    const uploaded = asked.flatMap((r) => (r.bytes ? [r.bytes] : []));
    expect(uploaded).toHaveLength(1);
    expect(uploaded.some((bytes) => bytes.includes(PDF.subarray(0, 16)))).toBe(false);
  });
});
