import { GetItemCommand, ScanCommand } from "@aws-sdk/client-dynamodb";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WEBHOOK_MAX_BODY_BYTES } from "../../functions/applications/webhooks/webhooks/post.ts";
import { WEBHOOK_RATE } from "../../functions/applications/webhooks/webhooks/rate-limit.ts";
import { createWebhook } from "../../functions/applications/webhooks/webhooks/store.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { sha256 } from "../../functions/shared/hash.ts";
import { DynamoDbAppData } from "../../functions/store/dynamodb/app-data.ts";
import { makeEvent, NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { newWebhook, noticesIn as noticesInRoom, sendCommand } from "../support/webhooks.ts";
import { SERVER, startAppserviceAndHomeserver } from "../support/with-homeserver.ts";

const ROOM = `!hooks:${SERVER}`;
const OTHER_ROOM = `!other:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;
const MEMBER = `@member:${SERVER}`;
/** A room's own webhook user: `@_webhook_<tag of the room>_<name>`. */
const hookUserPattern = (name: string) =>
  new RegExp(`^@_webhook_[0-9a-f]{12}_${name}:test\\.local$`);

describe("the webhooks application, over the scripted homeserver", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  const noticesIn = (roomId: string) => noticesInRoom(started, roomId);
  /** Sends `body` as `sender` and waits for the bot's answer to it. */
  const command = (body: string, sender = MODERATOR, roomId = ROOM) =>
    sendCommand(started, body, sender, roomId);
  /** The messages a room's webhook of that name posted. */
  const hookMessages = (name = "ci", roomId = ROOM) =>
    started.homeserver.sent.filter(
      (e) => e.roomId === roomId && hookUserPattern(name).test(e.sender),
    );
  /** The display names set by member events for `userId` in `roomId`, in order. */
  const memberNames = (roomId: string, userId: string) =>
    started.homeserver.requests
      .filter(
        (r) =>
          r.method === "PUT" &&
          r.status === 200 &&
          r.path ===
            `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.member/${encodeURIComponent(userId)}`,
      )
      .map((r) => (r.body as { displayname: string }).displayname);
  /** Global profile changes of any user but the bot (which sets its own name once). */
  const webhookProfileCalls = () =>
    started.homeserver.requests.filter(
      (r) => r.path.includes("/profile/") && !r.path.includes(encodeURIComponent(started.bot)),
    );
  const post = (url: string, body: string, contentType = "application/json") =>
    fetch(url, {
      method: "POST",
      headers: contentType ? { "content-type": contentType } : {},
      body,
    });

  const createHook = (name: string, roomId = ROOM) => newWebhook(started, name, MODERATOR, roomId);
  const tableItems = async () => {
    const dynamodb = localDynamoDb(started.local.dynamodbEndpoint);
    const { Items = [] } = await dynamodb.send(
      new ScanCommand({ TableName: started.local.tableName }),
    );
    dynamodb.destroy();
    return Items;
  };
  /** Posts `text` through the webhook and waits for the message it makes. */
  const postAndWait = async (url: string, name: string, text: string, roomId = ROOM) => {
    const before = hookMessages(name, roomId).length;
    expect((await post(url, JSON.stringify({ text }))).status).toBe(202);
    await waitFor(() => hookMessages(name, roomId).length > before, 20_000, `"${text}"`);
    return hookMessages(name, roomId).at(-1);
  };

  beforeAll(async () => {
    started = await startAppserviceAndHomeserver();
    const { homeserver } = started;
    homeserver.createRoom(ROOM, [MODERATOR, MEMBER, started.bot]);
    homeserver.createRoom(OTHER_ROOM, [MODERATOR, started.bot]);
    for (const room of [ROOM, OTHER_ROOM]) {
      homeserver.setState(room, "m.room.power_levels", "", {
        users: { [MODERATOR]: 50 },
        users_default: 0,
      });
    }
  });
  afterAll(() => started?.stop());

  it("an invite → the bot joins", async () => {
    const room = `!invited:${SERVER}`;
    started.homeserver.createRoom(room, [MODERATOR]);
    const invite = makeEvent(room, "", {
      type: "m.room.member",
      state_key: started.bot,
      sender: MODERATOR,
      content: { membership: "invite" },
    });
    expect((await started.send("invite", [invite])).status).toBe(200);
    await waitFor(() => started.homeserver.rooms.get(room)?.has(started.bot) === true);
  });

  it("!webhook new ci → the room is told; the unguessable URL goes to its creator alone, in a DM; only its hash is stored", async () => {
    const { id, dm } = await createHook("ci");
    // 256 bits, base64url.
    expect(id).toHaveLength(43);
    expect(started.homeserver.rooms.get(dm)?.has(started.bot)).toBe(true);
    expect(noticesIn(dm)[0]).toContain(`Webhook ci of ${ROOM}`);
    // Nothing in the webhook's own room carries it.
    expect(
      started.homeserver.sent.filter((e) => e.roomId === ROOM).map((e) => JSON.stringify(e)),
    ).not.toContainEqual(expect.stringContaining(id));
    const items = JSON.stringify(await tableItems());
    expect(items).toContain('"ci"');
    expect(items).not.toContain(id);
  });

  it("POST JSON → the message, as this room's own webhook user, registered on first use and named in this room; 202", async () => {
    const { url } = await createHook("post");
    const response = await post(
      url,
      JSON.stringify({
        text: "**build** passed <script>alert(1)</script> [log](https://ci.example/1)",
      }),
    );
    expect(response.status).toBe(202);
    await waitFor(() => hookMessages("post").length === 1);
    const [message] = hookMessages("post");
    const hookUser = message?.sender as string;
    expect(hookUser).toMatch(hookUserPattern("post"));
    expect(started.homeserver.registered.has(hookUser)).toBe(true);
    // Its name is its member event's in this room; its global profile is never touched.
    expect(memberNames(ROOM, hookUser)).toEqual(["post"]);
    expect(started.homeserver.profiles.has(hookUser)).toBe(false);
    expect(message?.content).toMatchObject({
      msgtype: "m.text",
      body: "**build** passed <script>alert(1)</script> [log](https://ci.example/1)",
      format: "org.matrix.custom.html",
    });
    const html = String(message?.content.formatted_body);
    expect(html).toContain("<strong>build</strong>");
    expect(html).toContain('<a href="https://ci.example/1">log</a>');
    expect(html).not.toContain("<script>");
  });

  it("a new webhook user in an invite-only room: registered, invited and joined before its member event; nothing denied", async () => {
    const room = `!private-hooks:${SERVER}`;
    started.homeserver.createRoom(room, [MODERATOR, started.bot], { inviteOnly: true });
    started.homeserver.setState(room, "m.room.power_levels", "", {
      users: { [MODERATOR]: 50 },
      users_default: 0,
    });
    const { url } = await createHook("fresh", room);
    const hookUser = (await postAndWait(url, "fresh", "first", room))?.sender as string;
    const user = encodeURIComponent(hookUser);
    const inRoom = `/_matrix/client/v3/rooms/${encodeURIComponent(room)}`;
    const localpart = hookUser.slice(1, hookUser.indexOf(":"));
    // The calls by, for or on the webhook user, in order.
    const steps = started.homeserver.requests
      .filter((r) => {
        const body = r.body as { user_id?: string; username?: string } | undefined;
        return (
          r.query.user_id === hookUser ||
          (r.path.endsWith("/register") && body?.username === localpart) ||
          (r.path === `${inRoom}/invite` && body?.user_id === hookUser)
        );
      })
      .map((r) => `${r.method} ${r.path.replace("/_matrix/client/v3", "")} ${r.status}`);
    const memberEvent = `PUT /rooms/${encodeURIComponent(room)}/state/m.room.member/${user}`;
    // The first call is refused before any event is made (the user does not exist yet); from the
    // registration on, none is refused: Synapse denies no event.
    expect(steps).toEqual([
      `${memberEvent} 403`,
      "POST /register 200",
      `POST /rooms/${encodeURIComponent(room)}/invite 200`,
      `POST /join/${encodeURIComponent(room)} 200`,
      `${memberEvent} 200`,
      expect.stringMatching(/^PUT \/rooms\/.*\/send\/m\.room\.message\/\S+ 200$/),
    ]);
  });

  it("username, text/plain, a Slack form and html: the display name follows; the HTML is sanitized", async () => {
    const { url } = await createHook("formats");
    const hookUser = (await postAndWait(url, "formats", "first"))?.sender as string;
    expect(
      (await post(url, JSON.stringify({ text: "deployed", username: "Deploy bot" }))).status,
    ).toBe(202);
    expect((await post(url, "plain *text*", "text/plain; charset=utf-8")).status).toBe(202);
    const form = new URLSearchParams({ payload: JSON.stringify({ text: "from a form" }) });
    expect((await post(url, form.toString(), "application/x-www-form-urlencoded")).status).toBe(
      202,
    );
    expect(
      (
        await post(
          url,
          JSON.stringify({
            text: "fallback",
            html: '<b onclick="x()">bold</b><iframe src="x"><img src="//evil.example/p.png">',
          }),
        )
      ).status,
    ).toBe(202);
    await waitFor(() => hookMessages("formats").length === 5);
    const [, deployed, plain, fromForm, html] = hookMessages("formats");
    expect(fromForm?.content.body).toBe("from a form");
    expect(deployed?.content.body).toBe("deployed");
    expect(plain?.content.body).toBe("plain *text*");
    expect(plain?.content.formatted_body).toBe("<p>plain <em>text</em></p>");
    expect(html?.content.formatted_body).toBe("<b>bold</b>");
    expect(
      (await post(url, JSON.stringify({ text: "*only* this", html: "<script>x</script>" }))).status,
    ).toBe(202);
    await waitFor(() => hookMessages("formats").length === 6);
    expect(hookMessages("formats")[5]?.content.formatted_body).toBe("<p><em>only</em> this</p>");
    // The name changed before "deployed" and back before the next message, in the room's order,
    // in this room's member event each time.
    expect(memberNames(ROOM, hookUser)).toEqual(["formats", "Deploy bot", "formats"]);
    expect(webhookProfileCalls()).toEqual([]);
  });

  it("NUL, controls, bidi overrides and a cut character are cleaned before they reach the homeserver", async () => {
    // JSON.stringify writes the lone surrogates as \ud83d escapes, as a client may send them.
    const body = JSON.stringify({
      text: "nul\u0000 and bell\u0007 here, cut \ud83d",
      username: "\u202Eevil\u0000\nname\u2066 \ud800",
    });
    expect(body).toContain("\\ud83d");
    const { url } = await createHook("clean");
    expect((await post(url, body)).status).toBe(202);
    await waitFor(() => hookMessages("clean").length === 1);
    const [message] = hookMessages("clean");
    expect(message?.content.body).toBe("nul and bell here, cut \uFFFD");
    expect(memberNames(ROOM, message?.sender as string)).toEqual(["evil name"]);
  });

  it("the same name in another room: another user, named in that room only", async () => {
    const hookUser = (await postAndWait((await createHook("twin")).url, "twin", "here"))
      ?.sender as string;
    const other = await createHook("twin", OTHER_ROOM);
    expect(
      (await post(other.url, JSON.stringify({ text: "hi", username: "Other CI" }))).status,
    ).toBe(202);
    await waitFor(() => hookMessages("twin", OTHER_ROOM).length === 1);
    const otherUser = hookMessages("twin", OTHER_ROOM)[0]?.sender as string;
    expect(otherUser).toMatch(hookUserPattern("twin"));
    expect(otherUser).not.toBe(hookUser);
    expect(memberNames(OTHER_ROOM, otherUser)).toEqual(["Other CI"]);
    // Neither user's name was set anywhere else, nor in any global profile.
    expect(memberNames(ROOM, otherUser)).toEqual([]);
    expect(memberNames(OTHER_ROOM, hookUser)).toEqual([]);
    expect(webhookProfileCalls()).toEqual([]);
  });

  it("a webhook stored before per-room users posts as its room's own user, not the shared one", async () => {
    // As `!webhook new` stored it before: no user ID in the record.
    const dynamodb = localDynamoDb(started.local.dynamodbEndpoint);
    const data = new DynamoDbAppData(dynamodb, started.local.tableName);
    const legacyId = "legacy-webhook-id-legacy-webhook-id-legacy-w";
    await createWebhook(data, legacyId, {
      roomId: OTHER_ROOM,
      name: "old",
      createdAt: Date.now(),
      createdBy: MODERATOR,
      commandEventId: "$old-command",
    });
    dynamodb.destroy();
    const response = await post(
      `${started.local.url}/webhook/${legacyId}`,
      JSON.stringify({ text: "still works" }),
    );
    expect(response.status).toBe(202);
    await waitFor(() => hookMessages("old", OTHER_ROOM).length === 1);
    expect(started.homeserver.registered.has(`@_webhook_old:${SERVER}`)).toBe(false);
  });

  it("bad bodies → 400 / 413 with a JSON error, and nothing sent", async () => {
    const { url: hookUrl } = await createHook("strict");
    const cases: [string, string, number, string][] = [
      ["{not json", "application/json", 400, "M_NOT_JSON"],
      ["{}", "application/json", 400, "M_BAD_JSON"],
      [JSON.stringify({ text: "  " }), "application/json", 400, "M_BAD_JSON"],
      [JSON.stringify({ text: "\u0000\u0001" }), "application/json", 400, "M_BAD_JSON"],
      [JSON.stringify({ text: "x", username: 3 }), "application/json", 400, "M_BAD_JSON"],
      ["", "text/plain", 400, "M_BAD_JSON"],
      [
        JSON.stringify({ text: "x".repeat(WEBHOOK_MAX_BODY_BYTES) }),
        "application/json",
        413,
        "M_TOO_LARGE",
      ],
    ];
    for (const [body, type, status, errcode] of cases) {
      const response = await post(hookUrl, body, type);
      expect(response.status, body.slice(0, 40)).toBe(status);
      expect(await response.json()).toMatchObject({ errcode, error: expect.any(String) });
    }
    const unknown = await post(`${started.local.url}/webhook/nope`, '{"text":"x"}');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ errcode: "M_NOT_FOUND" });
    const wrongMethod = await fetch(hookUrl);
    expect(wrongMethod.status).toBe(405);
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(hookMessages("strict")).toEqual([]);
  });

  it("one webhook past its burst → 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After; what passed arrives in order, once; other webhooks go on", async () => {
    const steady = await createHook("steady");
    const { url } = await createHook("burst");
    const statuses: number[] = [];
    let limited: Response | undefined;
    // Far faster than one a second: the bucket runs dry within these.
    for (let i = 0; i < 100 && !limited; i++) {
      const response = await post(url, JSON.stringify({ text: `burst ${i}` }));
      statuses.push(response.status);
      if (response.status === 429) limited = response;
    }
    expect(statuses.slice(0, WEBHOOK_RATE.burst)).toEqual(
      Array.from({ length: WEBHOOK_RATE.burst }, () => 202),
    );
    expect(statuses.at(-1)).toBe(429);
    const body = (await limited?.json()) as { retry_after_ms: number };
    expect(body).toMatchObject({ errcode: "M_LIMIT_EXCEEDED", error: expect.any(String) });
    expect(body.retry_after_ms).toBeGreaterThan(0);
    expect(body.retry_after_ms).toBeLessThanOrEqual(1000);
    expect(limited?.headers.get("retry-after")).toBe("1");
    // The room's other webhook has a bucket of its own.
    expect((await post(steady.url, JSON.stringify({ text: "not starved" }))).status).toBe(202);

    const accepted = statuses.length - 1;
    await waitFor(() => hookMessages("burst").length >= accepted, 60_000, "the burst");
    expect(await waitUntilDrained(started.local)).toEqual(NO_DEAD_LETTERS);
    expect(hookMessages("burst").map((m) => m.content.body)).toEqual(
      Array.from({ length: accepted }, (_, i) => `burst ${i}`),
    );
  });

  it("random bodies, content types and ids → 202, 400, 404, 413 or 429 with a JSON error, never a 5xx", async () => {
    const { url: hookUrl } = await createHook("fuzz");
    const text = fc.oneof(fc.string(), fc.string({ unit: "grapheme" }));
    const body = fc.oneof(
      text,
      fc.jsonValue().map((value) => JSON.stringify(value)),
      fc
        .record(
          { text: fc.oneof(text, fc.anything()), username: fc.anything(), html: fc.anything() },
          { requiredKeys: [] },
        )
        .map((value) => JSON.stringify(value)),
    );
    const type = fc.constantFrom("application/json", "text/plain", "text/plain; charset=x", "");
    await fc.assert(
      fc.asyncProperty(body, type, fc.option(fc.string({ minLength: 1 })), async (b, t, id) => {
        const url =
          id === null ? hookUrl : `${started.local.url}/webhook/${encodeURIComponent(id)}`;
        const response = await post(url, b, t);
        expect([202, 400, 404, 413, 429]).toContain(response.status);
        if (response.status !== 202) {
          expect(await response.json()).toMatchObject({
            errcode: expect.any(String),
            error: expect.any(String),
          });
        }
      }),
      { numRuns: 150 },
    );
  });

  it("a member below power level 50 → a polite refusal, and no webhook", async () => {
    const reply = await command("!webhook new evil", MEMBER);
    expect(reply).toMatch(/^Sorry .*only room moderators/);
    expect(await command("!webhook list")).not.toContain("evil");
  });

  it("a room v12 creator, absent from the power levels, may manage webhooks", async () => {
    const { homeserver } = started;
    const creator = `@creator:${SERVER}`;
    homeserver.rooms.get(ROOM)?.add(creator);
    homeserver.setState(ROOM, "m.room.create", "", { room_version: "12" }, creator);
    try {
      expect(await command("!webhook list", creator)).toContain("Webhooks in this room");
      // In older rooms the creator's rank is the power levels'.
      homeserver.setState(ROOM, "m.room.create", "", { room_version: "10", creator }, creator);
      expect(await command("!webhook list", creator)).toMatch(/^Sorry /);
    } finally {
      homeserver.state.delete(`${ROOM}\nm.room.create\n`);
    }
  });

  it("!webhook list, help, an unknown command, a bad name", async () => {
    await createHook("listed");
    const list = await command("!webhook list");
    expect(list).toContain(`listed — created `);
    expect(list).toContain(`by ${MODERATOR}`);
    expect(list).not.toContain("/webhook/");
    expect(await command("!webhook help")).toContain("!webhook new <name>");
    expect(await command("!webhook frobnicate")).toContain('Unknown command "frobnicate"');
    expect(await command("!webhook new Not/Valid")).toMatch(/^Usage: !webhook new <name>/);
    expect(await command("!webhook new listed")).toContain("already has a webhook named listed");
  });

  it("a 5,000-character name is answered with the usage, and the room's next command goes on", async () => {
    expect(await command(`!webhook remove ${"x".repeat(5000)}`)).toMatch(
      /^Usage: !webhook remove <name>/,
    );
    expect(await command("!webhook help")).toContain("!webhook new <name>");
  });

  it("!webhook remove <name> → its URL answers 404 at once, and its bucket goes with it", async () => {
    await createHook("kept");
    const { url: hookUrl, id: hookId } = await createHook("doomed");
    await postAndWait(hookUrl, "doomed", "before the removal");
    const bucket = async () => {
      const dynamodb = localDynamoDb(started.local.dynamodbEndpoint);
      const { Item } = await dynamodb.send(
        new GetItemCommand({
          TableName: started.local.tableName,
          Key: { pk: { S: "APP#webhook-rate" }, sk: { S: sha256(hookId) } },
        }),
      );
      dynamodb.destroy();
      return Item;
    };
    expect(await bucket()).toBeDefined();
    expect(await command("!webhook remove doomed")).toBe(
      "Webhook doomed removed: its URL no longer works.",
    );
    expect(await bucket()).toBeUndefined();
    const response = await post(hookUrl, JSON.stringify({ text: "too late" }));
    expect(response.status).toBe(404);
    expect(await command("!webhook remove doomed")).toBe("This room has no webhook named doomed.");
    const list = await command("!webhook list");
    expect(list).toContain("kept — created ");
    expect(list).not.toContain("doomed");
  });
});
