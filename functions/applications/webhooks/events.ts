import { type ApplicationEvents, isInviteOf } from "../../appservice/api.ts";
import {
  isUrlMessageRequest,
  isWebhookCommand,
  onUrlMessageRequest,
  onWebhookCommand,
} from "./webhooks/commands.ts";
import { noticeExpiries } from "./webhooks/expiry.ts";
import { deliverToOutboundWebhooks, outboundWebhooksOf } from "./webhooks/outbound.ts";
import { listWebhooks } from "./webhooks/store.ts";
import { WEBHOOK_USER_PREFIX } from "./webhooks/user.ts";

/**
 * What the events function runs: the bot joins the rooms it is invited to, answers `!ping` with
 * a `pong` notice and the `!webhook` commands. It never renders a webhook message, so markdown-it
 * and sanitize-html stay out of its bundle.
 */
export const application: ApplicationEvents = {
  async onEvent(event, context) {
    const { log, actions } = context;
    log.info("event received", {
      eventId: event.event_id,
      roomId: event.room_id,
      type: event.type,
      sender: event.sender,
    });
    if (isInviteOf(event, actions.botUserId)) {
      await actions.join(event.room_id);
      return;
    }
    if (isUrlMessageRequest(event, actions.botUserId)) {
      await onUrlMessageRequest(event, context);
      return;
    }
    // Never answer ourselves: the bot, or a webhook posting what looks like a command.
    const ours =
      event.sender === actions.botUserId || event.sender.startsWith(`@${WEBHOOK_USER_PREFIX}`);
    if (event.type !== "m.room.message" || ours) return;
    // No periodic trigger runs the application: a webhook's coming expiry is checked whenever
    // it is used and whenever someone writes in its room.
    // A notice is a bot's voice, never a command (the spec: bots must not answer notices), so
    // another bot's notice quoting "!webhook …" is not obeyed.
    const notice = event.content.msgtype === "m.notice";
    if (!notice && isWebhookCommand(event.content.body)) {
      // The bot's: never sent out (one may hold another webhook's URL). Its room's webhooks are
      // read once it is done, so that one it made with `--expires` is noticed at once.
      await onWebhookCommand(event, context);
      await noticeExpiries(context, await listWebhooks(context.data, event.room_id));
      return;
    }
    // Read at once; the actions still follow one another: deliveries, pong, expiry notices.
    const [outbound, webhooks] = await Promise.all([
      outboundWebhooksOf(event, context),
      listWebhooks(context.data, event.room_id),
    ]);
    await deliverToOutboundWebhooks(event, outbound, context);
    if (!notice && event.content.body === "!ping") await actions.sendNotice(event.room_id, "pong");
    await noticeExpiries(context, webhooks);
  },
  onEphemeral(event, { log }) {
    log.info("ephemeral event received", { type: event.type, roomId: event.room_id });
  },
  onToDevice(message, { log }) {
    log.info("to-device message received", { type: message.type, toUser: message.to_user_id });
  },
  onDeviceData(data, { log }) {
    log.info("device data received", { changed: data.deviceLists?.changed?.length ?? 0 });
  },
};
