import { type AppDataStore, listValues, sha256 } from "../../../appservice/api.ts";
import { forgetBucket } from "./rate-limit.ts";

export interface Webhook {
  roomId: string;
  name: string;
  /** Epoch milliseconds. */
  createdAt: number;
  createdBy: string;
  /** The `!webhook new` event: a re-run of that command finds its own webhook. */
  commandEventId: string;
  /**
   * The virtual user it posts as, this room's own. Absent from webhooks made before users were
   * per room: theirs is derived again from the room and name.
   */
  userId?: string;
  /** The msgtype of the messages whose payload names none (`--notice`): `m.text` when absent. */
  msgtype?: DefaultMsgtype;
  /** Epoch milliseconds from which its URL answers 410 (`--expires`). */
  expiresAt?: number;
  /** What turns each JSON payload into a message: a preset's name or a moderator's code. */
  transformation?: Transformation;
}

export type DefaultMsgtype = "m.text" | "m.notice";
export type Transformation = { preset: string } | { code: string; setBy: string };

// By the hash of the URL's secret ID (the ID itself is never stored), and by room and name.
const BY_ID = "webhooks";
const byRoom = (roomId: string) => `webhooks-in:${roomId}`;

/** What a webhook is stored under: the hash of its URL's secret ID. */
export const webhookKey = (id: string): string => sha256(id);

export async function findWebhook(data: AppDataStore, id: string): Promise<Webhook | undefined> {
  return (await data.get(BY_ID, webhookKey(id))) as Webhook | undefined;
}

export const listWebhooks = (data: AppDataStore, roomId: string): Promise<Webhook[]> =>
  listValues<Webhook>(data, byRoom(roomId));

/** `exists`: the room has a webhook of that name, made by another command. */
export async function createWebhook(
  data: AppDataStore,
  id: string,
  webhook: Webhook,
): Promise<"created" | "exists"> {
  const idHash = webhookKey(id);
  const written = await data.write([
    {
      collection: byRoom(webhook.roomId),
      key: webhook.name,
      value: { ...webhook, idHash },
      ifAbsent: true,
    },
    { collection: BY_ID, key: idHash, value: { ...webhook } },
  ]);
  if (written) return "created";
  const existing = await data.get(byRoom(webhook.roomId), webhook.name);
  return existing?.commandEventId === webhook.commandEventId ? "created" : "exists";
}

export async function findWebhookByName(
  data: AppDataStore,
  roomId: string,
  name: string,
): Promise<Webhook | undefined> {
  return (await data.get(byRoom(roomId), name)) as Webhook | undefined;
}

/**
 * Applies `change` to the room's webhook of that name, in both of its records: false when there
 * is none. A compare-and-set: a concurrent change makes it read again.
 */
export async function updateWebhook(
  data: AppDataStore,
  roomId: string,
  name: string,
  change: (webhook: Webhook) => Webhook,
): Promise<boolean> {
  for (;;) {
    const existing = await data.get(byRoom(roomId), name);
    if (!existing) return false;
    const { idHash, ...webhook } = existing;
    const changed = change(webhook as unknown as Webhook);
    const written = await data.write([
      {
        collection: byRoom(roomId),
        key: name,
        value: { ...changed, idHash },
        ifEquals: existing,
      },
      { collection: BY_ID, key: String(idHash), value: { ...changed } },
    ]);
    if (written) return true;
  }
}

/** False when the room has no webhook of that name. */
export async function removeWebhook(
  data: AppDataStore,
  roomId: string,
  name: string,
): Promise<boolean> {
  const existing = await data.get(byRoom(roomId), name);
  if (!existing) return false;
  await data.write([
    { collection: byRoom(roomId), key: name, delete: true },
    { collection: BY_ID, key: String(existing.idHash), delete: true },
    forgetBucket(String(existing.idHash)),
  ]);
  return true;
}

/** Every webhook of every room, with the hash its URL's ID is stored under. */
export async function allWebhooks(
  data: AppDataStore,
): Promise<{ idHash: string; webhook: Webhook }[]> {
  const entries = await data.list(BY_ID);
  return entries.map((entry) => ({
    idHash: entry.key,
    webhook: entry.value as unknown as Webhook,
  }));
}
