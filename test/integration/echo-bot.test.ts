import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { application as echoBot } from "../../functions/applications/echo-bot/index.ts";
import { makeEvent, NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { SERVER, startWithHomeserver } from "../support/with-homeserver.ts";

const root = join(import.meta.dirname, "../..");

describe("the docs' echo bot, run in place of the shipped application", () => {
  it("is docs/writing-an-application.md's example, word for word", () => {
    const readme = readFileSync(join(root, "docs/writing-an-application.md"), "utf8");
    const example = /<!-- echo-bot:start -->\n```ts\n([\s\S]*?)```\n<!-- echo-bot:end -->/.exec(
      readme,
    )?.[1];
    expect(example).toBe(
      readFileSync(join(root, "functions/applications/echo-bot/index.ts"), "utf8"),
    );
  });

  it("joins when invited, echoes text messages once, and serves its own route", async () => {
    const { homeserver, send, bot, local } = await startWithHomeserver({ application: echoBot });
    const room = `!echo:${SERVER}`;
    homeserver.createRoom(room, [`@alice:${SERVER}`]);
    const invite = makeEvent(room, "", {
      type: "m.room.member",
      state_key: bot,
      content: { membership: "invite" },
    });
    expect((await send("invite", [invite])).status).toBe(200);
    await waitFor(() => homeserver.rooms.get(room)?.has(bot) === true);

    const hello = makeEvent(room, "hello");
    const notice = makeEvent(room, "not echoed", {
      content: { msgtype: "m.notice", body: "not echoed" },
    });
    expect((await send("hello", [hello, notice])).status).toBe(200);
    expect((await send("hello", [hello, notice])).status).toBe(200);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent.map((e) => [e.sender, e.content.body])).toEqual([[bot, "echo: hello"]]);

    const echoed = await fetch(`${local.url}/echo/${encodeURIComponent("a b")}`);
    expect(echoed.status).toBe(200);
    expect(await echoed.json()).toEqual({ echo: "a b" });
    // The shipped application's route is not this one's.
    expect((await fetch(`${local.url}/webhook/x`, { method: "POST" })).status).toBe(404);
  });
});
