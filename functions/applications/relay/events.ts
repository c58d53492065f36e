import {
  type ApplicationEvents,
  type ClientEvent,
  imageInfo,
  isInviteOf,
  MediaTooLarge,
  type ServiceContext,
} from "../../appservice/api.ts";
import { RELAY_PREFIX } from "./names.ts";

/** The largest image delivered to the remote side: its base64 must fit one queued delivery. */
export const MAX_DELIVERED_IMAGE_BYTES = 150 * 1024;

/** An image as the remote service takes it. */
interface RemoteImage {
  content_type: string;
  data: string;
}

/** The bot and the puppets: their own messages never go back to the remote service. */
const isOurs = (event: ClientEvent, botUserId: string) =>
  event.sender === botUserId || event.sender.startsWith(`@${RELAY_PREFIX}`);

/** A Matrix user's message in a portal, for the remote service; undefined for any other. */
async function relayOut(event: ClientEvent, context: ServiceContext, remoteUrl: string) {
  const { actions, homeserver, portals } = context;
  const { msgtype, body, url } = event.content as Record<string, unknown>;
  if (typeof body !== "string" || (msgtype !== "m.text" && msgtype !== "m.image")) return;
  const portal = await portals.byMatrixId(event.room_id);
  if (!portal) return;
  const member = await homeserver.roomStateEvent(event.room_id, "m.room.member", event.sender);
  const displayName = (member?.content as { displayname?: unknown } | undefined)?.displayname;
  let image: RemoteImage | undefined;
  if (msgtype === "m.image" && typeof url === "string") {
    // An image too large for one delivery, or no image by its bytes, goes as its text alone.
    const media = await homeserver
      .downloadMedia(url, { maxBytes: MAX_DELIVERED_IMAGE_BYTES })
      .catch((error: unknown) => {
        if (error instanceof MediaTooLarge) return undefined;
        throw error;
      });
    // Typed by its bytes, not by what the sender's client said: an SVG goes as its text alone.
    const type = media && imageInfo(media.bytes)?.mimetype;
    if (media && type) {
      image = { content_type: type, data: Buffer.from(media.bytes).toString("base64") };
    }
  }
  await actions.deliver(
    {
      method: "POST",
      url: `${remoteUrl}/channels/${encodeURIComponent(portal.remoteId)}/messages`,
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        sender: event.sender,
        display_name: typeof displayName === "string" ? displayName : event.sender,
        text: msgtype === "m.image" && image ? "" : body,
        ...(image && { image }),
      }),
    },
    // Signed by the outbox when sent (RELAY_SECRET): the remote side checks it came from us.
    { orderedWith: event.room_id, signed: true },
  );
}

/** `!relay invite <channel>`, in any room with the bot: invites the sender to the portal. */
async function onCommand(event: ClientEvent, words: string[], context: ServiceContext) {
  const { actions, portals } = context;
  const [, command, channel] = words;
  if (command !== "invite" || !channel) {
    await actions.sendNotice(event.room_id, "Usage: !relay invite <channel>");
    return;
  }
  const portal = await portals.byRemoteId(channel);
  if (!portal) {
    await actions.sendNotice(event.room_id, `No channel "${channel}" has written yet.`);
    return;
  }
  await actions.invite(portal.matrixId, event.sender);
  await actions.sendNotice(event.room_id, `Invited you to #${RELAY_PREFIX}${channel}.`);
}

export interface RelayOptions {
  /** The remote service's base URL (no trailing slash). */
  remoteUrl: string;
}

/**
 * What the events function runs: the bot joins the rooms it is invited to, answers `!relay`
 * and delivers what Matrix users write in the portals to the remote service.
 */
export function relayEvents({ remoteUrl }: RelayOptions): ApplicationEvents {
  const base = remoteUrl.replace(/\/+$/, "");
  return {
    async onEvent(event, context) {
      const { actions } = context;
      if (isInviteOf(event, actions.botUserId)) {
        await actions.join(event.room_id);
        return;
      }
      // The bot's and the puppets' own messages never go back.
      if (event.type !== "m.room.message" || isOurs(event, actions.botUserId)) return;
      const body = event.content.body;
      const words = typeof body === "string" ? body.trim().split(/\s+/) : [];
      if (words[0] === "!relay") {
        await onCommand(event, words, context);
        return;
      }
      await relayOut(event, context, base);
    },
  };
}
