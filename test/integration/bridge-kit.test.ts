import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { Application } from "../../functions/appservice/api.ts";
import { makeEvent, NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { SERVER, startWithHomeserver } from "../support/with-homeserver.ts";

/**
 * A bridge in miniature, written against the application API alone: a remote message posted to
 * its route finds or makes its channel's portal, readies its author's puppet (avatar uploaded
 * once), and is sent as that puppet; `!portal <channel>` in a room answers with the portal.
 */
const bridge: Application = {
  userPrefixes: ["_mini_"],
  aliasPrefixes: ["_mini_"],
  routes: [
    {
      method: "POST",
      path: "/mini/{channel}",
      async handle(request, { homeserver, portals, puppets, actions }) {
        const { channel } = request.pathParameters as { channel: string };
        const message = JSON.parse(request.body) as { user: string; text: string; avatar: string };
        const portal =
          (await portals.byRemoteId(channel)) ??
          (await portals.link(
            channel,
            await homeserver.createRoom(`channel:${channel}`, {
              alias: `_mini_${channel}`,
              name: channel,
            }),
          ));
        const userId = `@_mini_${message.user}:${SERVER}`;
        await puppets.link(message.user, userId);
        await homeserver.ensurePuppet(userId, {
          displayName: message.user,
          avatarUrl: await homeserver.uploadMedia(Buffer.from(message.avatar, "base64"), {
            contentType: "image/png",
          }),
          roomId: portal.matrixId,
        });
        await actions.sendMessage(portal.matrixId, message.text, { as: userId });
        return { status: 202, body: {} };
      },
    },
  ],
  async onEvent(event, { homeserver, portals, actions }) {
    const body = String(event.content.body ?? "");
    if (event.type !== "m.room.message" || !body.startsWith("!portal ")) return;
    const channel = body.slice("!portal ".length);
    const roomId = await homeserver.createRoom(`channel:${channel}`, {
      alias: `_mini_${channel}`,
      name: channel,
    });
    const { matrixId } = await portals.link(channel, roomId);
    await actions.sendNotice(event.room_id, `${channel}: ${matrixId}`);
  },
};

describe("the bridge kit through local mode (events and app functions, DynamoDB Local, fauxqs)", () => {
  it("racing remote messages make one portal and one avatar upload; the room's event finds the same portal", async () => {
    const { local, homeserver, send, bot } = await startWithHomeserver({ application: bridge });
    const avatar = randomBytes(200).toString("base64");
    const post = (user: string, text: string) =>
      fetch(`${local.url}/mini/general`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user, text, avatar }),
      });
    const answers = await Promise.all([
      post("alice", "one"),
      post("bob", "two"),
      post("alice", "three"),
    ]);
    expect(answers.map((a) => a.status)).toEqual([202, 202, 202]);
    await waitFor(() => homeserver.sent.length >= 3);

    expect(homeserver.createdRooms).toHaveLength(1);
    const portal = homeserver.createdRooms[0]?.roomId as string;
    expect(homeserver.aliases.get(`#_mini_general:${SERVER}`)).toBe(portal);
    expect(homeserver.sent.map((e) => [e.roomId, e.sender, e.content.body]).sort()).toEqual([
      [portal, `@_mini_alice:${SERVER}`, "one"],
      [portal, `@_mini_alice:${SERVER}`, "three"],
      [portal, `@_mini_bob:${SERVER}`, "two"],
    ]);
    // The same bytes, one upload (the racers' other created URIs stay unused, and expire); both
    // puppets wear it, and joined (through the bot's invite).
    const uploaded = [...homeserver.media].filter(([, media]) => media.bytes);
    expect(uploaded).toHaveLength(1);
    const [[mediaId]] = uploaded as [[string, unknown]];
    for (const user of ["alice", "bob"]) {
      expect(homeserver.profiles.get(`@_mini_${user}:${SERVER}`)).toEqual({
        displayname: user,
        avatar_url: `mxc://${SERVER}/${mediaId}`,
      });
      expect(homeserver.rooms.get(portal)?.has(`@_mini_${user}:${SERVER}`)).toBe(true);
    }

    const room = `!control:${SERVER}`;
    homeserver.createRoom(room, [bot, `@alice:${SERVER}`]);
    const ask = makeEvent(room, "!portal general");
    expect((await send("t1", [ask])).status).toBe(200);
    await waitFor(() => homeserver.sent.some((e) => e.roomId === room));
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent.filter((e) => e.roomId === room).map((e) => e.content.body)).toEqual([
      `general: ${portal}`,
    ]);
    expect(homeserver.createdRooms).toHaveLength(1);
  });
});
