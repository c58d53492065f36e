import { createHmac } from "node:crypto";
import {
  type AppDataStore,
  type ClientEvent,
  type DeliveryOutcome,
  HomeserverRefused,
  listValues,
  MAX_DELIVERY_BYTES,
  MediaTooLarge,
  type ServiceContext,
  sha256,
} from "../../../appservice/api.ts";
import { WEBHOOK_NAME } from "./text.ts";
import { WEBHOOK_USER_PREFIX } from "./user.ts";
import type { WebhookView } from "./webhook-view.ts";

/**
 * Outbound webhooks: `!webhook out <name> <url>` has every later message of the room POSTed to
 * the URL (`actions.deliver`: queued, retried, in the room's order), signed with a secret the
 * bot gives the moderator in a direct message.
 */
export interface OutboundWebhook {
  roomId: string;
  name: string;
  url: string;
  /** Epoch milliseconds. */
  createdAt: number;
  createdBy: string;
  /** The `!webhook out` event: the secret, the deliveries' keys and their outcomes derive from it. */
  commandEventId: string;
}

// By room (what each message reads) and all of them (what the operator console lists).
const byRoom = (roomId: string) => `outbound-in:${roomId}`;
const ALL = "outbound";
const allKey = (roomId: string, name: string) => `${roomId}\n${name}`;

/**
 * The most outbound webhooks a room has: each message of the room is queued once for each, so a
 * room's messages cost at most this many deliveries.
 */
export const MAX_OUTBOUND_PER_ROOM = 5;

/** A delivery that still fails a day after its message is dead-lettered with the reason. */
const OUTBOUND_RETRY_MS = 24 * 60 * 60 * 1000;
/** The longest target URL taken: it rides in every queued delivery. */
const MAX_URL_LENGTH = 1024;
/** What a queued delivery holds besides its body: the URL, headers, IDs, the JSON around them. */
const DELIVERY_ENVELOPE_BYTES = 3072;
/** What a multipart body may weigh: its base64 (4 bytes for 3) must fit one queued delivery. */
const MAX_MULTIPART_BYTES = Math.floor(((MAX_DELIVERY_BYTES - DELIVERY_ENVELOPE_BYTES) * 3) / 4);
/** The part headers and boundaries of a multipart body: file name and type of 200 characters each. */
const PART_HEADERS_BYTES = 2048;

/** The signing secret of a webhook: derived from its command, so never stored. */
const outboundSecret = (context: ServiceContext, webhook: OutboundWebhook) =>
  context.deriveSecret(`webhook-out\n${webhook.commandEventId}`);
/** Where the outbox records how its last delivery went. */
const outcomeKey = (webhook: OutboundWebhook) => `webhook-out:${sha256(webhook.commandEventId)}`;

const listOutbound = (data: AppDataStore, roomId: string) =>
  listValues<OutboundWebhook>(data, byRoom(roomId));

async function createOutbound(data: AppDataStore, webhook: OutboundWebhook) {
  const written = await data.write([
    {
      collection: byRoom(webhook.roomId),
      key: webhook.name,
      value: { ...webhook },
      ifAbsent: true,
    },
    { collection: ALL, key: allKey(webhook.roomId, webhook.name), value: { ...webhook } },
  ]);
  if (written) return "created";
  // The same command handled again finds its own webhook.
  const existing = await data.get(byRoom(webhook.roomId), webhook.name);
  return existing?.commandEventId === webhook.commandEventId ? "created" : "exists";
}

async function removeOutbound(data: AppDataStore, roomId: string, name: string) {
  if (!(await data.get(byRoom(roomId), name))) return false;
  await data.write([
    { collection: byRoom(roomId), key: name, delete: true },
    { collection: ALL, key: allKey(roomId, name), delete: true },
  ]);
  return true;
}

/** Only the origin is shown: a target's path or query may hold its own token. */
const originOf = (url: string) => new URL(url).origin;
const day = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** How the last delivery went, in a few words (`done 200`, `retrying: 500 …`, `dead 404: …`). */
function describeOutcome(outcome: DeliveryOutcome | undefined): string {
  if (!outcome) return "no delivery yet";
  const status = outcome.status === undefined ? "" : ` ${outcome.status}`;
  const why = outcome.error ? `: ${outcome.error.slice(0, 200)}` : "";
  switch (outcome.outcome) {
    case "done":
      return `delivered${status} at ${outcome.at}`;
    case "retry":
      return `retrying (attempt ${outcome.attempt + 1} failed${why}) at ${outcome.at}`;
    case "dead":
      return `dead-lettered${status}${why} at ${outcome.at}`;
  }
}

/** The lines `!webhook list` shows for the room's outbound webhooks. */
export async function outboundListLines(context: ServiceContext, roomId: string) {
  const webhooks = await listOutbound(context.data, roomId);
  return Promise.all(
    webhooks.map(async (webhook) => {
      const outcome = await context.deliveryOutcome(outcomeKey(webhook));
      return `• ${webhook.name} → ${originOf(webhook.url)} (outbound) — created ${day(webhook.createdAt)} by ${webhook.createdBy}, last delivery: ${describeOutcome(outcome)}`;
    }),
  );
}

