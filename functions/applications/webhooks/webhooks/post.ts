import {
  type Actions,
  type AppRequest,
  type AppResponse,
  type AppRoute,
  MatrixError,
  type ServiceContext,
  sha256,
  tooLarge,
} from "../../../appservice/api.ts";
import { isExpired, noticeExpirySoon } from "./expiry.ts";
import { readRequest, uploadFiles } from "./files.ts";
import {
  bodyHashOf,
  claimIdempotencyKey,
  IDEMPOTENCY_KEY_TTL_MS,
  idempotencyKeyOf,
} from "./idempotency.ts";
import { type Msgtype, messageOf, messageOfResult, type WebhookMessage } from "./message.ts";
import type { PresetName } from "./preset-names.ts";
import { PRESETS } from "./presets.ts";
import { takeToken } from "./rate-limit.ts";
import { findWebhook, type Transformation, type Webhook, webhookKey } from "./store.ts";
import { webhookUserId } from "./user.ts";

/**
 * The largest webhook body taken, files included: base64-encoded by API Gateway (a multipart
 * form), it stays under Lambda's 6 MB request limit.
 */
export const WEBHOOK_MAX_BODY_BYTES = 4 * 1024 * 1024;
/** The largest payload a transformation is given: room for a CI system's or an alert's JSON. */
export const WEBHOOK_MAX_TRANSFORMED_BYTES = 16 * 1024;
/**
 * How long `?wait=true` waits for its messages to be in the room: well under API Gateway's 30 s
 * and the app function's timeout.
 */
export const WEBHOOK_WAIT_MS = 10_000;
// Matrix events are at most 65,536 bytes with their envelope.
export const MAX_CONTENT_BYTES = 60_000;
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
 * Runs the webhook's transformation on the payload. A failure of its code is told to the room
 * once per version of the code and kind of failure (not per request), in words of ours alone: the
 * message of an error may be the payload's text, which a sender must not put in the room (nor,
 * by failing first, hide the room's real failures behind). The sender gets it all, with a 422.
 * A run that never started (no engine) is no fault of the code: 503, and the room is not told.
 */
async function transform(
  webhook: Webhook,
  payload: unknown,
  context: ServiceContext,
): Promise<WebhookMessage | undefined> {
  const transformation = webhook.transformation as Transformation;
  const code =
    "preset" in transformation ? PRESETS[transformation.preset as PresetName] : transformation.code;
  const { runTransformation, TransformationError } = await import("./sandbox.ts");
  let result: unknown;
  try {
    result = await runTransformation(code ?? "return null;", payload);
  } catch (error) {
    if (!(error instanceof TransformationError)) throw error;
    if (!error.ofTheCode) {
      throw new MatrixError(503, "M_UNKNOWN", `The transformation could not run: try again later`);
    }
    await transformationFailed(webhook, code, error.kind, error.message, context);
  }
  try {
    return messageOfResult(result);
  } catch (error) {
    if (!(error instanceof MatrixError)) throw error;
    // Our own words (which field is wrong): safe to tell the room.
    const reason = `its result: ${error.message}`;
    return transformationFailed(webhook, code, reason, reason, context);
  }
}

async function transformationFailed(
  webhook: Webhook,
  code: string | undefined,
  kind: string,
  reason: string,
  context: ServiceContext,
): Promise<never> {
  const errorKey = `${webhook.roomId}\n${webhook.name}\n${sha256(code ?? "")}\n${kind}`;
  const first = await context.data.write([
    {
      collection: TRANSFORMATION_ERRORS,
      key: errorKey,
      value: { kind },
      ifAbsent: true,
      expiresAt: Date.now() + IDEMPOTENCY_KEY_TTL_MS * 30,
    },
  ]);
  if (first) {
    await context.actions.sendNotice(
      webhook.roomId,
      `Webhook ${webhook.name}: its transformation failed on a payload (${kind}). The sender was told why; later failures of this kind in this version are not reported. Change it with !webhook transform ${webhook.name}.`,
    );
  }
  context.log.info("webhook transformation failed", { name: webhook.name, kind, first });
  throw new MatrixError(422, "M_UNKNOWN", `The webhook's transformation failed: ${reason}`);
}

/** What a request posts: its text's content (if any), then its files' messages, in order. */
interface WebhookPost {
  message: WebhookMessage;
  text: Record<string, unknown> | undefined;
  files: Record<string, unknown>[];
}

