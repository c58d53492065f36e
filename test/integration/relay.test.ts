import { describe, expect, it, onTestFinished } from "vitest";
import { createRelay } from "../../functions/relay/index.ts";
import { makeEvent, NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { RemoteService } from "../support/remote-service.ts";
import { SERVER, startWithHomeserver } from "../support/with-homeserver.ts";

// The relay bridge end to end in local mode (DynamoDB Local, fauxqs, the scripted homeserver):
// this test plays the remote chat service, on both of its sides.

const ALICE = `@_relay_alice:${SERVER}`;
const BOB = `@bob:${SERVER}`;
const AVATAR = Buffer.from("avatar png bytes");
const IMAGE = Buffer.from("a picture of a cat");
const base64 = (bytes: Buffer) => bytes.toString("base64");

async function startRelay() {
  const remote = new RemoteService();
  await remote.start();
  onTestFinished(() => remote.stop());
  const started = await startWithHomeserver({
    application: createRelay({ remoteUrl: remote.url }),
  });
  const post = (channel: string, message: Record<string, unknown>) =>
    fetch(`${started.local.url}/relay/${channel}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(message),
    });
  const portalOf = (channel: string) =>
    started.homeserver.aliases.get(`#_relay_${channel}:${SERVER}`) as string;
  return { ...started, remote, post, portalOf };
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
      image: { content_type: "image/jpeg", data: base64(IMAGE) },
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
          body: "image",
          url: `mxc://${SERVER}/${imageId}`,
          info: { mimetype: "image/jpeg", size: IMAGE.length },
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

describe("relay: Matrix → remote", () => {
  it("a Matrix user's text and image in the portal are delivered once each, in order, with an Idempotency-Key; the puppets' and the bot's are not; !relay invite invites", async () => {
    const { local, homeserver, post, portalOf, remote, send, bot } = await startRelay();
    expect((await post("general", hello)).status).toBe(202);
    await waitFor(() => homeserver.sent.length >= 1);
    const roomId = portalOf("general");
    // !relay invite, in a room with the bot.
    homeserver.createRoom("!dm:test.local", [bot, BOB]);
    await send("t1", [makeEvent("!dm:test.local", "!relay invite general", { sender: BOB })]);
    await waitFor(() => homeserver.requests.some((r) => r.path.endsWith("/invite")));
    const invite = homeserver.requests.find((r) => r.path.endsWith("/invite"));
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
    await send("t2", [
      makeEvent(roomId, "hi alice", { sender: BOB }),
      makeEvent(roomId, "from the remote side", { sender: ALICE }),
      makeEvent(roomId, "a notice", { sender: bot }),
      makeEvent(roomId, "cat.jpg", {
        sender: BOB,
        content: { msgtype: "m.image", body: "cat.jpg", url: `mxc://${SERVER}/cat` },
      }),
    ]);
    await waitFor(() => remote.requests.length >= 2);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(remote.requests.map((r) => r.path)).toEqual([
      "/channels/general/messages",
      "/channels/general/messages",
    ]);
    expect(remote.bodies("/channels/general/messages")).toEqual([
      { sender: BOB, display_name: "Bob", text: "hi alice" },
      {
        sender: BOB,
        display_name: "Bob",
        text: "",
        image: { content_type: "image/jpeg", data: base64(IMAGE) },
      },
    ]);
    const keys = remote.requests.map((r) => r.headers["idempotency-key"]);
    expect(new Set(keys).size).toBe(2);
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
    await remote.start();
    await waitFor(() => remote.requests.length >= 5, 60_000);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(
      remote.bodies("/channels/general/messages").map((b) => (b as { text: string }).text),
    ).toEqual(texts);
    expect(new Set(remote.requests.map((r) => r.headers["idempotency-key"])).size).toBe(5);
  });
});
