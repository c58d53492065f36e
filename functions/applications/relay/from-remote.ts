import {
  type Attachment,
  cleanName,
  imageInfo,
  MatrixError,
  roomIsEncrypted,
  type ServiceContext,
  sha256,
  uploadRoomMedia,
} from "../../appservice/api.ts";
import { imageRemoteId, RELAY_PREFIX, reactionRemoteId } from "./names.ts";

// What the remote service's requests do in Matrix, each once however often it is repeated: the
// actions are keyed by the request's identity (`withOrigin`), and a record of what was done
// stops the repeats that come after the queue's and the homeserver's deduplication windows.

/** A remote message as the routes checked and cleaned it. */
export interface RemoteMessage {
  id: string;
  user: string;
  /** Cleaned and bounded; the user's name when nothing is left. */
  display_name: string;
  /** Cleaned: no NUL, no other controls but tab and newlines, no lone surrogates. */
  text: string;
  /** Always a PNG, GIF, JPEG or WebP, typed by its bytes. */
  avatar?: Attachment;
  image?: Attachment;
  /** The remote message (or Matrix event ID) it answers. */
  reply_to?: string;
  /** When it was written, ms since the epoch: the Matrix events' `origin_server_ts`. */
  ts?: number;
}

const MAX_FILE_NAME = 255;
/**
 * How long a request that names a message waits for the message's event ID, when the message's
 * send is still queued (sent just before): past it, 503 and the remote service tries again.
 */
const SEND_WAIT_MS = 5_000;

/** Records the remote messages relayed, by channel and ID: `{roomId, user, text, deleted?}`. */
const MESSAGES = "relay.messages";
/** Records the remote reactions relayed, by channel and ID: `{roomId, user, removed?}`. */
const REACTIONS = "relay.reactions";

const recordKey = (channel: string, id: string) => sha256(`${channel}\n${id}`);

const serverOf = (userId: string) => userId.slice(userId.indexOf(":") + 1);
const puppetOf = (user: string, botUserId: string) =>
  `@${RELAY_PREFIX}${user}:${serverOf(botUserId)}`;

const notFound = (message: string) => new MatrixError(404, "M_NOT_FOUND", message);

/** The channel's portal room; 404 when the channel has never written. */
async function portalRoom({ portals }: ServiceContext, channel: string) {
  const portal = await portals.byRemoteId(channel);
  if (!portal) throw notFound(`No channel "${channel}" has written yet`);
  return portal.matrixId;
}

/**
 * The event ID of `remoteId` (a remote message's, or a Matrix event's the relay delivered) in
 * the portal: at once when the map has it; when the message was relayed and its send is still
 * queued, once the outbox has sent it (waiting up to `SEND_WAIT_MS`, then 503 to try again).
 * Undefined for a message the relay never saw.
 */
async function eventOf(
  context: ServiceContext,
  channel: string,
  roomId: string,
  remoteId: string,
): Promise<string | undefined> {
  const map = context.messages(roomId);
  const known = await map.eventIdOf(remoteId);
  if (known) return known;
  if (!(await context.data.get(MESSAGES, recordKey(channel, remoteId)))) return undefined;
  const sent = await map.eventIdOf(remoteId, SEND_WAIT_MS);
  if (sent) return sent;
  throw new MatrixError(
    503,
    "M_UNKNOWN",
    `Message ${JSON.stringify(remoteId)} is not in Matrix yet: try again`,
  );
}

/** The recorded message `id` of the channel; 404 when none was relayed. */
async function recordedMessage({ data }: ServiceContext, channel: string, id: string) {
  const record = await data.get(MESSAGES, recordKey(channel, id));
  if (!record) throw notFound(`No message ${JSON.stringify(id)} in "${channel}"`);
  return record as { roomId: string; user?: string; text?: string; deleted?: true };
}

/**
 * A remote file's message: an `m.image` with its type and size only when its bytes are a PNG, GIF,
 * JPEG or WebP, whatever its sender calls it; anything else (an SVG, HTML) an `m.file` uploaded as
 * `application/octet-stream`, which clients neither render inline nor run. Into an encrypted
 * portal the file is encrypted before its upload and named by `file`, as clients do.
 */
async function fileContent(
  { bytes, fileName }: Attachment,
  roomId: string,
  context: ServiceContext,
) {
  const { homeserver } = context;
  const image = imageInfo(bytes);
  const contentType = image?.mimetype ?? "application/octet-stream";
  const name = cleanName(fileName ?? "", MAX_FILE_NAME) || (image ? "image" : "file");
  const media = await uploadRoomMedia(
    homeserver,
    bytes,
    { contentType, fileName: name },
    await roomIsEncrypted(homeserver, roomId),
  );
  return {
    msgtype: image ? "m.image" : "m.file",
    body: name,
    filename: name,
    ...media,
    info: {
      mimetype: contentType,
      size: bytes.length,
      ...(image && { w: image.w, h: image.h }),
    },
  };
}

