import { createHmac } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import {
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  startTestWorkers,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { RemoteService } from "../support/remote-service.ts";
import { noticesIn, sendCommand } from "../support/webhooks.ts";
import {
  homeserverWithRegistration,
  SERVER,
  startAppserviceAndHomeserver,
} from "../support/with-homeserver.ts";

// Outbound webhooks end to end: once with each function in a worker thread of its own, as
// `npm start` runs them, the rest in one thread (DynamoDB Local, fauxqs, the outbox's retries
// with a 1–2 s backoff);
// the homeserver scripted, the targets played by RemoteService on 127.0.0.1, which local mode
// allows (DELIVERY_ALLOWED_ADDRESSES: loopback by default).

const ROOM = `!hooks-out:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;
const ALICE = `@alice:${SERVER}`;
const ADMIN_TOKEN = "outbound-test-admin-token";

const signatureOf = (secret: string, raw: Buffer) =>
  `sha256=${createHmac("sha256", secret).update(raw).digest("hex")}`;

describe("outbound webhooks with the functions in worker threads, as `npm start` runs them", () => {
  it("a target that answers 500 twice, then 200: one delivery, the same Idempotency-Key on all three attempts, signed with the secret of the DM; !webhook list says delivered; removed, nothing more goes", {
    timeout: 120_000,
  }, async () => {
    const started = await homeserverWithRegistration({
      id: "outbound-test",
      userPrefixes: ["_webhook_"],
    });
    const { registration, homeserver } = started;
    const bot = `@bot:${SERVER}`;
    onTestFinished(() => homeserver.stop());
    const remote = new RemoteService();
    await remote.start();
    onTestFinished(() => remote.stop());
    homeserver.createRoom(ROOM, [MODERATOR, ALICE, bot]);
    homeserver.setState(ROOM, "m.room.power_levels", "", { users: { [MODERATOR]: 50 } });
    homeserver.setState(ROOM, "m.room.member", ALICE, { membership: "join", displayname: "Alice" });

    const local = await startTestWorkers({
      registrationPath: started.registrationPath,
      homeserverUrl: homeserver.url,
      serverName: SERVER,
      backoff: { baseSeconds: 1, capSeconds: 2 },
    });
    onTestFinished(() => local.stop());
    homeserver.appservice = { id: registration.id, url: local.url, hsToken: registration.hs_token };
    const { url } = local;
    let txn = 0;
    const send = async (event: ReturnType<typeof makeEvent>) =>
      expect(
        (
          await putTransaction(
            url,
            `npm-${++txn}`,
            { events: [event] },
            {
              token: registration.hs_token,
            },
          )
        ).status,
      ).toBe(200);
    const notices = (roomId: string) =>
      homeserver.sent
        .filter((e) => e.sender === bot && e.roomId === roomId && e.content.msgtype === "m.notice")
        .map((e) => String(e.content.body));
    const command = async (body: string) => {
      const before = notices(ROOM).length;
      await send(makeEvent(ROOM, body, { sender: MODERATOR }));
      await waitFor(() => notices(ROOM).length > before, 30_000, `an answer to ${body}`);
      return notices(ROOM).at(-1);
    };

    remote.cue({ status: 500, body: "down" }, { status: 500, body: "still down" });
    expect(await command(`!webhook out ci ${remote.url}/hooks/ci?token=abc`)).toBe(
      `Outbound webhook ci created: every message here from now on is sent to ${remote.url}. I sent its signing secret to ${MODERATOR} in a direct message.`,
    );
    const dm = homeserver.createdRooms.find((r) => r.body.is_direct === true);
    expect(dm?.body).toMatchObject({ invite: [MODERATOR], is_direct: true });
    await waitFor(() => notices(dm?.roomId as string).length > 0, 30_000, "the secret in the DM");
    const secret = (notices(dm?.roomId as string)[0] as string).split("\n").at(-1) as string;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(notices(ROOM).join("\n")).not.toContain(secret);

    const hello = makeEvent(ROOM, "hello out there", { sender: ALICE });
    await send(hello);
    await waitFor(() => remote.requests.some((r) => r.status === 200), 60_000, "the delivery");
    expect(remote.requests.map((r) => r.status)).toEqual([500, 500, 200]);
    expect(remote.requests.map((r) => r.path)).toEqual(Array(3).fill("/hooks/ci?token=abc"));
    const keys = remote.requests.map((r) => r.headers["idempotency-key"]);
    expect(new Set(keys).size).toBe(1);
    expect(keys[0]).toMatch(/^[0-9a-f]{64}$/);
    for (const request of remote.requests) {
      expect(request.method).toBe("POST");
      expect(request.headers["content-type"]).toBe("application/json");
      expect(request.headers["x-webhook-signature"]).toBe(signatureOf(secret, request.raw));
    }
    expect(JSON.parse(remote.requests[0]?.body as string)).toEqual({
      webhook: "ci",
      event_id: hello.event_id,
      room_id: ROOM,
      sender: { user_id: ALICE, display_name: "Alice" },
      type: "m.room.message",
      origin_server_ts: hello.origin_server_ts,
      content: { msgtype: "m.text", body: "hello out there" },
    });
    // The `!webhook` commands are the bot's, never sent out.
    expect(await command("!webhook list")).toMatch(
      new RegExp(
        `• ci → ${remote.url.replaceAll(".", "\\.")} \\(outbound\\) — created \\d{4}-\\d\\d-\\d\\d by ${MODERATOR}, last delivery: delivered 200 at `,
      ),
    );
    // Another message: another key.
    await send(makeEvent(ROOM, "second", { sender: ALICE }));
    await waitFor(() => remote.requests.length === 4, 30_000, "the second delivery");
    expect(remote.requests[3]?.headers["idempotency-key"]).not.toBe(keys[0]);
    expect(await command("!webhook out remove ci")).toBe(
      "Outbound webhook ci removed: no later message is sent to it (one already queued still goes, for at most a day).",
    );
    await send(makeEvent(ROOM, "after removal", { sender: ALICE }));
    // Once the list, sent after, is answered, the message before it was handled.
    expect(await command("!webhook list")).toBe(
      "This room has no webhooks. Create one with !webhook new <name>.",
    );
    expect(remote.requests).toHaveLength(4);
  });
});

describe("outbound webhooks: room messages POSTed to a URL, signed, retried, dead-lettered with the reason", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  let transactions = 0;
  const command = (body: string) => sendCommand(started, body, MODERATOR, ROOM);
  const send = async (...events: ReturnType<typeof makeEvent>[]) =>
    expect((await started.send(`out-${++transactions}`, events)).status).toBe(200);
  const admin = async (path: string) => {
    const response = await fetch(`${started.local.url}/admin/api/${path}`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    const text = await response.text();
    // biome-ignore lint/suspicious/noExplicitAny: the answers' shapes are what the test checks.
    return { text, json: JSON.parse(text) as any };
  };
  const remoteService = async () => {
    const remote = new RemoteService();
    await remote.start();
    onTestFinished(() => remote.stop());
    return remote;
  };

  /** `!webhook out`: the room's answer, and the secret the bot sent the moderator in a DM. */
  const newOutbound = async (name: string, url: string) => {
    const answer = await command(`!webhook out ${name} ${url}`);
    expect(answer).toBe(
      `Outbound webhook ${name} created: every message here from now on is sent to ${new URL(url).origin}. I sent its signing secret to ${MODERATOR} in a direct message.`,
    );
    const dmMessage = () =>
      started.homeserver.sent.find(
        (e) =>
          e.sender === started.bot &&
          e.roomId !== ROOM &&
          String(e.content.body).startsWith(`Outbound webhook ${name} of ${ROOM}`),
      );
    await waitFor(() => dmMessage() !== undefined, 20_000, "the secret in a direct message");
    const dm = dmMessage() as NonNullable<ReturnType<typeof dmMessage>>;
    const secret = String(dm.content.body).split("\n").at(-1) as string;
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    // Never in the shared room.
    expect(noticesIn(started, ROOM).join("\n")).not.toContain(secret);
    return { secret, dm: dm.roomId };
  };

  beforeAll(async () => {
    started = await startAppserviceAndHomeserver({ adminToken: ADMIN_TOKEN });
    started.homeserver.createRoom(ROOM, [MODERATOR, ALICE, started.bot]);
    started.homeserver.setState(ROOM, "m.room.power_levels", "", {
      users: { [MODERATOR]: 50 },
      users_default: 0,
    });
    started.homeserver.setState(ROOM, "m.room.member", ALICE, {
      membership: "join",
      displayname: "Alice",
    });
  });
  afterAll(() => started?.stop());

  it("never sends the bot's messages, the webhook users' or other users of the appservice's namespace: no loops", async () => {
    const remote = await remoteService();
    await newOutbound("noloop", `${remote.url}/in`);
    // Only a moderator makes one.
    expect(await sendCommand(started, `!webhook out sneaky ${remote.url}/in`, ALICE, ROOM)).toBe(
      `Sorry ${ALICE}, only room moderators (power level 50 or more) can manage webhooks here.`,
    );
    const hookUser = `@_webhook_0123456789ab_ci:${SERVER}`;
    const puppet = `@_as_ghost:${SERVER}`;
    const human = makeEvent(ROOM, "from a human", { sender: ALICE });
    await send(
      makeEvent(ROOM, "from the bot", { sender: started.bot }),
      makeEvent(ROOM, "from a webhook", { sender: hookUser }),
      makeEvent(ROOM, "from a puppet", { sender: puppet }),
      human,
    );
    await waitFor(() => remote.requests.length >= 1);
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(remote.requests.map((r) => JSON.parse(r.body).event_id)).toEqual([human.event_id]);
    await command("!webhook out remove noloop");
  });

  it.each([
    ["http://10.1.2.3/hook", "10.1.2.3 is a private address"],
    [
      "http://169.254.169.254/latest/meta-data",
      "169.254.169.254 is a link-local address (cloud metadata endpoints live here)",
    ],
    ["ftp://example.org/x", 'the url\'s scheme "ftp:" is not http: or https:'],
    ["not-a-url", "the url is not a URL"],
  ])(
    "refuses a target the outbox would not deliver to (%s), saying why, and makes nothing",
    async (url, why) => {
      expect(await command(`!webhook out refused ${url}`)).toBe(
        `I cannot deliver to that URL: ${why}.`,
      );
      expect(await command("!webhook list")).not.toContain("refused");
    },
  );

  it("a permanent 4xx: dead-lettered at once with the reason; !webhook list and the operator console show it; the console never shows the body, the signature or the secret", async () => {
    const remote = await remoteService();
    remote.cue({ status: 404, body: "no such hook" });
    const { secret } = await newOutbound("gone", `${remote.url}/missing`);
    await send(makeEvent(ROOM, "into the void", { sender: ALICE }));
    expect(await waitUntilDrained(started.local)).toEqual({
      inboundDeadLetters: 0,
      outboundDeadLetters: 1,
    });
    expect(remote.requests.map((r) => r.status)).toEqual([404]);
    expect(await command("!webhook list")).toMatch(
      /• gone → http:\/\/127\.0\.0\.1:\d+ \(outbound\) — created .*, last delivery: dead-lettered 404: no such hook at 20/,
    );
    const letters = await admin("dead-letters?direction=outbound");
    const delivery = (letters.json.deadLetters as Record<string, unknown>[]).find(
      (letter) => letter.kind === "delivery",
    );
    expect(delivery).toMatchObject({
      roomId: ROOM,
      reason: { status: 404, error: "no such hook" },
      attempts: 1,
      key: remote.requests[0]?.headers["idempotency-key"],
    });
    expect(letters.text).not.toContain(secret);
    expect(letters.text).not.toContain(String(remote.requests[0]?.headers["x-webhook-signature"]));
    expect(letters.text).not.toContain("into the void");
    const webhooks = await admin("sections/webhooks");
    expect(JSON.stringify(webhooks.json)).not.toContain(secret);
    expect(webhooks.json.rows).toContainEqual(
      expect.objectContaining({
        roomId: ROOM,
        direction: "outbound",
        name: `gone → ${remote.url}`,
        lastStatus: "dead 404",
      }),
    );
    // The next message goes out: a dead letter holds the room's deliveries back no longer.
    await send(makeEvent(ROOM, "next", { sender: ALICE }));
    await waitFor(() => remote.requests.length === 2);
    expect(remote.requests[1]?.status).toBe(200);
    expect(JSON.parse(remote.requests[1]?.body as string).content.body).toBe("next");
    await command("!webhook out remove gone");
  });

  it("a media message carries its file as multipart (hookshot's `event` and `media` parts), signed over the raw body; a file too large for one delivery, or one the homeserver refuses (403), goes as JSON with a note", async () => {
    const remote = await remoteService();
    const { secret } = await newOutbound("files", `${remote.url}/files`);
    const picture = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 256));
    started.homeserver.media.set("pic", {
      creator: ALICE,
      bytes: picture,
      contentType: "image/png",
      fileName: "pic.png",
    });
    const big = Buffer.alloc(1100 * 1024, 7);
    started.homeserver.media.set("big", { creator: ALICE, bytes: big, contentType: "video/mp4" });
    const image = makeEvent(ROOM, "pic.png", {
      sender: ALICE,
      content: {
        msgtype: "m.image",
        body: "pic.png",
        url: `mxc://${SERVER}/pic`,
        info: { mimetype: "image/png", size: picture.length },
      },
    });
    const video = makeEvent(ROOM, "big.mp4", {
      sender: ALICE,
      content: { msgtype: "m.video", body: "big.mp4", url: `mxc://${SERVER}/big` },
    });
    // A file the homeserver refuses to serve (quarantined): the message still goes, with a note.
    const isQuarantined = (r: { path: string }) =>
      r.path.includes("/download/") && r.path.includes("/quarantined");
    started.homeserver.cue(
      isQuarantined,
      { status: 403, body: { errcode: "M_FORBIDDEN", error: "Quarantined" } },
      20,
    );
    const refused = makeEvent(ROOM, "gone.png", {
      sender: ALICE,
      content: { msgtype: "m.image", body: "gone.png", url: `mxc://${SERVER}/quarantined` },
    });
    await send(image, video, refused);
    await waitFor(() => remote.requests.length >= 3);
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);

    const [withFile, withNote, withRefusal] = remote.requests;
    expect(JSON.parse(withRefusal?.body as string)).toMatchObject({
      event_id: refused.event_id,
      media_omitted: "the homeserver refused the file (403)",
    });
    expect(withFile?.headers["content-type"]).toMatch(/^multipart\/form-data; boundary=/);
    expect(withFile?.headers["x-webhook-signature"]).toBe(
      signatureOf(secret, withFile?.raw as Buffer),
    );
    const form = await new Response(withFile?.raw, {
      headers: { "content-type": String(withFile?.headers["content-type"]) },
    }).formData();
    const eventPart = form.get("event") as File;
    expect(eventPart.type).toBe("application/json");
    expect(JSON.parse(await eventPart.text())).toMatchObject({
      webhook: "files",
      event_id: image.event_id,
      content: { msgtype: "m.image", url: `mxc://${SERVER}/pic` },
    });
    const mediaPart = form.get("media") as File;
    expect(mediaPart.name).toBe("pic.png");
    expect(mediaPart.type).toBe("image/png");
    expect(Buffer.from(await mediaPart.arrayBuffer()).equals(picture)).toBe(true);

    expect(withNote?.headers["content-type"]).toBe("application/json");
    expect(withNote?.headers["x-webhook-signature"]).toBe(
      signatureOf(secret, withNote?.raw as Buffer),
    );
    expect(JSON.parse(withNote?.body as string)).toMatchObject({
      event_id: video.event_id,
      content: { msgtype: "m.video", url: `mxc://${SERVER}/big` },
      media_omitted: expect.stringMatching(/^the file is over the \d+ bytes one delivery carries$/),
    });
    await command("!webhook out remove files");
  });
});
