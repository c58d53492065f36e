import type { HomeserverReader } from "../../../appservice/api.ts";

/** The power level the webhook commands ask for: a room moderator's. */
export const MODERATOR_LEVEL = 50;

// Room versions whose creators outrank everyone, outside the power levels (MSC4289).
const PRIVILEGED_CREATORS = new Set(["12", "org.matrix.hydra.11"]);

/**
 * The user's power level. In rooms v12 the creators (the create event's sender and its
 * `additional_creators`) have no limit. Else `m.room.power_levels`: `users`, else
 * `users_default`, else 0; a room without one gives its creator 100.
 */
export async function powerLevel(
  homeserver: HomeserverReader,
  roomId: string,
  userId: string,
): Promise<number> {
  // Both reads at once: one round trip of waiting, not two.
  const [create, levels] = await Promise.all([
    homeserver.roomStateEvent(roomId, "m.room.create"),
    homeserver.roomState(roomId, "m.room.power_levels"),
  ]);
  const version = String(create?.content.room_version ?? "1");
  const additional = create?.content.additional_creators;
  const creators = [create?.sender, ...(Array.isArray(additional) ? additional : [])];
  if (PRIVILEGED_CREATORS.has(version) && creators.includes(userId)) return Infinity;
  if (!levels) {
    // Before v11 the creator is named in the content; from v11 it is the sender.
    return (create?.content.creator ?? create?.sender) === userId ? 100 : 0;
  }
  const users = (levels.users ?? {}) as Record<string, unknown>;
  const level = Number(users[userId] ?? levels.users_default ?? 0);
  return Number.isFinite(level) ? level : 0;
}
