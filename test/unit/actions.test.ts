import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { type Actions, createActions } from "../../functions/matrix/actions.ts";
import type { ClientServerRequest, OutboundAction } from "../../functions/matrix/request.ts";
import type { FifoMessage } from "../../functions/queue/queue.ts";
import { sha256 } from "../../functions/shared/hash.ts";

// Each method of the Actions API once: the action it queues (kind, acting user, room, queue group,
// an ID derived from what asked for it and the action's position) and the request, checked
// against the client-server API's OpenAPI in the spec checkout.

const BOT = "@bot:test.local";
const GHOST = "@_as_ghost:test.local";
const ROOM = "!room/1:test.local";
const R = encodeURIComponent(ROOM);
const EVENT = "$event/1";
const EV = encodeURIComponent(EVENT);
const ORIGIN = "EVENT#$origin";
const CS = "/_matrix/client/v3";

const SPEC = "/work/shared/spec/matrix-spec/data/api/client-server";
interface Operation {
  requestBody?: {
    content?: { "application/json"?: { schema?: { properties?: object; required?: string[] } } };
  };
}
const operations: { pattern: RegExp; method: string; operation: Operation }[] = readdirSync(SPEC)
  .filter((file) => file.endsWith(".yaml"))
  .flatMap((file) => {
    const { paths = {} } = parse(readFileSync(join(SPEC, file), "utf8")) as {
      paths?: Record<string, Record<string, Operation>>;
    };
    return Object.entries(paths).flatMap(([template, methods]) =>
      Object.entries(methods).map(([method, operation]) => ({
        // A path parameter is one encoded segment: no `/` in it; a state key may be empty. The
        // spec writes one template with a trailing space (`/invite `) to tell two operations apart.
        pattern: new RegExp(`^${CS}${template.trim().replace(/\{[^}]+\}/g, "[^/]*")}$`),
        method: method.toUpperCase(),
        operation,
      })),
    );
  });

// Fields the application service API adds to a client-server body: registration's `type`
// (`m.login.application_service`, application-service-api.md), absent from registration.yaml.
const APPSERVICE_FIELDS: Record<string, string[]> = { [`${CS}/register`]: ["type"] };

/** The spec's operation for the request: its body only has fields the spec names, and all it requires. */
function expectInSpec(request: ClientServerRequest) {
  const found = operations.filter(
    ({ pattern, method }) => method === request.method && pattern.test(request.path),
  );
  expect(found, `${request.method} ${request.path}`).not.toHaveLength(0);
  const schema = found[0]?.operation.requestBody?.content?.["application/json"]?.schema;
  if (!schema?.properties) return;
  const body = request.body as Record<string, unknown>;
  for (const field of schema.required ?? []) expect(body).toHaveProperty(field);
  const named = [...Object.keys(schema.properties), ...(APPSERVICE_FIELDS[request.path] ?? [])];
  for (const field of Object.keys(body)) expect(named).toContain(field);
}

function queued() {
  const sent: FifoMessage[] = [];
  const actions = createActions({
    botUserId: BOT,
    outboundQueue: { send: async (messages) => void sent.push(...messages) },
    origin: ORIGIN,
  });
  return { actions, sent };
}

