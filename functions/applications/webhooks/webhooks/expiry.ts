import type { ServiceContext } from "../../../appservice/api.ts";
import type { Webhook } from "./store.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
/** How far ahead of its expiry the room is told, once. */
export const EXPIRY_NOTICE_MS = DAY_MS;
const UNITS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: DAY_MS,
  w: 7 * DAY_MS,
};
const DURATION = /^(\d{1,6})([smhdw])$/;
/** The longest `--expires` taken. */
export const MAX_EXPIRY_MS = 366 * DAY_MS;
const NOTICES = "webhook-expiry-notices";

/** `30d`, `12h`, `2w`… in milliseconds; undefined when it is not one, or over a year. */
export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text);
  if (!match) return undefined;
  const ms = Number(match[1]) * (UNITS[match[2] as string] as number);
  return ms > 0 && ms <= MAX_EXPIRY_MS ? ms : undefined;
}

export const isExpired = (webhook: Webhook, now: number): boolean =>
  webhook.expiresAt !== undefined && now >= webhook.expiresAt;

/**
 * Tells the webhook's room, once, that it expires within `EXPIRY_NOTICE_MS`. There is no
 * periodic trigger: this runs whenever the webhook is used and whenever someone writes in its
 * room. The notice is queued before it is recorded, under an ID derived from the webhook and its
 * expiry, so that two checks at once, or one run again after a crash, send it once.
 */
export async function noticeExpirySoon(
  context: ServiceContext,
  webhook: Webhook,
  now: number,
): Promise<void> {
  const { expiresAt } = webhook;
  if (expiresAt === undefined || now < expiresAt - EXPIRY_NOTICE_MS || now >= expiresAt) return;
  const key = `${webhook.roomId}\n${webhook.name}\n${expiresAt}`;
  if (await context.data.get(NOTICES, key)) return;
  await context.actions
    .withOrigin(`webhook-expiry\n${key}`)
    .sendNotice(
      webhook.roomId,
      `Webhook ${webhook.name} expires at ${new Date(expiresAt).toISOString()}: after that its URL answers 410. Create another with !webhook new.`,
    );
  await context.data.write([
    { collection: NOTICES, key, value: { at: now }, expiresAt: expiresAt + DAY_MS },
  ]);
}

/** `noticeExpirySoon` for each of a room's webhooks: run when someone writes there. */
export async function noticeExpiries(context: ServiceContext, webhooks: Webhook[]): Promise<void> {
  const now = Date.now();
  for (const webhook of webhooks) {
    await noticeExpirySoon(context, webhook, now);
  }
}
