import type {
  AppRequest,
  AppResponse,
  AppRoute,
  ServiceContext,
} from "../../appservice/application.ts";
import { badJson, MatrixError, notJson, tooLarge } from "../../appservice/errors.ts";
import { findWebhook } from "./store.ts";

/** The largest webhook body taken: room for the text and its HTML in one 64 KiB Matrix event. */
export const WEBHOOK_MAX_BODY_BYTES = 16 * 1024;
/** The virtual users webhooks post as: `@_webhook_<name>:<server>`. */
export const WEBHOOK_USER_PREFIX = "_webhook_";
// Matrix events are at most 65,536 bytes with their envelope.
const MAX_CONTENT_BYTES = 60_000;
const MAX_DISPLAY_NAME = 256;
// The display name each webhook user was last given, so that it is set only on a change.
const PROFILES = "webhook-profiles";

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
    if (!request.body.trim()) throw badJson("The body is empty: there is no text to post");
    return { text: request.body };
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
  if (typeof text !== "string" || !text.trim()) {
    throw badJson('"text" is missing or empty: it must be a non-empty string');
  }
  for (const [field, value] of Object.entries({ username, html })) {
    if (value !== undefined && typeof value !== "string") {
      throw badJson(`"${field}" must be a string`);
    }
  }
  return {
    text,
    ...(typeof username === "string" && username.trim() && { username: username.trim() }),
    ...(typeof html === "string" && html.trim() && { html }),
  };
}

async function postWebhook(request: AppRequest, context: ServiceContext): Promise<AppResponse> {
  if (Buffer.byteLength(request.body) > WEBHOOK_MAX_BODY_BYTES) {
    throw tooLarge(`The body is over ${WEBHOOK_MAX_BODY_BYTES} bytes`);
  }
  const webhook = await findWebhook(context.data, request.pathParameters.id ?? "");
  if (!webhook) throw new MatrixError(404, "M_NOT_FOUND", "No such webhook");
  const message = parseMessage(request);
  // Loaded on first use: the functions that bundle the application but never render (events,
  // queries) do not pay for markdown-it and sanitize-html at cold start.
  const { renderMarkdown, sanitizeMatrixHtml } = await import("./render.ts");
  // An `html` that sanitizes to nothing falls back to the text's rendering.
  const html = (message.html && sanitizeMatrixHtml(message.html)) || renderMarkdown(message.text);
  if (Buffer.byteLength(message.text) + Buffer.byteLength(html) > MAX_CONTENT_BYTES) {
    throw tooLarge("The message is too large for a Matrix event once rendered");
  }

  const { actions, data } = context;
  const server = actions.botUserId.slice(actions.botUserId.indexOf(":") + 1);
  const userId = `@${WEBHOOK_USER_PREFIX}${webhook.name}:${server}`;
  const displayName = (message.username ?? webhook.name).slice(0, MAX_DISPLAY_NAME);
  const profile = await data.get(PROFILES, userId);
  if (profile?.displayName !== displayName) {
    // In the room's order, so that the message below shows the new name.
    await actions.setDisplayName(displayName, { as: userId, orderedWith: webhook.roomId });
    await data.write([{ collection: PROFILES, key: userId, value: { displayName } }]);
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
