import type { Application, Attachment, ClientEvent, ServiceContext } from "../appservice/api.ts";
import {
  badJson,
  base64Attachment,
  isInviteOf,
  MatrixError,
  MediaTooLarge,
  notJson,
  sha256,
} from "../appservice/api.ts";

/**
 * "relay": a bridge to a toy remote chat service, the bridge kit's worked example (README,
 * docs/bridge.md). A remote channel is a portal room `#_relay_<channel>:<server>`; a remote user
 * is a puppet `@_relay_<user>:<server>`. The remote service posts its messages to
 * `POST /relay/{channel}/messages`; what Matrix users write in a portal is delivered to
 * `POST {remoteUrl}/channels/{channel}/messages` through the outbound queue.
 */

export const RELAY_PREFIX = "_relay_";
/** Channel and user names as the remote service writes them: lower-case, localpart-safe. */
const NAME = /^[a-z0-9._=-]{1,64}$/;
/** A remote message ID: any text of reasonable length. */
const MAX_ID_LENGTH = 200;
/** The largest image delivered to the remote side: its base64 must fit one queued delivery. */
export const MAX_DELIVERED_IMAGE_BYTES = 150 * 1024;
/** The largest request the remote service may send (an image and an avatar, base64). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

/** An image as the remote service takes it. */
interface RemoteImage {
  content_type: string;
  data: string;
}

/** What the remote service posts. */
interface RemoteMessage {
  id: string;
  user: string;
  display_name: string;
  text: string;
  avatar?: Attachment;
  image?: Attachment;
}

const invalid = (message: string) => new MatrixError(400, "M_INVALID_PARAM", message);

function parseMessage(body: string): RemoteMessage {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw notJson("The body is not JSON");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw badJson("The body must be a JSON object");
  }
  const { id, user, display_name, text, avatar, image } = json as Record<string, unknown>;
  if (typeof id !== "string" || id === "" || id.length > MAX_ID_LENGTH) {
    throw badJson(`id must be a string of 1 to ${MAX_ID_LENGTH} characters`);
  }
  if (typeof user !== "string" || !NAME.test(user)) {
    throw badJson("user must be 1 to 64 of a-z, 0-9, '.', '_', '=', '-'");
  }
  if (typeof display_name !== "string") throw badJson("display_name must be a string");
  if (typeof text !== "string") throw badJson("text must be a string");
  const avatarAttachment = base64Attachment(avatar, "avatar");
  const imageAttachment = base64Attachment(image, "image");
  return {
    id,
    user,
    display_name,
    text,
    ...(avatarAttachment && { avatar: avatarAttachment }),
    ...(imageAttachment && { image: imageAttachment }),
  };
}

const serverOf = (userId: string) => userId.slice(userId.indexOf(":") + 1);
const puppetOf = (user: string, server: string) => `@${RELAY_PREFIX}${user}:${server}`;
const isOurs = (sender: string, botUserId: string) =>
  sender === botUserId || sender.startsWith(`@${RELAY_PREFIX}`);

/** Records the remote messages already relayed, by channel and ID. */
const MESSAGES = "relay.messages";

/**
 * A remote message into its portal: the room made once (`homeserver.createRoom` under the
 * channel), the author's puppet made ready (avatar uploaded once: the same bytes give the same
 * URI), then the text and the image sent as the puppet under actions keyed by the message, so a
 * repeat after a crash asks for the same sends, and the record stops any later repeat.
 */
async function relayIn(channel: string, message: RemoteMessage, context: ServiceContext) {
  const { actions, homeserver, portals, puppets, data } = context;
  const key = sha256(`${channel}\n${message.id}`);
  if (await data.get(MESSAGES, key)) return;
  const server = serverOf(actions.botUserId);
  const roomId = await homeserver.createRoom(`relay:${channel}`, {
    alias: `${RELAY_PREFIX}${channel}`,
    name: channel,
    // Anyone may join by the alias, as the remote channel is open.
    preset: "public_chat",
  });
  await portals.link(channel, roomId, { channel });
  const puppet = puppetOf(message.user, server);
  await puppets.link(message.user, puppet);
  const avatarUrl =
    message.avatar &&
    (await homeserver.uploadMedia(message.avatar.bytes, {
      contentType: message.avatar.contentType,
    }));
  await homeserver.ensurePuppet(puppet, {
    displayName: message.display_name,
    ...(avatarUrl && { avatarUrl }),
    roomId,
  });
  const keyed = actions.withOrigin(`relay:${key}`);
  if (message.text !== "") await keyed.sendMessage(roomId, message.text, { as: puppet });
  if (message.image) {
    const { bytes, contentType } = message.image;
    const url = await homeserver.uploadMedia(bytes, { contentType });
    await keyed.sendEvent(
      roomId,
      "m.room.message",
      {
        msgtype: "m.image",
        body: "image",
        url,
        info: { mimetype: contentType, size: bytes.length },
      },
      { as: puppet },
    );
  }
  await data.write([{ collection: MESSAGES, key, value: { roomId }, ifAbsent: true }]);
}

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
    // An image too large for one delivery goes as its text alone.
    const media = await homeserver
      .downloadMedia(url, { maxBytes: MAX_DELIVERED_IMAGE_BYTES })
      .catch((error: unknown) => {
        if (error instanceof MediaTooLarge) return undefined;
        throw error;
      });
    if (media) {
      image = {
        content_type: media.contentType ?? "application/octet-stream",
        data: Buffer.from(media.bytes).toString("base64"),
      };
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
    { orderedWith: event.room_id },
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

export function createRelay({ remoteUrl }: RelayOptions): Application {
  const base = remoteUrl.replace(/\/+$/, "");
  return {
    async onEvent(event, context) {
      const { actions } = context;
      if (isInviteOf(event, actions.botUserId)) {
        await actions.join(event.room_id);
        return;
      }
      // The bot's and the puppets' own messages never go back.
      if (event.type !== "m.room.message" || isOurs(event.sender, actions.botUserId)) return;
      const body = event.content.body;
      const words = typeof body === "string" ? body.trim().split(/\s+/) : [];
      if (words[0] === "!relay") {
        await onCommand(event, words, context);
        return;
      }
      await relayOut(event, context, base);
    },
    routes: [
      {
        method: "POST",
        path: "/relay/{channel}/messages",
        maxBodyBytes: MAX_BODY_BYTES,
        async handle(request, context) {
          const channel = request.pathParameters.channel ?? "";
          if (!NAME.test(channel)) {
            throw invalid("The channel must be 1 to 64 of a-z, 0-9, '.', '_', '=', '-'");
          }
          await relayIn(channel, parseMessage(request.body), context);
          return { status: 202, body: {} };
        },
      },
    ],
    userPrefixes: [RELAY_PREFIX],
    aliasPrefixes: [RELAY_PREFIX],
  };
}
