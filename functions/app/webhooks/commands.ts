import type { ClientEvent, ServiceContext } from "../../appservice/api.ts";
import { MODERATOR_LEVEL, powerLevel } from "./moderators.ts";
import { webhookUserId } from "./post.ts";
import { createWebhook, findWebhook, listWebhooks, removeWebhook } from "./store.ts";
import { cleanName } from "./text.ts";

/** Webhook names become user localparts (`@_webhook_<tag>_<name>`): the characters those allow. */
const NAME = /^[a-z0-9._=-]{1,32}$/;

/**
 * Each command's usage, and whether it takes a name: what it is given is checked against these
 * before anything is read or stored, so no argument can make storage refuse it.
 */
const COMMANDS = new Map([
  [
    "new",
    {
      takesName: true,
      usage: "!webhook new <name> — a name of 1 to 32 characters among a-z 0-9 . _ = -",
    },
  ],
  [
    "remove",
    { takesName: true, usage: "!webhook remove <name> — the name of one of this room's webhooks" },
  ],
  ["list", { takesName: false, usage: "!webhook list" }],
  ["help", { takesName: false, usage: "!webhook help" }],
]);

/**
 * A state event the bot puts in the direct message room it creates for a webhook's URL, naming
 * the command that made the webhook: when the homeserver hands it back, the bot sends the URL
 * there (the room's ID is only known then).
 */
export const URL_MESSAGE_REQUEST = "io.github.matrix_serverless_appservice.webhook_url";

const HELP = [
  "Webhooks post messages into this room from anywhere that can make an HTTP request.",
  "!webhook new <name> — create one; I send you its secret URL in a direct message",
  "!webhook list — the webhooks of this room",
  "!webhook remove <name> — delete one; its URL stops working at once",
  'POST JSON {"text": "…", "username"?: "…", "html"?: "…"} or plain text to the URL.',
  "Only room moderators (power level 50 or more) can use these commands.",
].join("\n");

export const isWebhookCommand = (body: unknown): body is string =>
  typeof body === "string" && /^!webhook(\s|$)/.test(body);

const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

// Derived from the command itself: a re-run of its handler hands out the same URL.
const webhookSecret = (context: ServiceContext, commandEventId: string) =>
  context.deriveSecret(`webhook\n${commandEventId}`);

export const isUrlMessageRequest = (event: ClientEvent, botUserId: string): boolean =>
  event.type === URL_MESSAGE_REQUEST && event.sender === botUserId;

/** Sends a webhook's URL into the direct message room the bot made for it. */
export async function onUrlMessageRequest(
  event: ClientEvent,
  context: ServiceContext,
): Promise<void> {
  const command = String(event.content.command);
  const id = webhookSecret(context, command);
  const webhook = await findWebhook(context.data, id);
  await context.actions.sendNotice(
    event.room_id,
    webhook
      ? `Webhook ${webhook.name} of ${webhook.roomId}: POST to this URL to post there; keep it secret:\n${context.publicBaseUrl}/webhook/${id}`
      : "That webhook was removed before its URL could be sent.",
  );
}

/** Answers one `!webhook …` message in its room. */
export async function onWebhookCommand(event: ClientEvent, context: ServiceContext): Promise<void> {
  const { actions, data, homeserver, log } = context;
  const roomId = event.room_id;
  const reply = (text: string) => actions.sendNotice(roomId, text);
  const [, command = "help", name, ...rest] = String(event.content.body).trim().split(/\s+/);

  const level = await powerLevel(homeserver, roomId, event.sender);
  if (level < MODERATOR_LEVEL) {
    await reply(
      `Sorry ${event.sender}, only room moderators (power level ${MODERATOR_LEVEL} or more) can manage webhooks here.`,
    );
    return;
  }
  const spec = COMMANDS.get(command);
  if (!spec) {
    await reply(`Unknown command "${cleanName(command, 32)}". Try !webhook help.`);
    return;
  }
  const argumentsFit =
    rest.length === 0 && (spec.takesName ? name !== undefined && NAME.test(name) : !name);
  if (!argumentsFit) {
    await reply(`Usage: ${spec.usage}`);
    return;
  }
  switch (command) {
    case "new": {
      const webhookName = name as string;
      const id = webhookSecret(context, event.event_id);
      const outcome = await createWebhook(data, id, {
        roomId,
        name: webhookName,
        createdAt: event.origin_server_ts ?? Date.now(),
        createdBy: event.sender,
        commandEventId: event.event_id,
        userId: webhookUserId(context, roomId, webhookName),
      });
      if (outcome === "exists") {
        await reply(`This room already has a webhook named ${webhookName}: remove it first.`);
        return;
      }
      log.info("webhook created", { roomId, name: webhookName, by: event.sender });
      // The URL to its creator alone: whoever holds it posts here, so not every member should.
      await actions.createRoom({
        invite: [event.sender],
        isDirect: true,
        preset: "private_chat",
        name: `Webhook ${webhookName}`,
        topic: `The URL of webhook ${webhookName} of ${roomId}`,
        initialState: [
          { type: URL_MESSAGE_REQUEST, state_key: "", content: { command: event.event_id } },
        ],
      });
      await reply(
        `Webhook ${webhookName} created. I sent its URL to ${event.sender} in a direct message: accept my invite to read it.`,
      );
      return;
    }
    case "list": {
      const webhooks = await listWebhooks(data, roomId);
      await reply(
        webhooks.length === 0
          ? "This room has no webhooks. Create one with !webhook new <name>."
          : [
              "Webhooks in this room:",
              ...webhooks.map((w) => `• ${w.name} — created ${day(w.createdAt)} by ${w.createdBy}`),
            ].join("\n"),
      );
      return;
    }
    case "remove": {
      const removed = await removeWebhook(data, roomId, name as string);
      if (removed) log.info("webhook removed", { roomId, name, by: event.sender });
      await reply(
        removed
          ? `Webhook ${name} removed: its URL no longer works.`
          : `This room has no webhook named ${name}.`,
      );
      return;
    }
    case "help":
      await reply(HELP);
  }
}
