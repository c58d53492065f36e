import {
  type AppRequest,
  type AppResponse,
  type AppRoute,
  badJson,
  MatrixError,
  notJson,
  type ServiceContext,
  tooLarge,
} from "../../appservice/api.ts";
import { takeToken } from "./rate-limit.ts";
import { findWebhook, webhookKey } from "./store.ts";
import { cleanName, cleanText } from "./text.ts";
import { WEBHOOK_USER_PREFIX, webhookUserId } from "./user.ts";

export { WEBHOOK_USER_PREFIX, webhookUserId };

/** The largest webhook body taken: room for the text and its HTML in one 64 KiB Matrix event. */
export const WEBHOOK_MAX_BODY_BYTES = 16 * 1024;
// Matrix events are at most 65,536 bytes with their envelope.
const MAX_CONTENT_BYTES = 60_000;
const MAX_DISPLAY_NAME = 256;
/** A request's calls that the homeserver keeps failing (5xx) give up here, freeing the room. */
export const WEBHOOK_MAX_SERVER_ERRORS = 8;
// The display name each webhook user was last given in its room, so that it is set only on a
// change.
const MEMBER_NAMES = "webhook-member-names";

interface WebhookMessage {
  text: string;
  username?: string;
  html?: string;
}

/**
 * A Slack-style JSON payload (also as the `payload` field of a form, as Slack takes it), or the
 * whole body as text when it is sent as `text/plain`.
 */
function parseMessage(request: AppRequest): WebhookMessage {
  const type = (request.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
  if (type === "text/plain") {
    const text = cleanText(request.body);
    if (!text.trim()) throw badJson("The body is empty: there is no text to post");
    return { text };
  }
  const json =
    type === "application/x-www-form-urlencoded"
      ? (new URLSearchParams(request.body).get("payload") ?? "")
      : request.body;
  let payload: unknown;
  try {
    payload = JSON.parse(json);
  } catch {
    throw notJson(
      'The body is not JSON: send {"text": "…"}, a form with payload={"text": "…"}, or a text/plain body',
    );
  }
  const { text, username, html } = (payload ?? {}) as Record<string, unknown>;
  const cleanedText = typeof text === "string" ? cleanText(text) : "";
  if (!cleanedText.trim()) {
    throw badJson('"text" is missing or empty: it must be a non-empty string');
  }
  for (const [field, value] of Object.entries({ username, html })) {
    if (value !== undefined && typeof value !== "string") {
      throw badJson(`"${field}" must be a string`);
    }
  }
  const name = typeof username === "string" ? cleanName(username, MAX_DISPLAY_NAME) : "";
  const markup = typeof html === "string" ? cleanText(html) : "";
  return {
    text: cleanedText,
    ...(name && { username: name }),
    ...(markup.trim() && { html: markup }),
  };
}

async function postWebhook(request: AppRequest, context: ServiceContext): Promise<AppResponse> {
  if (Buffer.byteLength(request.body) > WEBHOOK_MAX_BODY_BYTES) {
    throw tooLarge(`The body is over ${WEBHOOK_MAX_BODY_BYTES} bytes`);
  }
  const id = request.pathParameters.id ?? "";
  const webhook = await findWebhook(context.data, id);
  if (!webhook) throw new MatrixError(404, "M_NOT_FOUND", "No such webhook");
  // Before the body is parsed: a flood of bad requests costs its tokens too.
  const retryAfterMs = await takeToken(context.data, webhookKey(id));
  if (retryAfterMs !== undefined) {
    return {
      status: 429,
      headers: { "retry-after": String(Math.ceil(retryAfterMs / 1000)) },
      body: {
        errcode: "M_LIMIT_EXCEEDED",
        error: "Too many messages through this webhook",
        retry_after_ms: retryAfterMs,
      },
    };
  }
  const message = parseMessage(request);
  // Loaded on first use: the functions that bundle the application but never render (events,
  // queries) do not pay for markdown-it and sanitize-html at cold start.
  const { renderMarkdown, sanitizeMatrixHtml } = await import("./render.ts");
  // An `html` that sanitizes to nothing falls back to the text's rendering.
  const html = (message.html && sanitizeMatrixHtml(message.html)) || renderMarkdown(message.text);
  if (Buffer.byteLength(message.text) + Buffer.byteLength(html) > MAX_CONTENT_BYTES) {
    throw tooLarge("The message is too large for a Matrix event once rendered");
  }

  const { data } = context;
  const actions = context.actions.withServerErrorLimit(WEBHOOK_MAX_SERVER_ERRORS);
  const userId = webhook.userId ?? webhookUserId(context, webhook.roomId, webhook.name);
  const displayName = message.username ?? webhook.name;
  const nameKey = `${webhook.roomId} ${userId}`;
  const shown = await data.get(MEMBER_NAMES, nameKey);
  if (shown?.displayName !== displayName) {
    // The name in this room's member event, never the global profile; in the room's order, so
    // that the message below shows it. The outbox registers and joins the user if it must.
    await actions.sendState(
      webhook.roomId,
      "m.room.member",
      userId,
      { membership: "join", displayname: displayName },
      { as: userId },
    );
    await data.write([{ collection: MEMBER_NAMES, key: nameKey, value: { displayName } }]);
  }
  await actions.sendMessage(webhook.roomId, message.text, { as: userId, html });
  return { status: 202, body: {} };
}

/** `POST /webhook/{id}`: a message into the webhook's room, answered once it is queued. */
export const webhookRoute: AppRoute = {
  method: "POST",
  path: "/webhook/{id}",
  rateLimit: 20,
  maxBodyBytes: WEBHOOK_MAX_BODY_BYTES,
  handle: postWebhook,
};
