import {
  type AppRequest,
  badJson,
  cleanName,
  cleanText,
  parseJson,
} from "../../../appservice/api.ts";

/** The message types a payload may ask for; a webhook's default is one of the first two. */
export const MSGTYPES = ["m.text", "m.notice", "m.emote"] as const;
export type Msgtype = (typeof MSGTYPES)[number];
const MAX_DISPLAY_NAME = 256;

export interface WebhookMessage {
  text: string;
  username?: string;
  html?: string;
  msgtype?: Msgtype;
}

/** The request's media type, lower-case, without parameters. */
export const mediaTypeOf = (request: AppRequest) =>
  (request.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase() ?? "";

/**
 * What the request carries: the JSON payload (also as the `payload` field of a form, as Slack
 * takes it), or the whole body as a string when it is sent as `text/plain`.
 */
export function readPayload(request: AppRequest): unknown {
  const type = mediaTypeOf(request);
  if (type === "text/plain") return request.body;
  const json =
    type === "application/x-www-form-urlencoded"
      ? (new URLSearchParams(request.body).get("payload") ?? "")
      : request.body;
  return parseJson(
    json,
    'The body is not JSON: send {"text": "…"}, a form with payload={"text": "…"}, or a text/plain body',
  );
}

/**
 * The message a payload asks for: a string is its text; an object has `text` (or hookshot's
 * `plain`) and optionally `html`, `username` and `msgtype`. Anything else is a 400. With
 * `withFiles`, the text may be empty (the files are the message).
 */
export function messageOf(payload: unknown, withFiles = false): WebhookMessage {
  if (typeof payload === "string") {
    const text = cleanText(payload);
    if (!text.trim() && !withFiles) throw badJson("The body is empty: there is no text to post");
    return { text };
  }
  const fields = (payload !== null && typeof payload === "object" ? payload : {}) as Record<
    string,
    unknown
  >;
  const { username, html, msgtype } = fields;
  const text = fields.text ?? fields.plain;
  const cleanedText = typeof text === "string" ? cleanText(text) : "";
  if (text !== undefined && typeof text !== "string") throw badJson('"text" must be a string');
  if (!cleanedText.trim() && !withFiles) {
    throw badJson('"text" is missing or empty: it must be a non-empty string');
  }
  for (const [field, value] of Object.entries({ username, html, msgtype })) {
    if (value !== undefined && typeof value !== "string") {
      throw badJson(`"${field}" must be a string`);
    }
  }
  if (msgtype !== undefined && !MSGTYPES.includes(msgtype as Msgtype)) {
    throw badJson(`"msgtype" must be one of ${MSGTYPES.join(", ")}`);
  }
  const name = typeof username === "string" ? cleanName(username, MAX_DISPLAY_NAME) : "";
  const markup = typeof html === "string" ? cleanText(html) : "";
  return {
    text: cleanedText,
    ...(name && { username: name }),
    ...(markup.trim() && { html: markup }),
    ...(msgtype !== undefined && { msgtype: msgtype as Msgtype }),
  };
}

/**
 * The message a transformation's result asks for, or undefined for none: nothing (`null`,
 * `undefined`, `false`) or hookshot's `{"empty": true}` post nothing; a string is the text;
 * an object is read as a payload.
 */
export function messageOfResult(result: unknown): WebhookMessage | undefined {
  if (result === null || result === undefined || result === false) return undefined;
  if (typeof result === "object" && (result as { empty?: unknown }).empty === true) {
    return undefined;
  }
  return messageOf(result);
}
