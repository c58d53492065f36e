import { execFile } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { application } from "../../functions/applications/webhooks/index.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { putTransaction, tempDir } from "../support/appservice.ts";
import type { ScriptedHomeserver } from "../support/homeserver.ts";
import { pngHeader } from "../support/images.ts";
import { type NpmStart, startNpmFor, stopAllNpmStarts } from "../support/npm-start.ts";
import { newWebhook } from "../support/webhooks.ts";
import { homeserverWithRegistration } from "../support/with-homeserver.ts";

const SERVER = "test.local";
const ROOM = `!hooks-npm:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;
const BOT = `@bot:${SERVER}`;

/**
 * The webhooks as the README runs them: `npm start` (its gateway, handlers and queues in child
 * processes of its own) against the scripted homeserver, an image posted with `curl -F` as a
 * multipart form, and `?wait=true`.
 */
describe("webhooks through npm start: an image upload and ?wait=true", () => {
  let npm: NpmStart;
  let homeserver: ScriptedHomeserver;
  let started: Parameters<typeof newWebhook>[0];

  beforeAll(async () => {
    const withRegistration = await homeserverWithRegistration({
      id: "webhooks-npm",
      userPrefixes: application.userPrefixes,
    });
    ({ homeserver } = withRegistration);
    const { registration } = withRegistration;
    homeserver.createRoom(ROOM, [MODERATOR, BOT]);
    homeserver.setState(ROOM, "m.room.power_levels", "", { users: { [MODERATOR]: 50 } });
    npm = await startNpmFor(withRegistration);
    started = {
      homeserver,
      bot: BOT,
      local: { url: npm.url },
      send: (txnId: string, events: ClientEvent[]) =>
        putTransaction(npm.url, txnId, { events }, { token: registration.hs_token }),
    };
  }, 120_000);
  afterAll(async () => {
    await stopAllNpmStarts("SIGTERM");
    await homeserver?.stop();
  });

  it("curl -F file=@shot.png ?wait=true: one upload, one m.image with its mxc:// URI and size, answered with the event IDs once in the room", async () => {
    const { url } = await newWebhook(started, "shots", MODERATOR, ROOM);
    const png = Buffer.concat([pngHeader(640, 480), Buffer.from("the rest of a screenshot")]);
    const shot = join(await tempDir(), "shot.png");
    writeFileSync(shot, png);
    const isUpload = (r: { path: string }) => r.path.startsWith("/_matrix/media/v3/upload");
    const uploadsBefore = homeserver.requests.filter(isUpload).length;

    const curl = await new Promise<string>((resolve, reject) =>
      execFile(
        "curl",
        ["-sS", "-X", "POST", `${url}?wait=true`, "-F", "text=Nightly", "-F", `file=@${shot}`],
        (error, stdout) => (error ? reject(error) : resolve(stdout)),
      ),
    );
    const answer = JSON.parse(curl) as { event_id: string; event_ids: string[] };

    const hookUser = /^@_webhook_[0-9a-f]{12}_shots:test\.local$/;
    const posted = homeserver.sent.filter((e) => e.roomId === ROOM && hookUser.test(e.sender));
    expect(posted.map((e) => e.content.msgtype)).toEqual(["m.text", "m.image"]);
    expect(answer).toEqual({
      event_id: posted[0]?.eventId,
      event_ids: posted.map((e) => e.eventId),
    });
    const image = posted[1]?.content as Record<string, unknown>;
    expect(image).toEqual({
      msgtype: "m.image",
      body: "shot.png",
      filename: "shot.png",
      url: expect.stringMatching(/^mxc:\/\/test\.local\/[A-Za-z0-9_-]+$/),
      info: { mimetype: "image/png", size: png.length, w: 640, h: 480 },
    });
    expect(homeserver.requests.filter(isUpload).length - uploadsBefore).toBe(1);
    const mediaId = String(image.url).split("/").at(-1) as string;
    expect(homeserver.media.get(mediaId)).toMatchObject({ bytes: png, contentType: "image/png" });
  });
});
