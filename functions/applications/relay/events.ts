import {
  type ApplicationEvents,
  type ClientEvent,
  decryptAttachment,
  type EphemeralEvent,
  encryptedFileOf,
  imageInfo,
  isInviteOf,
  MediaTooLarge,
  type ServiceContext,
} from "../../appservice/api.ts";
import { mappedThing, RELAY_PREFIX, reactionRemoteId } from "./names.ts";

/** The largest image delivered to the remote side: its base64 must fit one queued delivery. */
export const MAX_DELIVERED_IMAGE_BYTES = 150 * 1024;

/** An image as the remote service takes it. */
interface RemoteImage {
  content_type: string;
  data: string;
}

/** The users typing in each portal that the remote service was last told of. */
const TYPING = "relay.typing";

/** The bot and the puppets: what they do never goes back to the remote service. */
const isOurs = (sender: string, botUserId: string) =>
  sender === botUserId || sender.startsWith(`@${RELAY_PREFIX}`);

const relation = (content: Record<string, unknown>) =>
  (content["m.relates_to"] ?? {}) as {
    rel_type?: unknown;
    event_id?: unknown;
    key?: unknown;
    "m.in_reply_to"?: { event_id?: unknown };
  };

/**
 * A reply's body without the quote older clients put before it (`> <@user> …` lines, then a
 * blank line): the remote side has `reply_to`, and Matrix 1.13 dropped the fallback.
 */
const withoutReplyFallback = (body: string) =>
  /^> /.test(body) ? body.replace(/^(?:>[^\n]*\n)+\n?/, "") : body;

/** Deliveries of one portal to the remote service, signed by the outbox, in the room's order. */
function portalDeliveries(
  context: ServiceContext,
  remoteUrl: string,
  roomId: string,
  channel: string,
) {
  const channelUrl = `${remoteUrl}/channels/${encodeURIComponent(channel)}`;
  return (method: "POST" | "PUT" | "DELETE", path: string, body?: Record<string, unknown>) =>
    context.actions.deliver(
      {
        method,
        url: `${channelUrl}${path}`,
        ...(body && {
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        }),
      },
      // Signed by the outbox when sent (RELAY_SECRET): the remote side checks it came from us.
      { orderedWith: roomId, signed: true },
    );
}

/**
 * The remote ID of `eventId` in the portal: the remote message (or reaction) it came from when
 * the relay sent it, else the event ID itself (a Matrix user's, delivered under it).
 */
async function remoteIdOf(context: ServiceContext, roomId: string, eventId: string) {
  const link = await context.messages(roomId).byMatrixId(eventId);
  return link ? mappedThing(link.remoteId).id : eventId;
}

/**
 * An image a Matrix user sent (its `url`, or in an encrypted room its `file`, decrypted here),
 * for the remote service; undefined when it is none to send.
 */
async function remoteImage(
  context: ServiceContext,
  content: Record<string, unknown>,
): Promise<RemoteImage | undefined> {
  const file = encryptedFileOf(content.file);
  const url = file?.url ?? content.url;
  if (typeof url !== "string") return undefined;
  // An image too large for one delivery, or no image by its bytes, goes as its text alone.
  const media = await context.homeserver
    .downloadMedia(url, { maxBytes: MAX_DELIVERED_IMAGE_BYTES })
    .catch((error: unknown) => {
      if (error instanceof MediaTooLarge) return undefined;
      throw error;
    });
  // A ciphertext that is not the one its `file` names decrypts to nothing.
  const bytes = media && (file ? decryptAttachment(media.bytes, file) : media.bytes);
  // Typed by its bytes, not by what the sender's client said: an SVG goes as its text alone.
  const type = bytes && imageInfo(bytes)?.mimetype;
  return bytes && type
    ? { content_type: type, data: Buffer.from(bytes).toString("base64") }
    : undefined;
}

/**
 * What a Matrix user does in a portal, for the remote service: a message (under its event ID,
 * with the remote ID of what it answers), an edit, a reaction, a redaction (of a message or of
 * a reaction). Nothing for anything else.
 */