/** The message's content, rendered; undefined for a message of files only (no text). */
async function textContent(
  webhook: Webhook,
  message: WebhookMessage,
): Promise<Record<string, unknown> | undefined> {
  if (!message.text.trim()) return undefined;
  // The size is checked before each step that costs time (Markdown, the sanitizer): a 4 MiB
  // table took 16 s to render only to be refused after.
  const textBytes = Buffer.byteLength(message.text);
  const overLimit = (htmlBytes: number) => textBytes + htmlBytes > MAX_CONTENT_BYTES;
  const refuse = (htmlBytes: number, what: string) =>
    tooLarge(
      `The message is over ${MAX_CONTENT_BYTES} bytes, the most a Matrix event holds: its text is ${textBytes} bytes, ${what} ${htmlBytes}`,
    );
  if (overLimit(message.html ? Buffer.byteLength(message.html) : 0)) {
    throw refuse(message.html ? Buffer.byteLength(message.html) : 0, "its html");
  }
  // Loaded on first use: the functions that bundle the application but never render (events,
  // queries) do not pay for markdown-it and sanitize-html at cold start.
  const { renderMarkdown, sanitizeMatrixHtml } = await import("./render.ts");
  // An `html` that sanitizes to nothing falls back to the text's rendering.
  const html =
    (message.html && sanitizeMatrixHtml(message.html)) ||
    renderMarkdown(message.text, (rendered) => {
      if (overLimit(rendered)) throw refuse(rendered, "rendered as HTML");
    });
  if (overLimit(Buffer.byteLength(html))) throw refuse(Buffer.byteLength(html), "its HTML");
  return messageContent(message.text, html, message.msgtype ?? webhook.msgtype ?? "m.text");
}

/**
 * Posts the messages into the webhook's room as its user, after the user's name if it changed:
 * the sends' IDs, in order. With a `seed` (an idempotency key's), the name and each message are
 * seeded apart: a repeat that finds the name already set still asks for the messages under the
 * same IDs. `recordEventIds`: the outbox records their event IDs, for `?wait=true`.
 */
async function postMessages(
  webhook: Webhook,
  { message, text, files }: WebhookPost,
  seed: string | undefined,
  recordEventIds: boolean,
  context: ServiceContext,
): Promise<string[]> {
  const actionsFor = (part: string): Actions => {
    const actions = (
      seed ? context.actions.withOrigin(`${seed}\n${part}`) : context.actions
    ).withServerErrorLimit(WEBHOOK_MAX_SERVER_ERRORS);
    return recordEventIds ? actions.recordingEventIds() : actions;
  };
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
  const sendIds: string[] = [];
  if (text) {
    sendIds.push(
      await actionsFor("message").sendEvent(webhook.roomId, "m.room.message", text, { as: userId }),
    );
  }
  for (const [i, content] of files.entries()) {
    sendIds.push(
      await actionsFor(`file ${i}`).sendEvent(webhook.roomId, "m.room.message", content, {
        as: userId,
      }),
    );
  }
  return sendIds;
}

async function postWebhook(request: AppRequest, context: ServiceContext): Promise<AppResponse> {
  if (request.bytes.byteLength > WEBHOOK_MAX_BODY_BYTES) {
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
        bodyHashOf(request.headers["content-type"], request.bytes),
      )
    : undefined;
  if (claim && "replay" in claim) return claim.replay;
  try {
    const response = await acceptMessage(request, webhook, id, context, claim?.seed, now);
    // Only a message taken is kept under the key: a 429 is no answer to the request, whose
    // repeat after Retry-After must post it.
    if (response.status < 400) await claim?.complete(response);
    else await claim?.release();
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
  const wait = request.query.wait === "true";
  const transformed = webhook.transformation !== undefined;
  if (transformed && request.bytes.byteLength > WEBHOOK_MAX_TRANSFORMED_BYTES) {
    throw tooLarge(`A transformation takes at most ${WEBHOOK_MAX_TRANSFORMED_BYTES} bytes of JSON`);
  }
  const { payload, files } = await readRequest(request, transformed);
  const message = transformed
    ? await transform(webhook, payload, context)
    : messageOf(payload, files.length > 0);
  if (!message) return { status: 204 };
  // Rendered, then uploaded, before anything is sent: a text or a file refused (too large) posts
  // nothing, and a text refused uploads nothing.
  const text = await textContent(webhook, message);
  const fileContents = await uploadFiles(files, webhook.roomId, context);
  const sendIds = await postMessages(
    webhook,
    { message, text, files: fileContents },
    seed,
    wait,
    context,
  );
  if (!wait) return { status: 202, body: {} };
  const eventIds = await context.sentEventIds(sendIds, WEBHOOK_WAIT_MS);
  if (!eventIds) {
    throw new MatrixError(
      504,
      "M_UNKNOWN",
      `The message is not in the room after ${WEBHOOK_WAIT_MS / 1000} s; it is still queued and will be posted`,
    );
  }
  return { status: 200, body: { event_id: eventIds[0], event_ids: eventIds } };
}

/**
 * `POST /webhook/{id}`: a message (and files) into the webhook's room, answered once queued, or
 * with `?wait=true` once in the room.
 */
export const webhookRoute: AppRoute = {
  method: "POST",
  path: "/webhook/{id}",
  rateLimit: 20,
  maxBodyBytes: WEBHOOK_MAX_BODY_BYTES,
  handle: postWebhook,
};
