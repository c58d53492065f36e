import type { ServiceContext } from "../../appservice/application.ts";
import type { ClientEvent } from "../../appservice/transaction.ts";
import { MODERATOR_LEVEL, powerLevel } from "./moderators.ts";
import { createWebhook, listWebhooks, removeWebhook } from "./store.ts";

/** Webhook names become user localparts (`@_webhook_<name>`): the characters those allow. */
const NAME = /^[a-z0-9._=-]{1,32}$/;

const HELP = [
  "Webhooks post messages into this room from anywhere that can make an HTTP request.",
  "!webhook new <name> — create one; I answer with its secret URL",
  "!webhook list — the webhooks of this room",
  "!webhook remove <name> — delete one; its URL stops working at once",
  'POST JSON {"text": "…", "username"?: "…", "html"?: "…"} or plain text to the URL.',
  "Only room moderators (power level 50 or more) can use these commands.",
].join("\n");

export const isWebhookCommand = (body: unknown): body is string =>
  typeof body === "string" && /^!webhook(\s|$)/.test(body);

const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

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
  switch (command) {
    case "new": {
      if (!name || rest.length > 0 || !NAME.test(name)) {
        await reply(
          "Usage: !webhook new <name> — a name of 1 to 32 characters among a-z 0-9 . _ = -",
        );
        return;
      }
      // Derived from the command itself: a re-run of this handler hands out the same URL.
      const id = context.deriveSecret(`webhook\n${event.event_id}`);
      const outcome = await createWebhook(data, id, {
        roomId,
        name,
        createdAt: event.origin_server_ts ?? Date.now(),
        createdBy: event.sender,
        commandEventId: event.event_id,
      });
      if (outcome === "exists") {
        await reply(`This room already has a webhook named ${name}: remove it first.`);
        return;
      }
      log.info("webhook created", { roomId, name, by: event.sender });
      await reply(
        `Webhook ${name} created. POST to this URL to post here; keep it secret:\n${context.publicBaseUrl}/webhook/${id}`,
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
      if (!name) {
        await reply("Usage: !webhook remove <name>");
        return;
      }
      const removed = await removeWebhook(data, roomId, name);
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
      return;
    default:
      await reply(`Unknown command "${command}". Try !webhook help.`);
  }
}
