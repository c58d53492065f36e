import {
  type ApplicationRoutes,
  type Attachment,
  badJson,
  base64Attachment,
  MatrixError,
  parseJson,
  type ServiceContext,
  sha256,
} from "../appservice/api.ts";
import { RELAY_PREFIX } from "./names.ts";

/** Channel and user names as the remote service writes them: lower-case, localpart-safe. */
const NAME = /^[a-z0-9._=-]{1,64}$/;
/** A remote message ID: any text of reasonable length. */
const MAX_ID_LENGTH = 200;
/** The largest request the remote service may send (an image and an avatar, base64). */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

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

/** What the app function runs: the remote service's `POST /relay/{channel}/messages`. */
export const application: ApplicationRoutes = {
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
};
