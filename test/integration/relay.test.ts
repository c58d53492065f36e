import { describe, expect, it, onTestFinished } from "vitest";
import { createRelay } from "../../functions/applications/relay/index.ts";
import { signatureHeaders } from "../../functions/remote/signature.ts";
import {
  makeEvent,
  NO_DEAD_LETTERS,
  putTransaction,
  waitFor,
  waitUntilDrained,
} from "../support/appservice.ts";
import { pngHeader } from "../support/images.ts";
import {
  RemoteService,
  signatureSet,
  signedPost,
  signedRequest,
} from "../support/remote-service.ts";
import { SERVER, startWithHomeserver } from "../support/with-homeserver.ts";

// The relay bridge end to end in local mode (DynamoDB Local, fauxqs, the scripted homeserver):
// this test plays the remote chat service, on both of its sides.

const ALICE = `@_relay_alice:${SERVER}`;
const BOB_PUPPET = `@_relay_bob:${SERVER}`;
const BOB = `@bob:${SERVER}`;
const SVG = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
// The secret the relay and the remote service share (RELAY_SECRET).
const SECRET = "a-test-secret-of-the-relay-0123456789";
const AVATAR = pngHeader(64, 64);
const IMAGE = pngHeader(640, 480);
const base64 = (bytes: Buffer) => bytes.toString("base64");

async function startRelay() {
  const remote = new RemoteService(SECRET);
  await remote.start();
  onTestFinished(() => remote.stop());
  const started = await startWithHomeserver({
    application: createRelay({ remoteUrl: remote.url }),
    remoteSecret: SECRET,
    remoteServiceUrl: remote.url,
  });
  const urlOf = (channel: string) => `${started.local.url}/relay/${channel}/messages`;
  /** The remote service's post, signed as it must be. */
  const post = (channel: string, message: Record<string, unknown>) =>
    signedPost(urlOf(channel), SECRET, message);
  const portalOf = (channel: string) =>
    started.homeserver.aliases.get(`#_relay_${channel}:${SERVER}`) as string;
  /** Another of the remote service's requests, `path` under `/relay/{channel}`, signed. */
  const request = (
    method: "POST" | "PUT" | "DELETE",
    channel: string,
    path: string,
    message: Record<string, unknown>,
  ) => signedRequest(method, `${started.local.url}/relay/${channel}${path}`, SECRET, message);
  return { ...started, remote, post, urlOf, portalOf, request };
}

const hello = {
  id: "m1",
  user: "alice",
  display_name: "Alice",
  text: "hello",
  avatar: { content_type: "image/png", data: base64(AVATAR) },
};

