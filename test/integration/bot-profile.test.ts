import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { registrationYaml } from "../../functions/appservice/protocol/registration.ts";
import type { LocalAppservice, LocalOptions } from "../../functions/local/local.ts";
import type { Log } from "../../functions/shared/log.ts";
import { makeEvent, startTestAppservice, tempDir, waitFor } from "../support/appservice.ts";
import type { RecordedRequest } from "../support/homeserver.ts";
import { SERVER, startWithHomeserver } from "../support/with-homeserver.ts";

const isPong = (r: RecordedRequest) => r.method === "PUT" && r.path.includes("/send/");

describe("the bot's profile", () => {
  it("is set once before the bot first acts, across many actions and a restart, and again when the configured name changes", async () => {
    const started = await startWithHomeserver({
      botDisplayName: "Webhooks",
      botAvatarUrl: `mxc://${SERVER}/bot`,
    });
    const { homeserver, bot, registration } = started;
    const botProfileSets = () =>
      homeserver.requests.filter(
        (r) =>
          r.method === "PUT" &&
          r.path.startsWith(`/_matrix/client/v3/profile/${encodeURIComponent(bot)}/`),
      );
    const rooms = ["!a:test.local", "!b:test.local", "!c:test.local", "!d:test.local"];
    for (const room of rooms) homeserver.createRoom(room, ["@alice:test.local", bot]);
    homeserver.createRoom("!invited:test.local", ["@alice:test.local"]);
    let txn = 0;
    /** Pings in every room, in one transaction: one pong each. */
    const pingAll = async (local: LocalAppservice) => {
      const before = homeserver.sent.length;
      const response = await fetch(`${local.url}/_matrix/app/v1/transactions/t${++txn}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${local.registration.hs_token}` },
        body: JSON.stringify({ events: rooms.map((room) => makeEvent(room, "!ping")) }),
      });
      expect(response.status).toBe(200);
      await waitFor(() => homeserver.sent.length >= before + rooms.length, 20_000, "the pongs");
    };

    // An invite (the bot joins) and 5 × 4 pings, handled by 4 concurrent pollers.
    await started.send("invite", [
      makeEvent("!invited:test.local", "", {
        type: "m.room.member",
        state_key: bot,
        content: { membership: "invite" },
      }),
    ]);
    for (let i = 0; i < 5; i++) await pingAll(started.local);
    await waitFor(() => homeserver.rooms.get("!invited:test.local")?.has(bot) === true);
    expect(botProfileSets().map((r) => [r.path.split("/").pop(), r.body, r.status])).toEqual([
      ["displayname", { displayname: "Webhooks" }, 200],
      ["avatar_url", { avatar_url: `mxc://${SERVER}/bot` }, 200],
    ]);
    // Before anything the bot did.
    const firstAction = homeserver.requests.findIndex(
      (r) => isPong(r) || r.path.includes("/join/"),
    );
    expect(homeserver.requests.indexOf(botProfileSets()[1] as RecordedRequest)).toBeLessThan(
      firstAction,
    );
    expect(homeserver.profiles.get(bot)).toEqual({
      displayname: "Webhooks",
      avatar_url: `mxc://${SERVER}/bot`,
    });

    // A restart on the same table (another process, as another Lambda instance would be).
    await started.local.stop();
    const registrationPath = join(await tempDir(), "registration.yaml");
    await writeFile(registrationPath, registrationYaml(registration));
    const restart = async (options: Partial<LocalOptions>) => {
      const local = await startTestAppservice({
        registrationPath,
        homeserverUrl: homeserver.url,
        serverName: SERVER,
        tableName: started.local.tableName,
        ...options,
      });
      onTestFinished(local.stop);
      return local;
    };
    const same = await restart({ botDisplayName: "Webhooks", botAvatarUrl: `mxc://${SERVER}/bot` });
    await pingAll(same);
    expect(botProfileSets()).toHaveLength(2);
    await same.stop();

    // The configured name changes: set once more, the unchanged avatar left alone.
    const renamed = await restart({ botDisplayName: "Hooks", botAvatarUrl: `mxc://${SERVER}/bot` });
    for (let i = 0; i < 3; i++) await pingAll(renamed);
    expect(
      botProfileSets()
        .slice(2)
        .map((r) => r.body),
    ).toEqual([{ displayname: "Hooks" }]);
    expect(homeserver.profiles.get(bot)?.displayname).toBe("Hooks");
  });

  it("defaults to the registration's id; a 5xx holds the bot's action back until the profile is set", async () => {
    const { homeserver, send, bot, registration } = await startWithHomeserver();
    homeserver.createRoom("!r:test.local", [bot]);
    const isDisplayName = (r: RecordedRequest) => r.path.endsWith("/displayname");
    homeserver.cue(isDisplayName, { status: 503, body: { errcode: "M_UNKNOWN", error: "down" } });
    await send("ping", [makeEvent("!r:test.local", "!ping")]);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(
      homeserver.requests
        .filter((r) => isDisplayName(r) || isPong(r))
        .map((r) => [
          isPong(r) ? "pong" : (r.body as { displayname: string }).displayname,
          r.status,
        ]),
    ).toEqual([
      [registration.id, 503],
      [registration.id, 200],
      ["pong", 200],
    ]);
  });

  it("a homeserver that refuses the profile does not stop the bot: logged, and the pong goes out", async () => {
    const errors: string[] = [];
    const log: Log = { debug() {}, info() {}, warn() {}, error: (message) => errors.push(message) };
    const { homeserver, send, bot } = await startWithHomeserver({ log });
    homeserver.createRoom("!r:test.local", [bot]);
    homeserver.cue(
      (r) => r.path.endsWith("/displayname"),
      {
        status: 403,
        body: { errcode: "M_FORBIDDEN", error: "You are not allowed to change your display name." },
      },
      10,
    );
    await send("ping-1", [makeEvent("!r:test.local", "!ping")]);
    await send("ping-2", [makeEvent("!r:test.local", "!ping")]);
    await waitFor(() => homeserver.sent.length >= 2);
    // Tried once in this process, not before every action.
    expect(homeserver.requests.filter((r) => r.path.endsWith("/displayname"))).toHaveLength(1);
    expect(errors).toEqual(["the homeserver refused the bot's profile: the bot acts without it"]);
  });
});