/** The portal of `channel`, made once (`createRoom` under the channel), linked, and announced as one. */
async function ensurePortal({ homeserver, portals }: ServiceContext, channel: string) {
  const roomId = await homeserver.createRoom(`relay:${channel}`, {
    alias: `${RELAY_PREFIX}${channel}`,
    name: channel,
    // Anyone may join by the alias, as the remote channel is open.
    preset: "public_chat",
    bridge: {
      protocol: { id: "relay", displayname: "Relay" },
      channel: { id: channel, displayname: channel },
    },
  });
  await portals.link(channel, roomId, { channel });
  return roomId;
}

/** `user`'s puppet, linked and made ready in the room (joined; its profile where given). */
async function readyPuppet(
  context: ServiceContext,
  user: string,
  roomId: string,
  profile: { displayName?: string; avatar?: Attachment & { contentType: string } } = {},
) {
  const { actions, homeserver, puppets } = context;
  const puppet = puppetOf(user, actions.botUserId);
  await puppets.link(user, puppet);
  const avatarUrl =
    profile.avatar &&
    (await homeserver.uploadMedia(profile.avatar.bytes, {
      contentType: profile.avatar.contentType,
    }));
  await homeserver.ensurePuppet(puppet, {
    ...(profile.displayName !== undefined && { displayName: profile.displayName }),
    ...(avatarUrl && { avatarUrl }),
    roomId,
  });
  return puppet;
}

/**
 * A remote message into its portal: the room made once, the author's puppet made ready (avatar
 * uploaded once), then the text (a reply when it answers a message the portal knows) and the
 * image sent as the puppet, with the remote time, each linked to the message in the portal's
 * message map once sent.
 */
export async function relayMessage(
  channel: string,
  message: RemoteMessage,
  context: ServiceContext,
) {
  const { actions, homeserver, data } = context;
  const key = recordKey(channel, message.id);
  if (await data.get(MESSAGES, key)) return;
  const roomId = await ensurePortal(context, channel);
  const puppet = await readyPuppet(context, message.user, roomId, {
    displayName: message.display_name,
    ...(message.avatar && { avatar: message.avatar as Attachment & { contentType: string } }),
  });
  const repliedTo =
    message.reply_to !== undefined
      ? await eventOf(context, channel, roomId, message.reply_to)
      : undefined;
  const keyed = actions.withOrigin(`relay:${key}`);
  const options = { as: puppet, ...(message.ts !== undefined && { ts: message.ts }) };
  if (message.text !== "") {
    const linked = { ...options, remoteId: message.id };
    if (repliedTo) {
      // The replied-to event's sender is mentioned: a Matrix user is told of the answer.
      const sender = (await homeserver.event(roomId, repliedTo))?.sender;
      await keyed.reply(
        roomId,
        { eventId: repliedTo, ...(sender && { sender }) },
        message.text,
        linked,
      );
    } else {
      await keyed.sendMessage(roomId, message.text, linked);
    }
  }
  if (message.image) {
    await keyed.sendEvent(
      roomId,
      "m.room.message",
      await fileContent(message.image, roomId, context),
      {
        ...options,
        remoteId: message.text === "" ? message.id : imageRemoteId(message.id),
      },
    );
  }
  await data.write([
    {
      collection: MESSAGES,
      key,
      value: { roomId, user: message.user, text: message.text },
      ifAbsent: true,
    },
  ]);
}

/**
 * An edit of message `id` by its author: an `m.replace` as the puppet. An edit to the text the
 * message has already (a repeat) does nothing; the record holds the text now shown.
 */
