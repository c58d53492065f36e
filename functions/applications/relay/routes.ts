import {
  type ApplicationRoutes,
  type AppResponse,
  type Attachment,
  type BucketPolicy,
  badJson,
  base64Attachment,
  cleanName,
  cleanText,
  imageInfo,
  MatrixError,
  parseJson,
  type ServiceContext,
  sha256,
  takeBucketToken,
} from "../../appservice/api.ts";
import { RELAY_PREFIX } from "./names.ts";

/** Channel and user names as the remote service writes them: lower-case, localpart-safe. */
const NAME = /^[a-z0-9._=-]{1,64}$/;
/** A remote message ID: any text of reasonable length. */
const MAX_ID_LENGTH = 200;
/** The largest request the remote service may send (an image and an avatar, base64). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** A puppet's display name, cleaned and cut to this many characters (as the webhooks'). */
export const MAX_DISPLAY_NAME = 256;
const MAX_FILE_NAME = 255;
/**
 * Each channel's messages: a conversation's bursts pass, a flood is held to one a second in its
 * own portal, leaving the homeserver to the other channels.
 */
export const CHANNEL_RATE: BucketPolicy = { perSecond: 1, burst: 20 };
/** New portals (public rooms) for all channels together: 10 a minute. */
export const NEW_PORTAL_RATE: BucketPolicy = { perSecond: 10 / 60, burst: 10 };
// In the application's data, so that every Lambda instance draws from the same buckets.
const CHANNEL_BUCKETS = "relay.channel-rate";
const PORTAL_BUCKETS = "relay.portal-rate";

/** What the remote service posts. */
interface RemoteMessage {
  id: string;
  user: string;
  /** Cleaned and bounded; the user's name when nothing is left. */
  display_name: string;
  /** Cleaned: no NUL, no other controls but tab and newlines, no lone surrogates. */
  text: string;
  /** Always a PNG, GIF, JPEG or WebP, typed by its bytes. */
  avatar?: Attachment;
  image?: Attachment;
}

const invalid = (message: string) => new MatrixError(400, "M_INVALID_PARAM", message);

function parseMessage(body: string): RemoteMessage {
  const json = parseJson(body, "The body is not JSON");
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
  // The sender's content type is not trusted: an SVG or HTML "avatar" is no picture to set.
  const avatarType = avatarAttachment && imageInfo(avatarAttachment.bytes)?.mimetype;
  if (avatarAttachment && !avatarType) {
    throw badJson("avatar must be a PNG, GIF, JPEG or WebP image");
  }
  const imageAttachment = base64Attachment(image, "image");
  return {
    id,
    user,
    display_name: cleanName(display_name, MAX_DISPLAY_NAME) || user,
    text: cleanText(text),
    ...(avatarAttachment &&
      avatarType && { avatar: { ...avatarAttachment, contentType: avatarType } }),
    ...(imageAttachment && { image: imageAttachment }),
  };
}

const serverOf = (userId: string) => userId.slice(userId.indexOf(":") + 1);
const puppetOf = (user: string, server: string) => `@${RELAY_PREFIX}${user}:${server}`;

/**
 * A remote file's message: an `m.image` with its type and size only when its bytes are a PNG, GIF,
 * JPEG or WebP, whatever its sender calls it; anything else (an SVG, HTML) an `m.file` uploaded as
 * `application/octet-stream`, which clients neither render inline nor run.
 */
async function fileContent({ bytes, fileName }: Attachment, context: ServiceContext) {
  const image = imageInfo(bytes);
  const contentType = image?.mimetype ?? "application/octet-stream";
  const name = cleanName(fileName ?? "", MAX_FILE_NAME) || (image ? "image" : "file");
  const url = await context.homeserver.uploadMedia(bytes, { contentType, fileName: name });
  return {
    msgtype: image ? "m.image" : "m.file",
    body: name,
    filename: name,
    url,
    info: {
      mimetype: contentType,
      size: bytes.length,
      ...(image && { w: image.w, h: image.h }),
    },
  };
}

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
    await keyed.sendEvent(roomId, "m.room.message", await fileContent(message.image, context), {
      as: puppet,
    });
  }
  await data.write([{ collection: MESSAGES, key, value: { roomId }, ifAbsent: true }]);
}

/** 429 `M_LIMIT_EXCEEDED`, with when to try again. */
const limited = (error: string, retryAfterMs: number): AppResponse => ({
  status: 429,
  headers: { "retry-after": String(Math.ceil(retryAfterMs / 1000)) },
  body: { errcode: "M_LIMIT_EXCEEDED", error, retry_after_ms: retryAfterMs },
});

/**
 * What the app function runs: the remote service's `POST /relay/{channel}/messages`, signed with
 * the secret shared with it (`RELAY_SECRET`), before anything is read or created.
 */
export const application: ApplicationRoutes = {
  routes: [
    {
      method: "POST",
      path: "/relay/{channel}/messages",
      maxBodyBytes: MAX_BODY_BYTES,
      async handle(request, context) {
        if (!context.remoteSignatureValid(request)) {
          throw new MatrixError(
            401,
            "M_UNKNOWN_TOKEN",
            "The request is not signed with the relay's secret within the last 5 minutes",
          );
        }
        const channel = request.pathParameters.channel ?? "";
        if (!NAME.test(channel)) {
          throw invalid("The channel must be 1 to 64 of a-z, 0-9, '.', '_', '=', '-'");
        }
        const message = parseMessage(request.body);
        const { data, portals } = context;
        // The portal cap first: a new channel it refuses spends none of the channel's tokens.
        if (!(await portals.byRemoteId(channel))) {
          const portalWait = await takeBucketToken(data, PORTAL_BUCKETS, "new", NEW_PORTAL_RATE);
          if (portalWait !== undefined) return limited("Too many new channels", portalWait);
        }
        const channelWait = await takeBucketToken(data, CHANNEL_BUCKETS, channel, CHANNEL_RATE);
        if (channelWait !== undefined) {
          return limited("Too many messages in this channel", channelWait);
        }
        await relayIn(channel, message, context);
        return { status: 202, body: {} };
      },
    },
  ],
};