describe("relay: remote → Matrix", () => {
  it("the first message makes the portal and the puppet (name, avatar uploaded once, joined) and sends as it; the same id again sends nothing", async () => {
    const { local, homeserver, post, portalOf } = await startRelay();
    expect((await post("general", hello)).status).toBe(202);
    expect((await post("general", hello)).status).toBe(202);
    const picture = {
      ...hello,
      id: "m2",
      text: "",
      // Typed by its bytes (a PNG), not by what the sender says.
      image: { content_type: "image/jpeg", data: base64(IMAGE), filename: "cat.png" },
    };
    expect((await post("general", picture)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 2);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.createdRooms).toHaveLength(1);
    expect(homeserver.createdRooms[0]?.body).toMatchObject({
      name: "general",
      room_alias_name: "_relay_general",
    });
    const roomId = portalOf("general");
    expect(homeserver.rooms.get(roomId)?.has(ALICE)).toBe(true);
    const avatarIds = [...homeserver.media].filter(([, m]) => m.bytes?.equals(AVATAR));
    expect(avatarIds).toHaveLength(1);
    expect(homeserver.profiles.get(ALICE)).toMatchObject({
      displayname: "Alice",
      avatar_url: `mxc://${SERVER}/${avatarIds[0]?.[0]}`,
    });
    const imageId = [...homeserver.media].find(([, m]) => m.bytes?.equals(IMAGE))?.[0];
    expect(
      homeserver.sent.map(({ roomId: room, sender, content }) => ({ room, sender, content })),
    ).toEqual([
      { room: roomId, sender: ALICE, content: { msgtype: "m.text", body: "hello" } },
      {
        room: roomId,
        sender: ALICE,
        content: {
          msgtype: "m.image",
          body: "cat.png",
          filename: "cat.png",
          url: `mxc://${SERVER}/${imageId}`,
          info: { mimetype: "image/png", size: IMAGE.length, w: 640, h: 480 },
        },
      },
    ]);
  });

  it("the answer to the room's creation lost (the room made, not recorded) → retried, one room; a bad message → 400, nothing made", async () => {
    const { local, homeserver, post, portalOf } = await startRelay();
    homeserver.cue((r) => r.path.endsWith("/createRoom"), { loseAnswer: true });
    expect((await post("lost", { ...hello, id: "x1" })).status).toBe(202);
    expect((await post("lost", { ...hello, id: "x2", text: "again" })).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 2);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.createdRooms).toHaveLength(1);
    // The first creation's answer lost (no status), the repeat told the alias is taken.
    const creations = homeserver.requests.filter((r) => r.path.endsWith("/createRoom"));
    expect(creations.map((r) => r.status)).toEqual([undefined, 400]);
    expect(homeserver.sent.map((e) => [e.roomId, e.content.body])).toEqual([
      [portalOf("lost"), "hello"],
      [portalOf("lost"), "again"],
    ]);
    const bad = await post("lost", { id: "x3", user: "Not A Name", display_name: "", text: "" });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({
      errcode: "M_BAD_JSON",
      error: "user must be 1 to 64 of a-z, 0-9, '.', '_', '=', '-'",
    });
    expect((await post("Bad Channel", hello)).status).toBe(400);
    expect(homeserver.createdRooms).toHaveLength(1);
  });
});