export async function relayEdit(
  channel: string,
  id: string,
  edit: { user: string; text: string },
  context: ServiceContext,
) {
  const record = await recordedMessage(context, channel, id);
  if (record.deleted) throw notFound(`Message ${JSON.stringify(id)} was deleted`);
  if (record.user !== undefined && record.user !== edit.user) {
    throw new MatrixError(403, "M_FORBIDDEN", "Only a message's author edits it");
  }
  if (record.text === edit.text) return;
  if (record.text === "") throw notFound(`Message ${JSON.stringify(id)} has no text to edit`);
  const eventId = await eventOf(context, channel, record.roomId, id);
  if (!eventId) throw notFound(`No message ${JSON.stringify(id)} in "${channel}"`);
  const puppet = puppetOf(edit.user, context.actions.botUserId);
  await context.actions
    .withOrigin(`relay-edit:${sha256(`${channel}\n${id}\n${record.text}\n${edit.text}`)}`)
    .edit(record.roomId, eventId, edit.text, { as: puppet });
  // A racing repeat wrote it first: it asked for the same edit, deduplicated.
  await context.data.write([
    {
      collection: MESSAGES,
      key: recordKey(channel, id),
      value: { ...record, text: edit.text },
      ifEquals: record,
    },
  ]);
}

/**
 * A deletion of message `id`: its events (text, image) redacted by the author's puppet, or by
 * the bot, with the remote user named, when another user deletes it (a remote moderator).
 */
export async function relayDeletion(
  channel: string,
  id: string,
  user: string,
  context: ServiceContext,
) {
  const record = await recordedMessage(context, channel, id);
  if (record.deleted) return;
  const map = context.messages(record.roomId);
  const events = [
    await eventOf(context, channel, record.roomId, id),
    await map.eventIdOf(imageRemoteId(id)),
  ].filter((eventId) => eventId !== undefined);
  const keyed = context.actions.withOrigin(`relay-delete:${recordKey(channel, id)}`);
  const byAuthor = record.user === undefined || record.user === user;
  // Redactions are never encrypted (`/redact` has no encrypted form): an encrypted portal's
  // would show the homeserver who deleted, so the reason is left out there.
  const named =
    !byAuthor && !(await roomIsEncrypted(context.homeserver, record.roomId))
      ? { reason: `deleted by ${user}` }
      : {};
  for (const eventId of events) {
    await keyed.redact(
      record.roomId,
      eventId,
      byAuthor ? { as: puppetOf(user, context.actions.botUserId) } : named,
    );
  }
  await context.data.write([
    {
      collection: MESSAGES,
      key: recordKey(channel, id),
      value: { ...record, deleted: true },
      ifEquals: record,
    },
  ]);
}

/** A remote reaction: an `m.annotation` of its message as the puppet, linked to the reaction's ID. */
export async function relayReaction(
  channel: string,
  reaction: { id: string; user: string; message_id: string; key: string },
  context: ServiceContext,
) {
  const key = recordKey(channel, reaction.id);
  if (await context.data.get(REACTIONS, key)) return;
  const roomId = await portalRoom(context, channel);
  const eventId = await eventOf(context, channel, roomId, reaction.message_id);
  if (!eventId) throw notFound(`No message ${JSON.stringify(reaction.message_id)} in "${channel}"`);
  const puppet = await readyPuppet(context, reaction.user, roomId);
  await context.actions
    .withOrigin(`relay-reaction:${key}`)
    .react(roomId, eventId, reaction.key, { as: puppet, remoteId: reactionRemoteId(reaction.id) });
  await context.data.write([
    {
      collection: REACTIONS,
      key,
      value: { roomId, user: reaction.user },
      ifAbsent: true,
    },
  ]);
}

/** A remote reaction taken back: its event redacted by the puppet that reacted. */
export async function relayUnreaction(channel: string, id: string, context: ServiceContext) {
  const key = recordKey(channel, id);
  const record = (await context.data.get(REACTIONS, key)) as
    | { roomId: string; user: string; removed?: true }
    | undefined;
  if (!record) throw notFound(`No reaction ${JSON.stringify(id)} in "${channel}"`);
  if (record.removed) return;
  const map = context.messages(record.roomId);
  const eventId = await map.eventIdOf(reactionRemoteId(id), SEND_WAIT_MS);
  if (!eventId) {
    throw new MatrixError(
      503,
      "M_UNKNOWN",
      `Reaction ${JSON.stringify(id)} is not in Matrix yet: try again`,
    );
  }
  await context.actions
    .withOrigin(`relay-unreaction:${key}`)
    .unreact(record.roomId, eventId, { as: puppetOf(record.user, context.actions.botUserId) });
  await context.data.write([
    { collection: REACTIONS, key, value: { ...record, removed: true }, ifEquals: record },
  ]);
}

/** A remote user typing, or no longer: the puppet's typing notification in the portal. */
export async function relayTyping(
  channel: string,
  typing: { user: string; typing: boolean },
  context: ServiceContext,
) {
  const roomId = await portalRoom(context, channel);
  const puppet = await readyPuppet(context, typing.user, roomId);
  await context.actions.setTyping(roomId, typing.typing, { as: puppet });
}