/** The outbound webhooks as the operator console lists them, with their last delivery. */
export async function outboundViews(context: ServiceContext): Promise<WebhookView[]> {
  const webhooks = await listValues<OutboundWebhook>(context.data, ALL);
  return Promise.all(
    webhooks.map(async (webhook) => {
      const outcome = await context.deliveryOutcome(outcomeKey(webhook));
      return {
        roomId: webhook.roomId,
        direction: "outbound" as const,
        name: `${webhook.name} → ${originOf(webhook.url)}`,
        createdAt: new Date(webhook.createdAt).toISOString(),
        ...(outcome && {
          lastStatus: [outcome.outcome, outcome.status].filter((p) => p !== undefined).join(" "),
          lastStatusAt: outcome.at,
        }),
      };
    }),
  );
}

export const OUTBOUND_USAGE =
  "!webhook out <name> <url> — POST every message of this room to the URL; !webhook out remove <name>";

/**
 * `!webhook out <name> <url>` and `!webhook out remove <name>` (`args`: the words after `out`),
 * from a moderator: the caller checked the power level.
 */
export async function onOutboundCommand(
  event: ClientEvent,
  args: string[],
  context: ServiceContext,
): Promise<void> {
  const { actions, data, homeserver, log } = context;
  const roomId = event.room_id;
  const reply = (text: string) => actions.sendNotice(roomId, text);
  const [first, second, ...extra] = args;
  if (first === undefined || second === undefined || extra.length > 0) {
    await reply(`Usage: ${OUTBOUND_USAGE}`);
    return;
  }
  if (first === "remove") {
    const removed = WEBHOOK_NAME.test(second) && (await removeOutbound(data, roomId, second));
    if (removed) log.info("outbound webhook removed", { roomId, name: second, by: event.sender });
    await reply(
      removed
        ? `Outbound webhook ${second} removed: no later message is sent to it (one already queued still goes, for at most a day).`
        : `This room has no outbound webhook named ${second}.`,
    );
    return;
  }
  if (!WEBHOOK_NAME.test(first)) {
    await reply(`Usage: ${OUTBOUND_USAGE} — a name of 1 to 32 of a-z 0-9 . _ = -`);
    return;
  }
  if (second.length > MAX_URL_LENGTH) {
    await reply(`That URL is longer than ${MAX_URL_LENGTH} characters.`);
    return;
  }
  let problem: string | undefined;
  try {
    problem = await context.deliveryTargetProblem(second);
  } catch (error) {
    log.warn("outbound webhook target not checked", { roomId, error: (error as Error).message });
    await reply("I could not look that URL's host up just now: try again in a moment.");
    return;
  }
  if (problem) {
    await reply(`I cannot deliver to that URL: ${problem}.`);
    return;
  }
  // The room's events are handled one at a time (one queue group): no other command races this.
  const existing = await listOutbound(data, roomId);
  if (
    existing.length >= MAX_OUTBOUND_PER_ROOM &&
    !existing.some((webhook) => webhook.commandEventId === event.event_id)
  ) {
    await reply(
      `This room has ${MAX_OUTBOUND_PER_ROOM} outbound webhooks, the most it may: remove one first (!webhook out remove <name>).`,
    );
    return;
  }
  const webhook: OutboundWebhook = {
    roomId,
    name: first,
    url: second,
    createdAt: event.origin_server_ts ?? Date.now(),
    createdBy: event.sender,
    commandEventId: event.event_id,
  };
  if ((await createOutbound(data, webhook)) === "exists") {
    await reply(
      `This room already has an outbound webhook named ${first}: remove it first (!webhook out remove ${first}).`,
    );
    return;
  }
  log.info("outbound webhook created", { roomId, name: first, by: event.sender });
  // The secret proves a request came from here: to its creator alone, never in the room.
  const dm = await homeserver.directRoom(event.sender);
  await actions.sendNotice(
    dm,
    [
      `Outbound webhook ${first} of ${roomId} posts each message to ${second}.`,
      "Each request carries X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the raw body> under this secret; keep it secret:",
      outboundSecret(context, webhook),
    ].join("\n"),
  );
  await reply(
    `Outbound webhook ${first} created: every message here from now on is sent to ${originOf(second)}. I sent its signing secret to ${event.sender} in a direct message.`,
  );
}

/** Whether the appservice itself wrote it: never sent out, so no webhook can loop. */
const isOurs = (sender: string, context: ServiceContext) =>
  sender === context.actions.botUserId ||
  sender.startsWith(`@${WEBHOOK_USER_PREFIX}`) ||
  context.ownsUser(sender);

/** A message's file, or why it is left out. */
type Media = { bytes: Uint8Array; contentType: string; fileName: string } | { omitted: string };