describe("relay: edits, replies, reactions, deletions, typing and remote times (issue 27)", () => {
  it("remote → Matrix: each once however often it is posted; an edit, reply and reaction posted before their message's event ID is known wait for it", async () => {
    const { local, homeserver, post, portalOf, request } = await startRelay();
    // The first send fails once: its event ID comes a backoff later.
    homeserver.cue((r) => r.path.includes("/send/m.room.message/"), {
      status: 502,
      body: { errcode: "M_UNKNOWN", error: "down" },
    });
    const TS = 1_700_000_000_000;
    const expectAccepted = async (responses: Promise<Response>[]) => {
      for (const response of await Promise.all(responses)) expect(response.status).toBe(202);
    };
    await expectAccepted([post("general", { ...hello, ts: TS })]);
    const reply = { id: "m2", user: "bob", text: "hi alice", reply_to: "m1" };
    const reaction = { id: "r1", user: "bob", message_id: "m1", key: "👍" };
    // Each twice, at once: the remote service retrying a request whose answer it lost.
    await expectAccepted([
      request("PUT", "general", "/messages/m1", { user: "alice", text: "hello, world" }),
      request("PUT", "general", "/messages/m1", { user: "alice", text: "hello, world" }),
      post("general", reply),
      post("general", reply),
      request("POST", "general", "/reactions", reaction),
      request("POST", "general", "/reactions", reaction),
    ]);
    await waitFor(() => homeserver.sent.length >= 4);
    await expectAccepted([
      request("DELETE", "general", "/reactions/r1", {}),
      request("DELETE", "general", "/reactions/r1", {}),
      request("DELETE", "general", "/messages/m2", { user: "bob" }),
      request("DELETE", "general", "/messages/m2", { user: "bob" }),
      request("POST", "general", "/typing", { user: "bob", typing: true }),
    ]);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const roomId = portalOf("general");
    // The message first; then what named it, in the order their requests were handled.
    const [message, ...after] = homeserver.sent;
    const by = (sender: string, type: string, relation: string) =>
      after.find(
        (e) =>
          e.sender === sender && e.type === type && JSON.stringify(e.content).includes(relation),
      );
    const edit = by(ALICE, "m.room.message", "m.replace");
    const answer = by(BOB_PUPPET, "m.room.message", "m.in_reply_to");
    const thumbs = by(BOB_PUPPET, "m.reaction", "m.annotation");
    expect(homeserver.sent).toHaveLength(4);
    expect(message?.sender).toBe(ALICE);
    expect(message?.content).toEqual({ msgtype: "m.text", body: "hello" });
    expect(edit?.content).toEqual({
      msgtype: "m.text",
      body: "* hello, world",
      "m.new_content": { msgtype: "m.text", body: "hello, world", "m.mentions": {} },
      "m.mentions": {},
      "m.relates_to": { rel_type: "m.replace", event_id: message?.eventId },
    });
    expect(answer?.content).toEqual({
      msgtype: "m.text",
      body: "hi alice",
      "m.mentions": { user_ids: [ALICE] },
      "m.relates_to": { "m.in_reply_to": { event_id: message?.eventId } },
    });
    expect(thumbs?.content).toEqual({
      "m.relates_to": { rel_type: "m.annotation", event_id: message?.eventId, key: "👍" },
    });
    // The remote time on the message's send (both attempts: the same request).
    const sends = homeserver.requests.filter((r) => r.path.includes("/send/m.room.message/"));
    expect(sends[0]?.query.ts).toBe(String(TS));
    expect(sends.at(-1)?.query.ts).toBeUndefined();
    // The reaction taken back and the reply deleted, each by its puppet, once.
    const redactions = homeserver.requests.filter((r) => r.path.includes("/redact/"));
    expect(
      redactions.map((r) => [r.query.user_id, decodeURIComponent(r.path.split("/")[7] ?? "")]),
    ).toEqual([
      [BOB_PUPPET, thumbs?.eventId],
      [BOB_PUPPET, answer?.eventId],
    ]);
    const typing = homeserver.requests.filter((r) => r.path.includes("/typing/"));
    expect(typing.map((r) => [r.path, r.body])).toEqual([
      [
        `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/typing/${encodeURIComponent(BOB_PUPPET)}`,
        { typing: true, timeout: 30_000 },
      ],
    ]);
    // The portal announces itself as one (MSC2346).
    expect(homeserver.createdRooms[0]?.body.initial_state).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          type: "m.bridge",
          content: expect.objectContaining({
            bridgebot: expect.any(String),
            channel: { id: "general", displayname: "general" },
          }),
        }),
      ]),
    );
    // Nothing more for a message never posted, nor for an edit by another user.
    const unknown = await request("PUT", "general", "/messages/nope", { user: "alice", text: "x" });
    expect(unknown.status).toBe(404);
    const foreign = await request("PUT", "general", "/messages/m1", { user: "bob", text: "mine" });
    expect(foreign.status).toBe(403);
    // A deletion or a reaction's removal repeated later: accepted, nothing more done.
    await expectAccepted([
      request("DELETE", "general", "/messages/m2", { user: "bob" }),
      request("DELETE", "general", "/reactions/r1", {}),
    ]);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.requests.filter((r) => r.path.includes("/redact/"))).toHaveLength(2);
    expect(homeserver.sent).toHaveLength(4);
  });

  it("Matrix → remote: a reply, an edit, a reaction, its removal, a redaction and typing are delivered once each, in order; the puppets' are not", async () => {
    const { local, homeserver, post, portalOf, remote, registration } = await startRelay();
    expect((await post("general", hello)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const roomId = portalOf("general");
    const puppetMessage = homeserver.sent[0]?.eventId as string;
    homeserver.rooms.get(roomId)?.add(BOB);
    const question = makeEvent(roomId, "> <@_relay_alice:test.local> hello\n\nhow are you?", {
      sender: BOB,
      content: {
        msgtype: "m.text",
        body: "> <@_relay_alice:test.local> hello\n\nhow are you?",
        "m.relates_to": { "m.in_reply_to": { event_id: puppetMessage } },
      },
    });
    const edit = makeEvent(roomId, "* how are you, Alice?", {
      sender: BOB,
      content: {
        msgtype: "m.text",
        body: "* how are you, Alice?",
        "m.new_content": { msgtype: "m.text", body: "how are you, Alice?" },
        "m.relates_to": { rel_type: "m.replace", event_id: question.event_id },
      },
    });
    const reaction = makeEvent(roomId, "", {
      sender: BOB,
      type: "m.reaction",
      content: { "m.relates_to": { rel_type: "m.annotation", event_id: puppetMessage, key: "❤️" } },
    });
    const unreaction = makeEvent(roomId, "", {
      sender: BOB,
      type: "m.room.redaction",
      content: { redacts: reaction.event_id },
    });
    const deletion = makeEvent(roomId, "", {
      sender: BOB,
      type: "m.room.redaction",
      content: { redacts: question.event_id },
    });
    const puppetReaction = makeEvent(roomId, "", {
      sender: ALICE,
      type: "m.reaction",
      content: {
        "m.relates_to": { rel_type: "m.annotation", event_id: question.event_id, key: "👍" },
      },
    });
    const events = [question, edit, reaction, puppetReaction, unreaction, deletion];
    const typing = (userIds: string[]) => ({
      type: "m.typing",
      room_id: roomId,
      content: { user_ids: userIds },
    });
    const transaction = {
      events,
      ephemeral: [typing([BOB, ALICE]), typing([BOB]), typing([ALICE]), typing([])],
    };
    // The homeserver sends the transaction twice (a retry after a lost answer).
    for (let i = 0; i < 2; i++) {
      const answer = await putTransaction(local.url, "t1", transaction, {
        token: registration.hs_token,
      });
      expect(answer.status).toBe(200);
    }
    await waitFor(() => remote.requests.length >= 7);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const general = "/channels/general";
    expect(remote.requests.map((r) => [r.method, r.path, JSON.parse(r.body || "null")])).toEqual([
      [
        "POST",
        `${general}/messages`,
        {
          id: question.event_id,
          sender: BOB,
          display_name: BOB,
          text: "how are you?",
          reply_to: "m1",
        },
      ],
      [
        "PUT",
        `${general}/messages/${encodeURIComponent(question.event_id)}`,
        { sender: BOB, text: "how are you, Alice?" },
      ],
      [
        "POST",
        `${general}/reactions`,
        { id: reaction.event_id, sender: BOB, message_id: "m1", key: "❤️" },
      ],
      ["DELETE", `${general}/reactions/${encodeURIComponent(reaction.event_id)}`, null],
      ["DELETE", `${general}/messages/${encodeURIComponent(question.event_id)}`, null],
      // Typing: the Matrix users typing, when that changes (never the puppets).
      ["POST", `${general}/typing`, { user_ids: [BOB] }],
      ["POST", `${general}/typing`, { user_ids: [] }],
    ]);
    expect(remote.requests.every((r) => r.signed)).toBe(true);
  });
});