async function relayOut(event: ClientEvent, context: ServiceContext, remoteUrl: string) {
  const { homeserver, portals } = context;
  const portal = await portals.byMatrixId(event.room_id);
  if (!portal) return;
  const deliver = portalDeliveries(context, remoteUrl, event.room_id, portal.remoteId);
  const { content } = event;
  const related = relation(content);
  const sender = { sender: event.sender };
  const map = context.messages(event.room_id);
  if (event.type === "m.reaction") {
    if (typeof related.event_id !== "string" || typeof related.key !== "string") return;
    // In the map too: its redaction is then told as the reaction's removal.
    await map.link(reactionRemoteId(event.event_id), event.event_id);
    await deliver("POST", "/reactions", {
      id: event.event_id,
      ...sender,
      message_id: await remoteIdOf(context, event.room_id, related.event_id),
      key: related.key,
    });
    return;
  }
  if (event.type === "m.room.redaction") {
    // Room version 11 moved `redacts` into the content.
    const redacts = content.redacts ?? (event as { redacts?: unknown }).redacts;
    if (typeof redacts !== "string") return;
    // Only what the portal's map knows: an event never bridged is nothing to the remote side.
    const link = await map.byMatrixId(redacts);
    if (!link) return;
    const { kind, id } = mappedThing(link.remoteId);
    await deliver(
      "DELETE",
      `/${kind === "reaction" ? "reactions" : "messages"}/${encodeURIComponent(id)}`,
    );
    return;
  }
  if (event.type !== "m.room.message") return;
  if (related.rel_type === "m.replace" && typeof related.event_id === "string") {
    const replacement = content["m.new_content"] as { body?: unknown } | undefined;
    if (typeof replacement?.body !== "string") return;
    const id = await remoteIdOf(context, event.room_id, related.event_id);
    await deliver("PUT", `/messages/${encodeURIComponent(id)}`, {
      ...sender,
      text: replacement.body,
    });
    return;
  }
  const { msgtype, body } = content;
  if (typeof body !== "string" || (msgtype !== "m.text" && msgtype !== "m.image")) return;
  const member = await homeserver.roomStateEvent(event.room_id, "m.room.member", event.sender);
  const displayName = (member?.content as { displayname?: unknown } | undefined)?.displayname;
  const image = msgtype === "m.image" && (await remoteImage(context, content));
  const replyTo = related["m.in_reply_to"]?.event_id;
  // Under its own ID in the map: a remote reply, edit or reaction naming it finds it.
  await map.link(event.event_id, event.event_id);
  await deliver("POST", "/messages", {
    id: event.event_id,
    ...sender,
    display_name: typeof displayName === "string" ? displayName : event.sender,
    text: msgtype === "m.image" && image ? "" : withoutReplyFallback(body),
    ...(typeof replyTo === "string" && {
      reply_to: await remoteIdOf(context, event.room_id, replyTo),
    }),
    ...(image && { image }),
  });
}

/**
 * Who types in a portal, for the remote service: the Matrix users typing (never the puppets),
 * delivered when that set changes.
 */
async function typingOut(event: EphemeralEvent, context: ServiceContext, remoteUrl: string) {
  const roomId = event.room_id;
  if (event.type !== "m.typing" || roomId === undefined) return;
  const portal = await context.portals.byMatrixId(roomId);
  if (!portal) return;
  const typing = Array.isArray(event.content.user_ids)
    ? event.content.user_ids.filter(
        (userId): userId is string =>
          typeof userId === "string" && !isOurs(userId, context.actions.botUserId),
      )
    : [];
  const users = [...new Set(typing)].sort();
  const last = await context.data.get(TYPING, roomId);
  if (JSON.stringify(last?.users ?? []) === JSON.stringify(users)) return;
  await portalDeliveries(
    context,
    remoteUrl,
    roomId,
    portal.remoteId,
  )("POST", "/typing", {
    user_ids: users,
  });
  // Last writer wins: the set is whole in each event, in the room's order.
  await context.data.write([{ collection: TYPING, key: roomId, value: { users } }]);
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
 * and delivers what Matrix users do in the portals (messages, edits, reactions, redactions,
 * typing) to the remote service.
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
      // The bot's and the puppets' own events never go back.
      if (isOurs(event.sender, actions.botUserId)) return;
      const body = event.content.body;
      const words =
        event.type === "m.room.message" && typeof body === "string" ? body.trim().split(/\s+/) : [];
      if (words[0] === "!relay") {
        await onCommand(event, words, context);
        return;
      }
      await relayOut(event, context, base);
    },
    onEphemeral: (event, context) => typingOut(event, context, base),
  };
}
