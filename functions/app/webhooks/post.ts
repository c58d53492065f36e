import {
  type Actions,
  type AppRequest,
  type AppResponse,
  type AppRoute,
  MatrixError,
  type ServiceContext,
  sha256,
  tooLarge,
} from "../../appservice/api.ts";
import { isExpired, noticeExpirySoon } from "./expiry.ts";
import { claimIdempotencyKey, IDEMPOTENCY_KEY_TTL_MS, idempotencyKeyOf } from "./idempotency.ts";
import {
  type Msgtype,
  messageOf,
  messageOfResult,
  readPayload,
  type WebhookMessage,
} from "./message.ts";
import type { PresetName } from "./preset-names.ts";
import { PRESETS } from "./presets.ts";
import { takeToken } from "./rate-limit.ts";
import { findWebhook, type Transformation, type Webhook, webhookKey } from "./store.ts";
import { WEBHOOK_USER_PREFIX, webhookUserId } from "./user.ts";

export { WEBHOOK_USER_PREFIX, webhookUserId };

/** The largest webhook body taken: room for the text and its HTML in one 64 KiB Matrix event. */
export const WEBHOOK_MAX_BODY_BYTES = 16 * 1024;
// Matrix events are at most 65,536 bytes with their envelope.
const MAX_CONTENT_BYTES = 60_000;
/** A request's calls that the homeserver keeps failing (5xx) give up here, freeing the room. */
export const WEBHOOK_MAX_SERVER_ERRORS = 8;
// The display name each webhook user was last given in its room, so that it is set only on a
// change.
const MEMBER_NAMES = "webhook-member-names";

/** The msgtype, text and HTML of a message as Matrix content. */
function messageContent(text: string, html: string, msgtype: Msgtype): Record<string, unknown> {
  return { msgtype, body: text, format: "org.matrix.custom.html", formatted_body: html };
}

const TRANSFORMATION_ERRORS = "webhook-transformation-errors";

/**
 * Runs the webhook's transformation on the payload. A failure is told to the room once per
 * version of the code (not per request), and answered 422.
 */
async function transform(
  webhook: Webhook,
  payload: unknown,
  context: ServiceContext,
): Promise<WebhookMessage | undefined> {
  const transformation = webhook.transformation as Transformation;
  const code =
    "preset" in transformation ? PRESETS[transformation.preset as PresetName] : transformation.code;
  const { runTransformation } = await import("./sandbox.ts");
  try {
    return messageOfResult(await runTransformation(code ?? "return null;", payload));
  } catch (error) {
    const reason =
      error instanceof MatrixError ? `its result: ${error.message}` : (error as Error).message;
    const errorKey = `${webhook.roomId}
${webhook.name}
${sha256(code ?? "")}`;
    const first = await context.data.write([
      {
        collection: TRANSFORMATION_ERRORS,
        key: errorKey,
        value: { reason },
        ifAbsent: true,
        expiresAt: Date.now() + IDEMPOTENCY_KEY_TTL_MS * 30,
      },
    ]);
    if (first) {
      await context.actions.sendNotice(
        webhook.roomId,
        `Webhook ${webhook.name}: its transformation failed (${reason}). Later failures of this version are not reported; change it with !webhook transform ${webhook.name}.`,
      );
    }
    context.log.info("webhook transformation failed", { name: webhook.name, reason, first });
    throw new MatrixError(422, "M_UNKNOWN", `The webhook's transformation failed: ${reason}`);
  }
}

/**
 * Posts the message into the webhook's room as its user, after the user's name if it changed.
 * With a `seed` (an idempotency key's), the name and the message are seeded apart: a repeat that
 * finds the name already set still asks for the message under the same ID.
 */
async function postMessage(
  webhook: Webhook,
  message: WebhookMessage,
  seed: string | undefined,
  context: ServiceContext,
): Promise<void> {
  const actionsFor = (part: string): Actions =>
    (seed ? context.actions.withOrigin(`${seed}\n${part}`) : context.actions).withServerErrorLimit(
      WEBHOOK_MAX_SERVER_ERRORS,
    );
  // Loaded on first use: the functions that bundle the application but never render (events,
  // queries) do not pay for markdown-it and sanitize-html at cold start.
  const { renderMarkdown, sanitizeMatrixHtml } = await import("./render.ts");
  // An `html` that sanitizes to nothing falls back to the text's rendering.
  const html = (message.html && sanitizeMatrixHtml(message.html)) || renderMarkdown(message.text);
  if (Buffer.byteLength(message.text) + Buffer.byteLength(html) > MAX_CONTENT_BYTES) {
    throw tooLarge("The message is too large for a Matrix event once rendered");
  }
  const { data } = context;
  const userId = webhook.userId ?? webhookUserId(context, webhook.roomId, webhook.name);
  const displayName = message.username ?? webhook.name;
  const nameKey = `${webhook.roomId} ${userId}`;
  const shown = await data.get(MEMBER_NAMES, nameKey);
  if (shown?.displayName !== displayName) {
    // The name in this room's member event, never the global profile; in the room's order, so
    // that the message below shows it. The outbox registers and joins the user if it must.
    await actionsFor("name").sendState(
      webhook.roomId,
      "m.room.member",
      userId,
      { membership: "join", displayname: displayName },
      { as: userId },
    );
    await data.write([{ collection: MEMBER_NAMES, key: nameKey, value: { displayName } }]);
  }
  await actionsFor("message").sendEvent(
    webhook.roomId,
    "m.room.message",
    messageContent(message.text, html, message.msgtype ?? webhook.msgtype ?? "m.text"),
    { as: userId },
  );
}

async function postWebhook(request: AppRequest, context: ServiceContext): Promise<AppResponse> {
  if (Buffer.byteLength(request.body) > WEBHOOK_MAX_BODY_BYTES) {
    throw tooLarge(`The body is over ${WEBHOOK_MAX_BODY_BYTES} bytes`);
  }
  const id = request.pathParameters.id ?? "";
  const webhook = await findWebhook(context.data, id);
  if (!webhook) throw new MatrixError(404, "M_NOT_FOUND", "No such webhook");
  const now = Date.now();
  if (isExpired(webhook, now)) {
    throw new MatrixError(
      410,
      "M_NOT_FOUND",
      `This webhook expired at ${new Date(webhook.expiresAt as number).toISOString()}`,
    );
  }
  const key = idempotencyKeyOf(request.headers);
  const claim = key
    ? await claimIdempotencyKey(
        context.data,
        webhookKey(id),
        key,
        sha256(`${request.headers["content-type"] ?? ""}\n${request.body}`),
      )
    : undefined;
  if (claim && "replay" in claim) return claim.replay;
  try {
    const response = await acceptMessage(request, webhook, id, context, claim?.seed, now);
    await claim?.complete(response);
    return response;
  } catch (error) {
    await claim?.release();
    throw error;
  }
}

async function acceptMessage(
  request: AppRequest,
  webhook: Webhook,
  id: string,
  context: ServiceContext,
  seed: string | undefined,
  now: number,
): Promise<AppResponse> {
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
  await noticeExpirySoon(context, webhook, now);
  const payload = readPayload(request);
  const message = webhook.transformation
    ? await transform(webhook, payload, context)
    : messageOf(payload);
  if (!message) return { status: 204 };
  await postMessage(webhook, message, seed, context);
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
