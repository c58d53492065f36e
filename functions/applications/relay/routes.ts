import {
  type ApplicationRoutes,
  type AppRequest,
  type AppResponse,
  type AppRoute,
  type BucketPolicy,
  badJson,
  base64Attachment,
  cleanName,
  cleanText,
  imageInfo,
  MatrixError,
  parseJson,
  type ServiceContext,
  takeBucketToken,
} from "../../appservice/api.ts";
import {
  type RemoteMessage,
  relayDeletion,
  relayEdit,
  relayMessage,
  relayReaction,
  relayTyping,
  relayUnreaction,
} from "./from-remote.ts";

/** Channel and user names as the remote service writes them: lower-case, localpart-safe. */
const NAME = /^[a-z0-9._=-]{1,64}$/;
/** A remote message or reaction ID: 1 to 200 characters, none a control character. */
const ID = /^[^\p{Cc}]{1,200}$/u;
/** The largest request the remote service may send (an image and an avatar, base64). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;
/** The largest request without a file (an edit, a reaction, typing). */
const MAX_SMALL_BODY_BYTES = 64 * 1024;
/** A puppet's display name, cleaned and cut to this many characters (as the webhooks'). */
export const MAX_DISPLAY_NAME = 256;
/** A reaction's key (an emoji, typically), at most this many characters. */
const MAX_REACTION_KEY = 64;
/**
 * Each channel's messages, edits, deletions and reactions: a conversation's bursts pass, a flood
 * is held to one a second in its own portal, leaving the homeserver to the other channels.
 */
export const CHANNEL_RATE: BucketPolicy = { perSecond: 1, burst: 20 };
/** New portals (public rooms) for all channels together: 10 a minute. */
export const NEW_PORTAL_RATE: BucketPolicy = { perSecond: 10 / 60, burst: 10 };
// In the application's data, so that every Lambda instance draws from the same buckets.
const CHANNEL_BUCKETS = "relay.channel-rate";
const PORTAL_BUCKETS = "relay.portal-rate";

const invalid = (message: string) => new MatrixError(400, "M_INVALID_PARAM", message);

/** The body as a JSON object. */
function jsonObject(body: string): Record<string, unknown> {
  const json = parseJson(body, "The body is not JSON");
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw badJson("The body must be a JSON object");
  }
  return json as Record<string, unknown>;
}

const id = (value: unknown, field: string) => {
  if (typeof value !== "string" || !ID.test(value)) {
    throw badJson(`${field} must be 1 to 200 characters, none a control character`);
  }
  return value;
};
const user = (value: unknown) => {
  if (typeof value !== "string" || !NAME.test(value)) {
    throw badJson("user must be 1 to 64 of a-z, 0-9, '.', '_', '=', '-'");
  }
  return value;
};
const text = (value: unknown, field = "text") => {
  if (typeof value !== "string") throw badJson(`${field} must be a string`);
  return cleanText(value);
};

function parseMessage(body: string): RemoteMessage {
  const {
    id: messageId,
    user: author,
    display_name,
    text: written,
    avatar,
    image,
    reply_to,
    ts,
  } = jsonObject(body);
  if (display_name !== undefined && typeof display_name !== "string") {
    throw badJson("display_name must be a string");
  }
  if (ts !== undefined && !(Number.isSafeInteger(ts) && (ts as number) > 0)) {
    throw badJson("ts must be a time in milliseconds since the epoch");
  }
  const avatarAttachment = base64Attachment(avatar, "avatar");
  // The sender's content type is not trusted: an SVG or HTML "avatar" is no picture to set.
  const avatarType = avatarAttachment && imageInfo(avatarAttachment.bytes)?.mimetype;
  if (avatarAttachment && !avatarType) {
    throw badJson("avatar must be a PNG, GIF, JPEG or WebP image");
  }
  const imageAttachment = base64Attachment(image, "image");
  const message = {
    id: id(messageId, "id"),
    user: user(author),
    text: written === undefined ? "" : text(written),
  };
  if (message.text === "" && !imageAttachment) throw badJson("A message needs a text or an image");
  return {
    ...message,
    display_name: cleanName(display_name ?? "", MAX_DISPLAY_NAME) || message.user,
    ...(avatarAttachment &&
      avatarType && { avatar: { ...avatarAttachment, contentType: avatarType } }),
    ...(imageAttachment && { image: imageAttachment }),
    ...(reply_to !== undefined && { reply_to: id(reply_to, "reply_to") }),
    ...(ts !== undefined && { ts: ts as number }),
  };
}