describe("relay: Matrix → remote", () => {
  it("a Matrix user's text and image in the portal are delivered once each, in order, with an Idempotency-Key; the puppets' and the bot's are not; !relay invite invites", async () => {
    const { local, homeserver, post, portalOf, remote, send, bot } = await startRelay();
    expect((await post("general", hello)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 1);
    const roomId = portalOf("general");
    // !relay invite, in a room with the bot.
    homeserver.createRoom("!dm:test.local", [bot, BOB]);
    await send("t1", [makeEvent("!dm:test.local", "!relay invite general", { sender: BOB })]);
    // Bob's invite (the puppets are invited too, before they join).
    const invitesBob = (r: { path: string; body: unknown }) =>
      r.path.endsWith("/invite") && (r.body as { user_id?: string }).user_id === BOB;
    await waitFor(() => homeserver.requests.some(invitesBob));
    const invite = homeserver.requests.find(invitesBob);
    expect(invite?.path).toBe(`/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/invite`);
    expect(invite?.body).toMatchObject({ user_id: BOB });
    // Bob in the portal, with his name there.
    homeserver.rooms.get(roomId)?.add(BOB);
    homeserver.setState(
      roomId,
      "m.room.member",
      BOB,
      { membership: "join", displayname: "Bob" },
      BOB,
    );
    homeserver.media.set("cat", { creator: BOB, bytes: IMAGE, contentType: "image/jpeg" });
    homeserver.media.set("svg", { creator: BOB, bytes: SVG, contentType: "image/png" });
    const events = [
      makeEvent(roomId, "hi alice", { sender: BOB }),
      makeEvent(roomId, "from the remote side", { sender: ALICE }),
      makeEvent(roomId, "a notice", { sender: bot }),
      makeEvent(roomId, "cat.jpg", {
        sender: BOB,
        content: { msgtype: "m.image", body: "cat.jpg", url: `mxc://${SERVER}/cat` },
      }),
      // An SVG its sender calls an image: no image by its bytes, so its text alone.
      makeEvent(roomId, "logo.png", {
        sender: BOB,
        content: { msgtype: "m.image", body: "logo.png", url: `mxc://${SERVER}/svg` },
      }),
    ];
    await send("t2", events);
    const [text, , , cat, logo] = events.map((e) => e.event_id);
    await waitFor(() => remote.requests.length >= 3);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(remote.requests.map((r) => r.path)).toEqual([
      "/channels/general/messages",
      "/channels/general/messages",
      "/channels/general/messages",
    ]);
    expect(remote.bodies("/channels/general/messages")).toEqual([
      { id: text, sender: BOB, display_name: "Bob", text: "hi alice" },
      {
        id: cat,
        sender: BOB,
        display_name: "Bob",
        text: "",
        image: { content_type: "image/png", data: base64(IMAGE) },
      },
      { id: logo, sender: BOB, display_name: "Bob", text: "logo.png" },
    ]);
    // Each signed with the shared secret, as the remote service checks.
    expect(remote.requests.map((r) => r.signed)).toEqual([true, true, true]);
    const keys = remote.requests.map((r) => r.headers["idempotency-key"]);
    expect(new Set(keys).size).toBe(3);
    for (const key of keys) expect(key).toMatch(/^[0-9a-f]{64}$/);
  });

  it("the remote service down until each delivery was refused past the backoff's cap → every delivery arrives once, in order", async () => {
    const { local, homeserver, post, portalOf, remote, send } = await startRelay();
    expect((await post("general", hello)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 1);
    const roomId = portalOf("general");
    homeserver.rooms.get(roomId)?.add(BOB);
    await remote.stop();
    const texts = Array.from({ length: 5 }, (_, i) => `message ${i + 1}`);
    for (const [i, text] of texts.entries()) {
      await send(`down${i}`, [makeEvent(roomId, text, { sender: BOB })]);
    }
    // The first delivery refused three times: 1 s, then 2 s twice (the test's cap), so the
    // outage outlasted the backoff's growth; the others wait behind it in their group.
    await waitFor(() => (local.metrics.counts.get("OutboundCallsRetried") ?? 0) >= 3, 60_000);
    expect(remote.requests).toHaveLength(0);
    const back = Math.floor(Date.now() / 1000);
    await remote.start();
    await waitFor(() => remote.requests.length >= 5, 60_000);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    // Signed when sent, not when queued: a retry after a long outage is still fresh.
    for (const request of remote.requests) {
      expect(request.signed).toBe(true);
      expect(Number(request.headers["webhook-timestamp"])).toBeGreaterThanOrEqual(back);
    }
    expect(
      remote.bodies("/channels/general/messages").map((b) => (b as { text: string }).text),
    ).toEqual(texts);
    expect(new Set(remote.requests.map((r) => r.headers["idempotency-key"])).size).toBe(5);
  });
});

describe("relay: what the remote side may send (issue 23)", () => {
  it("unsigned, stale, future, foreign-secret, tampered or malformed signatures → 401 M_UNKNOWN_TOKEN, nothing created; the signed request → 202", async () => {
    const { homeserver, urlOf, local } = await startRelay();
    // An attacker posting as a puppet of their choice, as the open route let anyone.
    const admin = { id: "a1", user: "admin", display_name: "Server Admin", text: "hi" };
    const body = JSON.stringify(admin);
    const now = Date.now();
    const valid = signatureHeaders(SECRET, "a1", body, now);
    const standard = signatureSet(valid, "standard");
    const legacy = signatureSet(valid, "legacy");
    const timestamp = `${valid["webhook-timestamp"]}.0`;
    const attempts: [string, Promise<Response>][] = [
      ["unsigned", fetch(urlOf("general"), { method: "POST", body })],
      ["another secret", signedPost(urlOf("general"), `${SECRET}x`, admin)],
      ["6 minutes old", signedPost(urlOf("general"), SECRET, admin, now - 360_000)],
      ["6 minutes ahead", signedPost(urlOf("general"), SECRET, admin, now + 360_000)],
      [
        "another body under a valid signature",
        fetch(urlOf("general"), {
          method: "POST",
          headers: valid,
          body: JSON.stringify({ ...admin, text: "pwned" }),
        }),
      ],
      [
        "the signature without v1,",
        fetch(urlOf("general"), {
          method: "POST",
          headers: {
            ...standard,
            "webhook-signature": `${standard["webhook-signature"]?.slice(3)}`,
          },
          body,
        }),
      ],
      [
        "the older signature without sha256=",
        fetch(urlOf("general"), {
          method: "POST",
          headers: { ...legacy, "x-relay-signature": `${legacy["x-relay-signature"]?.slice(7)}` },
          body,
        }),
      ],
      [
        "a timestamp that is no number",
        fetch(urlOf("general"), {
          method: "POST",
          headers: { ...valid, "webhook-timestamp": timestamp, "x-relay-timestamp": timestamp },
          body,
        }),
      ],
    ];
    for (const [why, attempt] of attempts) {
      const response = await attempt;
      expect({ why, status: response.status, body: await response.json() }).toEqual({
        why,
        status: 401,
        body: { errcode: "M_UNKNOWN_TOKEN", error: expect.any(String) },
      });
    }
    // Nothing asked of the homeserver: no room, no puppet, no message.
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.requests).toHaveLength(0);
    // The same message signed with the secret goes through, signed with the older headers only
    // (a remote service not yet updated) or with the standard's only (its repeat: sends nothing).
    for (const headers of [legacy, standard]) {
      const response = await fetch(urlOf("general"), { method: "POST", headers, body });
      expect(response.status).toBe(202);
      await waitFor(() => homeserver.sent.length >= 1);
    }
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.createdRooms).toHaveLength(1);
    expect(homeserver.sent.map((e) => e.content.body)).toEqual(["hi"]);
  });

  it("NUL and lone surrogates leave the text and the name; a 100,000-character display name is cut to 256", async () => {
    const { local, homeserver, post } = await startRelay();
    const message = {
      id: "n1",
      user: "alice",
      display_name: `Server\u0000 Admin\u202e${"x".repeat(100_000)}`,
      text: "hi\u0000 there\ud800!",
    };
    expect((await post("general", message)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent[0]?.content).toEqual({ msgtype: "m.text", body: "hi there\uFFFD!" });
    const name = homeserver.profiles.get(ALICE)?.displayname as string;
    expect(Array.from(name)).toHaveLength(256);
    expect(name.startsWith("Server Admin x")).toBe(true);
    // A name of nothing but controls: the user's own.
    expect(
      (await post("general", { ...message, id: "n2", user: "bob", display_name: "\u0000\u202e" }))
        .status,
    ).toBe(202);
    await waitFor(() => homeserver.sent.length >= 2);
    expect(homeserver.profiles.get(`@_relay_bob:${SERVER}`)?.displayname).toBe("bob");
  });

  it("an SVG called image/png → an m.file uploaded as application/octet-stream, never an m.image; an SVG avatar → 400, nothing created", async () => {
    const { local, homeserver, post } = await startRelay();
    const svgAvatar = {
      ...hello,
      id: "s0",
      avatar: { content_type: "image/png", data: base64(SVG) },
    };
    const refused = await post("general", svgAvatar);
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({
      errcode: "M_BAD_JSON",
      error: "avatar must be a PNG, GIF, JPEG or WebP image",
    });
    expect(homeserver.requests).toHaveLength(0);
    const svg = {
      id: "s1",
      user: "alice",
      display_name: "Alice",
      text: "",
      image: { content_type: "image/png", data: base64(SVG), filename: "logo\u0000.svg" },
    };
    expect((await post("general", svg)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    const [id, media] = [...homeserver.media].find(([, m]) => m.bytes?.equals(SVG)) ?? [];
    expect(media?.contentType).toBe("application/octet-stream");
    expect(homeserver.sent.map((e) => e.content)).toEqual([
      {
        msgtype: "m.file",
        body: "logo .svg",
        filename: "logo .svg",
        url: `mxc://${SERVER}/${id}`,
        info: { mimetype: "application/octet-stream", size: SVG.length },
      },
    ]);
  });

  it("one channel past its burst (20) → 429 M_LIMIT_EXCEEDED with retry_after_ms, nothing more sent; another channel goes on", async () => {
    const { local, homeserver, post } = await startRelay();
    // The same message each time (one Matrix message), one after the other until refused: the
    // burst is granted, and at most a token a second more while they run.
    const started = Date.now();
    let granted = 0;
    let refusedAt: Response | undefined;
    while (!refusedAt && granted < 60) {
      const response = await post("busy", hello);
      if (response.status === 202) granted++;
      else refusedAt = response;
    }
    const refill = Math.ceil((Date.now() - started) / 1000);
    expect(granted).toBeGreaterThanOrEqual(20);
    expect(granted).toBeLessThanOrEqual(20 + refill);
    expect(refusedAt?.status).toBe(429);
    const refused = [refusedAt as Response];
    for (const response of refused) {
      const body = (await response.json()) as Record<string, unknown>;
      expect(body).toEqual({
        errcode: "M_LIMIT_EXCEEDED",
        error: "Too many messages in this channel",
        retry_after_ms: expect.any(Number),
      });
      expect(body.retry_after_ms).toBeGreaterThan(0);
      expect(body.retry_after_ms).toBeLessThanOrEqual(1000);
      expect(Number(response.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    }
    expect((await post("quiet", { ...hello, id: "q1" })).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 2);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent.map((e) => e.content.body)).toEqual(["hello", "hello"]);
  });

  it("new portals capped at 10 a minute: past them a new channel → 429, no room made; existing channels go on", async () => {
    const { local, homeserver, post } = await startRelay();
    const started = Date.now();
    const responses = await Promise.all(
      Array.from({ length: 14 }, (_, i) => post(`c${i}`, { ...hello, id: `p${i}` })),
    );
    // A token every 6 s while they run.
    const refill = Math.ceil((Date.now() - started) / 6000);
    const granted = responses.flatMap((r, i) => (r.status === 202 ? [`c${i}`] : []));
    const refused = responses.filter((r) => r.status === 429);
    expect(granted.length).toBeGreaterThanOrEqual(10);
    expect(granted.length).toBeLessThanOrEqual(10 + refill);
    expect(refused.length).toBe(14 - granted.length);
    expect(refused.length).toBeGreaterThan(0);
    for (const response of refused) {
      const body = (await response.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ errcode: "M_LIMIT_EXCEEDED", error: "Too many new channels" });
      expect(body.retry_after_ms).toBeGreaterThan(0);
      expect(body.retry_after_ms).toBeLessThanOrEqual(6000);
    }
    await waitFor(() => homeserver.sent.length >= granted.length);
    expect((await post(granted[0] as string, { ...hello, id: "again" })).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= granted.length + 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.createdRooms).toHaveLength(granted.length);
    // Refused by the portal cap, a new channel spends none of its own tokens: past its burst
    // (20), still the cap's answer, never "Too many messages in this channel".
    const answers: string[] = [];
    for (let i = 0; i < 25; i++) {
      const response = await post("late", { ...hello, id: `late${i}` });
      // A new-portal token came back meanwhile: the channel is made, nothing more to see.
      if (response.status === 202) break;
      answers.push(((await response.json()) as { error: string }).error);
    }
    expect(answers.filter((error) => error !== "Too many new channels")).toEqual([]);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
  });
});