/** The file of a media message, if it fits one delivery beside `jsonBytes` of event JSON. */
async function mediaOf(
  content: Record<string, unknown>,
  jsonBytes: number,
  context: ServiceContext,
): Promise<Media | undefined> {
  const { url, body, filename, info } = content;
  if (typeof url !== "string" || !url.startsWith("mxc://")) return undefined;
  const maxBytes = MAX_MULTIPART_BYTES - jsonBytes - PART_HEADERS_BYTES;
  const omitted = { omitted: `the file is over the ${maxBytes} bytes one delivery carries` };
  const size = (info as { size?: unknown } | undefined)?.size;
  if (typeof size === "number" && size > maxBytes) return omitted;
  try {
    const media = await context.homeserver.downloadMedia(url, { maxBytes });
    if (!media) return { omitted: "the homeserver has no such file" };
    const mimetype = (info as { mimetype?: unknown } | undefined)?.mimetype;
    const contentType =
      media.contentType ?? (typeof mimetype === "string" ? mimetype : "application/octet-stream");
    // Both within PART_HEADERS_BYTES, whatever the homeserver or the sender wrote.
    return {
      bytes: media.bytes,
      contentType: contentType.slice(0, 200),
      fileName: String(filename ?? media.fileName ?? body ?? "file").slice(0, 200),
    };
  } catch (error) {
    if (error instanceof MediaTooLarge) return omitted;
    // A 4xx (quarantined, forbidden) stays one: retrying the event would hold back the message
    // itself until it is dead-lettered. A 5xx is retried with the event.
    if (error instanceof HomeserverRefused && error.status < 500) {
      return { omitted: `the homeserver refused the file (${error.status})` };
    }
    throw error;
  }
}

/** A name inside a quoted multipart parameter: no quote, backslash or line break. */
const quotable = (name: string) => name.replace(/["\\\r\n]/g, "_");

/**
 * `multipart/form-data` as hookshot sends it: the event JSON as the part `event`, the file as
 * `media`. The boundary derives from the event, so a handler run again builds the same bytes.
 */
function multipart(
  eventJson: string,
  media: { bytes: Uint8Array; contentType: string; fileName: string },
  seed: string,
) {
  const boundary = `matrix-webhook-${sha256(seed).slice(0, 32)}`;
  const body = Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="event"; filename="event.json"\r\nContent-Type: application/json\r\n\r\n${eventJson}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="media"; filename="${quotable(media.fileName)}"\r\nContent-Type: ${media.contentType.replace(/[\r\n]/g, "")}\r\n\r\n`,
    ),
    Buffer.from(media.bytes),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, contentType: `multipart/form-data; boundary=${boundary}` };
}

/** The outbound webhooks a room message goes to: its room's, none if the appservice wrote it. */
export async function outboundWebhooksOf(
  event: ClientEvent,
  context: ServiceContext,
): Promise<OutboundWebhook[]> {
  if (event.type !== "m.room.message" || isOurs(event.sender, context)) return [];
  return listOutbound(context.data, event.room_id);
}

/**
 * Sends a room message to each of `webhooks` (`outboundWebhooksOf` it). Each delivery's ID (its
 * `Idempotency-Key`) derives from the webhook and the event, so a handler run again asks for the
 * same deliveries, which the queue deduplicates.
 */
export async function deliverToOutboundWebhooks(
  event: ClientEvent,
  webhooks: OutboundWebhook[],
  context: ServiceContext,
): Promise<void> {
  if (webhooks.length === 0) return;
  const member = await context.homeserver.roomStateEvent(
    event.room_id,
    "m.room.member",
    event.sender,
  );
  const displayName = (member?.content as { displayname?: unknown } | undefined)?.displayname;
  const payload = (webhook: OutboundWebhook, extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      webhook: webhook.name,
      event_id: event.event_id,
      room_id: event.room_id,
      sender: {
        user_id: event.sender,
        display_name: typeof displayName === "string" ? displayName : event.sender,
      },
      type: event.type,
      origin_server_ts: event.origin_server_ts,
      content: event.content,
      ...extra,
    });
  // One download for every webhook of the room, sized for the largest event JSON.
  const jsonBytes = Math.max(...webhooks.map((webhook) => Buffer.byteLength(payload(webhook))));
  const media = await mediaOf(event.content, jsonBytes, context);
  for (const webhook of webhooks) {
    const seed = `webhook-out\n${webhook.commandEventId}\n${event.event_id}`;
    const { body, contentType } =
      media && "bytes" in media
        ? multipart(payload(webhook), media, seed)
        : {
            body: Buffer.from(payload(webhook, media ? { media_omitted: media.omitted } : {})),
            contentType: "application/json",
          };
    const signature = createHmac("sha256", outboundSecret(context, webhook))
      .update(body)
      .digest("hex");
    await context.actions.withOrigin(seed).deliver(
      {
        method: "POST",
        url: webhook.url,
        headers: { "content-type": contentType, "x-webhook-signature": `sha256=${signature}` },
        ...(contentType === "application/json"
          ? { body: body.toString("utf8") }
          : { body: body.toString("base64"), bodyEncoding: "base64" as const }),
      },
      {
        // Each webhook in its own order: a target that is down holds back its own deliveries,
        // never another webhook's of the room (to the same origin, they shared one for a day).
        orderedWith: event.room_id,
        orderKey: webhook.commandEventId,
        retryForMs: OUTBOUND_RETRY_MS,
        outcomeKey: outcomeKey(webhook),
      },
    );
  }
}