/** 429 `M_LIMIT_EXCEEDED`, with when to try again. */
const limited = (error: string, retryAfterMs: number): AppResponse => ({
  status: 429,
  headers: { "retry-after": String(Math.ceil(retryAfterMs / 1000)) },
  body: { errcode: "M_LIMIT_EXCEEDED", error, retry_after_ms: retryAfterMs },
});

/** How a route's request spends the channel's tokens: none, or the new-portal cap first. */
type RateLimit = "none" | "channel" | "channel or new portal";

/**
 * A route of the remote service's: its request signed with the secret shared with it
 * (`RELAY_SECRET`) and its channel a name, checked before anything is read or created; then,
 * past the rate limits, `handle` does the work and the answer is 202.
 */
function remoteRoute(
  method: AppRoute["method"],
  path: string,
  rateLimit: RateLimit,
  handle: (channel: string, request: AppRequest, context: ServiceContext) => Promise<void>,
  maxBodyBytes = MAX_SMALL_BODY_BYTES,
): AppRoute {
  return {
    method,
    path,
    maxBodyBytes,
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
      const { data, portals } = context;
      // The portal cap first: a new channel it refuses spends none of the channel's tokens.
      if (rateLimit === "channel or new portal" && !(await portals.byRemoteId(channel))) {
        const portalWait = await takeBucketToken(data, PORTAL_BUCKETS, "new", NEW_PORTAL_RATE);
        if (portalWait !== undefined) return limited("Too many new channels", portalWait);
      }
      if (rateLimit !== "none") {
        const channelWait = await takeBucketToken(data, CHANNEL_BUCKETS, channel, CHANNEL_RATE);
        if (channelWait !== undefined) {
          return limited("Too many messages in this channel", channelWait);
        }
      }
      await handle(channel, request, context);
      return { status: 202, body: {} };
    },
  };
}

/** The `{id}` of a route's path, checked as IDs are. */
const pathId = (request: AppRequest) => id(request.pathParameters.id, "The path's id");

/**
 * What the app function runs: the remote service's messages, edits, deletions, reactions and
 * typing, each signed with the secret shared with it (`RELAY_SECRET`).
 */
export const application: ApplicationRoutes = {
  routes: [
    remoteRoute(
      "POST",
      "/relay/{channel}/messages",
      "channel or new portal",
      (channel, request, context) => relayMessage(channel, parseMessage(request.body), context),
      MAX_BODY_BYTES,
    ),
    remoteRoute("PUT", "/relay/{channel}/messages/{id}", "channel", (channel, request, context) => {
      const body = jsonObject(request.body);
      const edit = { user: user(body.user), text: text(body.text) };
      if (edit.text === "") throw badJson("text must not be empty");
      return relayEdit(channel, pathId(request), edit, context);
    }),
    remoteRoute(
      "DELETE",
      "/relay/{channel}/messages/{id}",
      "channel",
      (channel, request, context) =>
        relayDeletion(channel, pathId(request), user(jsonObject(request.body).user), context),
    ),
    remoteRoute("POST", "/relay/{channel}/reactions", "channel", (channel, request, context) => {
      const body = jsonObject(request.body);
      const key = text(body.key, "key");
      if (key === "" || key.length > MAX_REACTION_KEY) {
        throw badJson(`key must be 1 to ${MAX_REACTION_KEY} characters`);
      }
      return relayReaction(
        channel,
        {
          id: id(body.id, "id"),
          user: user(body.user),
          message_id: id(body.message_id, "message_id"),
          key,
        },
        context,
      );
    }),
    remoteRoute(
      "DELETE",
      "/relay/{channel}/reactions/{id}",
      "channel",
      (channel, request, context) => relayUnreaction(channel, pathId(request), context),
    ),
    remoteRoute("POST", "/relay/{channel}/typing", "none", (channel, request, context) => {
      const body = jsonObject(request.body);
      if (typeof body.typing !== "boolean") throw badJson("typing must be true or false");
      return relayTyping(channel, { user: user(body.user), typing: body.typing }, context);
    }),
  ],
};