type Expected = Omit<OutboundAction, "id"> & { groupId: string };
const cases: [string, (actions: Actions) => Promise<unknown>, Expected][] = [
  [
    "sendEvent",
    (a) => a.sendEvent(ROOM, "m.custom/x", { a: 1 }, { as: GHOST, ts: 1234 }),
    {
      kind: "send",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/send/m.custom%2Fx/$ID`,
        body: { a: 1 },
        query: { ts: "1234" },
      },
    },
  ],
  [
    "sendMessage",
    (a) => a.sendMessage(ROOM, "hi", { html: "<b>hi</b>" }),
    {
      kind: "send",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/send/m.room.message/$ID`,
        body: {
          msgtype: "m.text",
          body: "hi",
          format: "org.matrix.custom.html",
          formatted_body: "<b>hi</b>",
        },
      },
    },
  ],
  [
    "sendNotice",
    (a) => a.sendNotice(ROOM, "note"),
    {
      kind: "send",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/send/m.room.message/$ID`,
        body: { msgtype: "m.notice", body: "note" },
      },
    },
  ],
  [
    "sendState",
    (a) => a.sendState(ROOM, "m.room.name", "", { name: "n" }, { ts: 5 }),
    {
      kind: "state",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/state/m.room.name/`,
        body: { name: "n" },
        query: { ts: "5" },
      },
    },
  ],
  [
    "redact",
    (a) => a.redact(ROOM, EVENT, { as: GHOST, reason: "spam" }),
    {
      kind: "redact",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/redact/${EV}/$ID`,
        body: { reason: "spam" },
      },
    },
  ],
  [
    "react",
    (a) => a.react(ROOM, EVENT, "👍"),
    {
      kind: "send",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/send/m.reaction/$ID`,
        body: { "m.relates_to": { rel_type: "m.annotation", event_id: EVENT, key: "👍" } },
      },
    },
  ],
  [
    "sendMessage naming its remote message (linked in the message map once sent)",
    (a) => a.sendMessage(ROOM, "hi", { as: GHOST, ts: 99, remoteId: "m1" }),
    {
      kind: "send",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      remoteId: "m1",
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/send/m.room.message/$ID`,
        body: { msgtype: "m.text", body: "hi" },
        query: { ts: "99" },
      },
    },
  ],
  [
    "edit (m.replace: m.new_content, the fallback starred, no new mentions)",
    (a) =>
      a.edit(
        ROOM,
        EVENT,
        {
          msgtype: "m.text",
          body: "new",
          formatted_body: "<b>new</b>",
          format: "org.matrix.custom.html",
          "m.mentions": { user_ids: [GHOST] },
        },
        { as: GHOST },
      ),
    {
      kind: "send",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/send/m.room.message/$ID`,
        body: {
          msgtype: "m.text",
          body: "* new",
          format: "org.matrix.custom.html",
          formatted_body: "* <b>new</b>",
          "m.new_content": {
            msgtype: "m.text",
            body: "new",
            format: "org.matrix.custom.html",
            formatted_body: "<b>new</b>",
            "m.mentions": { user_ids: [GHOST] },
          },
          "m.mentions": {},
          "m.relates_to": { rel_type: "m.replace", event_id: EVENT },
        },
      },
    },
  ],
  [
    "reply (m.in_reply_to, mentioning the replied-to sender)",
    (a) => a.reply(ROOM, { eventId: EVENT, sender: "@alice:test.local" }, "yes", { as: GHOST }),
    {
      kind: "send",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/send/m.room.message/$ID`,
        body: {
          msgtype: "m.text",
          body: "yes",
          "m.mentions": { user_ids: ["@alice:test.local"] },
          "m.relates_to": { "m.in_reply_to": { event_id: EVENT } },
        },
      },
    },
  ],
  [
    "unreact (the reaction's event redacted)",
    (a) => a.unreact(ROOM, EVENT, { as: GHOST }),
    {
      kind: "redact",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: { method: "PUT", path: `${CS}/rooms/${R}/redact/${EV}/$ID`, body: {} },
    },
  ],
  [
    "join",
    (a) => a.join("#alias:test.local", { as: GHOST }),
    {
      kind: "join",
      userId: GHOST,
      roomId: "#alias:test.local",
      groupId: "#alias:test.local",
      request: { method: "POST", path: `${CS}/join/%23alias%3Atest.local`, body: {} },
    },
  ],
  [
    "leave",
    (a) => a.leave(ROOM, { as: GHOST, reason: "bye" }),
    {
      kind: "leave",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: { method: "POST", path: `${CS}/rooms/${R}/leave`, body: { reason: "bye" } },
    },
  ],
  [
    "invite",
    (a) => a.invite(ROOM, GHOST, { reason: "come" }),
    {
      kind: "invite",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "POST",
        path: `${CS}/rooms/${R}/invite`,
        body: { user_id: GHOST, reason: "come" },
      },
    },
  ],
  [
    "kick",
    (a) => a.kick(ROOM, GHOST, { reason: "out" }),
    {
      kind: "kick",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "POST",
        path: `${CS}/rooms/${R}/kick`,
        body: { user_id: GHOST, reason: "out" },
      },
    },
  ],
  [
    "ban",
    (a) => a.ban(ROOM, GHOST),
    {
      kind: "ban",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: { method: "POST", path: `${CS}/rooms/${R}/ban`, body: { user_id: GHOST } },
    },
  ],
  [
    "setDisplayName",
    (a) => a.setDisplayName("Ghost", { as: GHOST, orderedWith: ROOM }),
    {
      kind: "displayname",
      userId: GHOST,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/profile/%40_as_ghost%3Atest.local/displayname`,
        body: { displayname: "Ghost" },
      },
    },
  ],
  [
    "setAvatarUrl",
    (a) => a.setAvatarUrl("mxc://test.local/a"),
    {
      kind: "avatar_url",
      userId: BOT,
      groupId: BOT,
      request: {
        method: "PUT",
        path: `${CS}/profile/%40bot%3Atest.local/avatar_url`,
        body: { avatar_url: "mxc://test.local/a" },
      },
    },
  ],
  [
    "createRoom",
    (a) =>
      a.createRoom({
        as: GHOST,
        alias: "pub",
        name: "Pub",
        topic: "t",
        invite: [BOT],
        initialState: [{ type: "m.room.guest_access", content: { guest_access: "forbidden" } }],
        preset: "public_chat",
        visibility: "public",
        isDirect: false,
      }),
    {
      kind: "createRoom",
      userId: GHOST,
      groupId: GHOST,
      request: {
        method: "POST",
        path: `${CS}/createRoom`,
        body: {
          room_alias_name: "pub",
          name: "Pub",
          topic: "t",
          invite: [BOT],
          initial_state: [{ type: "m.room.guest_access", content: { guest_access: "forbidden" } }],
          preset: "public_chat",
          visibility: "public",
          is_direct: false,
        },
      },
    },
  ],
  [
    "setDirectoryVisibility",
    (a) => a.setDirectoryVisibility("irc/net", ROOM, "public"),
    {
      kind: "directory",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/directory/list/appservice/irc%2Fnet/${R}`,
        body: { visibility: "public" },
      },
    },
  ],
  [
    "setTyping (typing: a timeout, 30 s unless given)",
    (a) => a.setTyping(ROOM, true, { as: GHOST }),
    {
      kind: "typing",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/typing/%40_as_ghost%3Atest.local`,
        body: { typing: true, timeout: 30_000 },
      },
    },
  ],
  [
    "setTyping (stopped: no timeout)",
    (a) => a.setTyping(ROOM, false, { timeoutMs: 5000 }),
    {
      kind: "typing",
      userId: BOT,
      roomId: ROOM,
      groupId: ROOM,
      request: {
        method: "PUT",
        path: `${CS}/rooms/${R}/typing/%40bot%3Atest.local`,
        body: { typing: false },
      },
    },
  ],
  [
    "sendReceipt",
    (a) => a.sendReceipt(ROOM, EVENT, { as: GHOST, type: "m.read.private" }),
    {
      kind: "receipt",
      userId: GHOST,
      roomId: ROOM,
      groupId: ROOM,
      request: { method: "POST", path: `${CS}/rooms/${R}/receipt/m.read.private/${EV}`, body: {} },
    },
  ],
  [
    "register (as the appservice, grouped by the user it creates)",
    (a) => a.register(GHOST),
    {
      kind: "register",
      userId: BOT,
      groupId: GHOST,
      request: {
        method: "POST",
        path: `${CS}/register`,
        body: { type: "m.login.application_service", username: "_as_ghost", inhibit_login: true },
      },
    },
  ],
];

