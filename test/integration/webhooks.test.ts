import { ScanCommand } from "@aws-sdk/client-dynamodb";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WEBHOOK_MAX_BODY_BYTES } from "../../functions/app/webhooks/post.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { makeEvent, sleep, waitFor } from "../support/appservice.ts";
import { SERVER, startAppserviceAndHomeserver } from "../support/with-homeserver.ts";

const ROOM = `!hooks:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;
const MEMBER = `@member:${SERVER}`;
const HOOK_USER = `@_webhook_ci:${SERVER}`;

describe("the webhooks application, over the scripted homeserver", () => {
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  let commands = 0;
  /** Sends `body` as `sender` and waits for the bot's answer to it. */
  const command = async (body: string, sender = MODERATOR) => {
    const before = botNotices().length;
    const event = makeEvent(ROOM, body, { sender });
    expect((await started.send(`command-${++commands}`, [event])).status).toBe(200);
    await waitFor(() => botNotices().length > before, 20_000, `an answer to ${body}`);
    return botNotices().at(-1) as string;
  };
  const botNotices = () =>
    started.homeserver.sent
      .filter((e) => e.sender === started.bot && e.content.msgtype === "m.notice")
      .map((e) => String(e.content.body));
  const hookMessages = () => started.homeserver.sent.filter((e) => e.sender === HOOK_USER);
  const post = (url: string, body: string, contentType = "application/json") =>
    fetch(url, {
      method: "POST",
      headers: contentType ? { "content-type": contentType } : {},
      body,
    });
  let hookUrl = "";

  beforeAll(async () => {
    started = await startAppserviceAndHomeserver();
    const { homeserver } = started;
    homeserver.createRoom(ROOM, [MODERATOR, MEMBER]);
    homeserver.setState(ROOM, "m.room.power_levels", "", {
      users: { [MODERATOR]: 50 },
      users_default: 0,
    });
  });
  afterAll(() => started?.stop());

  it("an invite → the bot joins", async () => {
    const invite = makeEvent(ROOM, "", {
      type: "m.room.member",
      state_key: started.bot,
      sender: MODERATOR,
      content: { membership: "invite" },
    });
    expect((await started.send("invite", [invite])).status).toBe(200);
    await waitFor(() => started.homeserver.rooms.get(ROOM)?.has(started.bot) === true);
  });

  it("!webhook new ci from a moderator → a reply with an unguessable URL; only its hash is stored", async () => {
    const reply = await command("!webhook new ci");
    const match = new RegExp(`${started.local.url}/webhook/([A-Za-z0-9_-]+)`).exec(reply);
    expect(match, reply).not.toBeNull();
    hookUrl = match?.[0] as string;
    const id = match?.[1] as string;
    // 256 bits, base64url.
    expect(id).toHaveLength(43);
    const dynamodb = localDynamoDb(started.local.dynamodbEndpoint);
    const { Items = [] } = await dynamodb.send(
      new ScanCommand({ TableName: started.local.tableName }),
    );
    dynamodb.destroy();
    expect(JSON.stringify(Items)).toContain('"ci"');
    expect(JSON.stringify(Items)).not.toContain(id);
  });

  it("POST JSON → the message, as @_webhook_ci registered on first use, Markdown rendered; 202", async () => {
    const response = await post(
      hookUrl,
      JSON.stringify({
        text: "**build** passed <script>alert(1)</script> [log](https://ci.example/1)",
      }),
    );
    expect(response.status).toBe(202);
    await waitFor(() => hookMessages().length === 1);
    const [message] = hookMessages();
    expect(started.homeserver.registered.has(HOOK_USER)).toBe(true);
    expect(started.homeserver.profiles.get(HOOK_USER)).toEqual({ displayname: "ci" });
    expect(message?.roomId).toBe(ROOM);
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

  it("username, text/plain, a Slack form and html: the display name follows; the HTML is sanitized", async () => {
    expect(
      (await post(hookUrl, JSON.stringify({ text: "deployed", username: "Deploy bot" }))).status,
    ).toBe(202);
    expect((await post(hookUrl, "plain *text*", "text/plain; charset=utf-8")).status).toBe(202);
    const form = new URLSearchParams({ payload: JSON.stringify({ text: "from a form" }) });
    expect((await post(hookUrl, form.toString(), "application/x-www-form-urlencoded")).status).toBe(
      202,
    );
    expect(
      (
        await post(
          hookUrl,
          JSON.stringify({ text: "fallback", html: '<b onclick="x()">bold</b><iframe src="x">' }),
        )
      ).status,
    ).toBe(202);
    await waitFor(() => hookMessages().length === 5);
    const [, deployed, plain, fromForm, html] = hookMessages();
    expect(fromForm?.content.body).toBe("from a form");
    expect(deployed?.content.body).toBe("deployed");
    expect(plain?.content.body).toBe("plain *text*");
    expect(plain?.content.formatted_body).toBe("<p>plain <em>text</em></p>");
    expect(html?.content.formatted_body).toBe("<b>bold</b>");
    expect(
      (await post(hookUrl, JSON.stringify({ text: "*only* this", html: "<script>x</script>" })))
        .status,
    ).toBe(202);
    await waitFor(() => hookMessages().length === 6);
    expect(hookMessages()[5]?.content.formatted_body).toBe("<p><em>only</em> this</p>");
    // The name changed before "deployed" and back before the next message, in the room's order.
    const profileSets = started.homeserver.requests.filter(
      (r) => r.path.endsWith("/displayname") && r.status === 200 && r.query.user_id === HOOK_USER,
    );
    expect(profileSets.map((r) => (r.body as { displayname: string }).displayname)).toEqual([
      "ci",
      "Deploy bot",
      "ci",
    ]);
  });

  it("bad bodies → 400 / 413 with a JSON error, and nothing sent", async () => {
    const before = hookMessages().length;
    const cases: [string, string, number, string][] = [
      ["{not json", "application/json", 400, "M_NOT_JSON"],
      ["{}", "application/json", 400, "M_BAD_JSON"],
      [JSON.stringify({ text: "  " }), "application/json", 400, "M_BAD_JSON"],
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
    await sleep(500);
    expect(hookMessages()).toHaveLength(before);
  });

  it("100 POSTs in a burst → 100 messages, in order, none doubled", async () => {
    const before = hookMessages().length;
    for (let i = 0; i < 100; i++) {
      const response = await post(hookUrl, JSON.stringify({ text: `burst ${i}` }));
      expect(response.status).toBe(202);
    }
    await waitFor(() => hookMessages().length >= before + 100, 60_000, "100 messages");
    await sleep(1000);
    expect(
      hookMessages()
        .slice(before)
        .map((m) => m.content.body),
    ).toEqual(Array.from({ length: 100 }, (_, i) => `burst ${i}`));
  });

  it("random bodies, content types and ids → 202, 400, 404 or 413 with a JSON error, never a 5xx", async () => {
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
        expect([202, 400, 404, 413]).toContain(response.status);
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
    const list = await command("!webhook list");
    expect(list).toContain(`ci — created `);
    expect(list).toContain(`by ${MODERATOR}`);
    expect(list).not.toContain("/webhook/");
    expect(await command("!webhook help")).toContain("!webhook new <name>");
    expect(await command("!webhook frobnicate")).toContain('Unknown command "frobnicate"');
    expect(await command("!webhook new Not/Valid")).toMatch(/^Usage: !webhook new <name>/);
    expect(await command("!webhook new ci")).toContain("already has a webhook named ci");
  });

  it("!webhook remove ci → its URL answers 404 at once", async () => {
    expect(await command("!webhook remove ci")).toBe(
      "Webhook ci removed: its URL no longer works.",
    );
    const response = await post(hookUrl, JSON.stringify({ text: "too late" }));
    expect(response.status).toBe(404);
    expect(await command("!webhook remove ci")).toBe("This room has no webhook named ci.");
    expect(await command("!webhook list")).toContain("no webhooks");
  });
});