describe("the Actions API: what each method queues", () => {
  for (const [method, call, { groupId, ...expected }] of cases) {
    it(`${method}: one action, its ID from the origin and position, its request as the spec has it`, async () => {
      const { actions, sent } = queued();
      // A first action, so that this one is at position 1.
      await actions.join(ROOM);
      const returned = await call(actions);
      expect(sent).toHaveLength(2);
      const [, message] = sent as [FifoMessage, FifoMessage];
      const id = sha256(`${ORIGIN}\n1`);
      const action = JSON.parse(message.body) as OutboundAction;
      const withId = JSON.parse(JSON.stringify(expected).replaceAll("$ID", id)) as typeof expected;
      expect(action).toEqual({ id, ...withId });
      expect(message).toMatchObject({ groupId, deduplicationId: id });
      // Sends and redactions return their transaction ID; the others nothing.
      expect(returned).toBe(action.request.path.endsWith(`/${id}`) ? id : undefined);
      expectInSpec(action.request);
    });
  }

  it("setPresence: PUT presence/{userId}/status as the user, grouped by it (the spec checkout has no presence API to check against)", async () => {
    const { actions, sent } = queued();
    await actions.setPresence("unavailable", { as: GHOST, statusMessage: "away" });
    await actions.setPresence("online");
    const [away, online] = sent.map((m) => ({
      ...m,
      action: JSON.parse(m.body) as OutboundAction,
    }));
    expect(away?.groupId).toBe(GHOST);
    expect(away?.action).toMatchObject({
      kind: "presence",
      userId: GHOST,
      request: {
        method: "PUT",
        path: `${CS}/presence/%40_as_ghost%3Atest.local/status`,
        body: { presence: "unavailable", status_msg: "away" },
      },
    });
    expect(online?.action.request.body).toEqual({ presence: "online" });
    expect(online?.groupId).toBe(BOT);
  });

  it("withServerErrorLimit: the same actions with maxServerErrors, sharing the positions; a limit is a positive integer", async () => {
    const { actions, sent } = queued();
    await actions.sendNotice(ROOM, "a");
    await actions.withServerErrorLimit(3).sendNotice(ROOM, "b");
    await actions.sendNotice(ROOM, "c");
    const queuedActions = sent.map((m) => JSON.parse(m.body) as OutboundAction);
    expect(queuedActions.map((a) => a.id)).toEqual([0, 1, 2].map((n) => sha256(`${ORIGIN}\n${n}`)));
    expect(queuedActions.map((a) => a.maxServerErrors)).toEqual([undefined, 3, undefined]);
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      expect(() => actions.withServerErrorLimit(limit)).toThrow(RangeError);
    }
  });
  it("withOrigin: the same actions under IDs from the key alone, counted from the first, keeping the limit; another origin with the same key asks for the same IDs", async () => {
    const first = queued();
    const second = {
      sent: [] as FifoMessage[],
      actions: createActions({
        botUserId: BOT,
        outboundQueue: { send: async (messages) => void second.sent.push(...messages) },
        origin: "http:another-request",
      }),
    };
    await first.actions.sendNotice(ROOM, "before");
    await first.actions.withServerErrorLimit(4).withOrigin("hook\nkey-1").sendNotice(ROOM, "a");
    await second.actions.withOrigin("hook\nkey-1").sendNotice(ROOM, "a");
    const [before, seeded] = first.sent.map((m) => JSON.parse(m.body) as OutboundAction);
    const [again] = second.sent.map((m) => JSON.parse(m.body) as OutboundAction);
    expect(before?.id).toBe(sha256(`${ORIGIN}\n0`));
    expect(seeded?.id).toBe(sha256("app-key:hook\nkey-1\n0"));
    expect(again?.id).toBe(seeded?.id);
    expect(seeded?.maxServerErrors).toBe(4);
    expect(again?.maxServerErrors).toBeUndefined();
  });
});
