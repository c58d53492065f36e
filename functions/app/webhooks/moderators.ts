import type { HomeserverReader } from "../../matrix/room-state.ts";

/** The power level the webhook commands ask for: a room moderator's. */
export const MODERATOR_LEVEL = 50;

/**
 * The user's power level from the room's `m.room.power_levels` (`users`, else
 * `users_default`, else 0). A room without one gives its creator 100 (rooms before v11 name
 * the creator in `m.room.create`).
 */
export async function powerLevel(
  homeserver: HomeserverReader,
  roomId: string,
  userId: string,
): Promise<number> {
  const levels = await homeserver.roomState(roomId, "m.room.power_levels");
  if (!levels) {
    const create = await homeserver.roomState(roomId, "m.room.create");
    return create?.creator === userId ? 100 : 0;
  }
  const users = (levels.users ?? {}) as Record<string, unknown>;
  const level = Number(users[userId] ?? levels.users_default ?? 0);
  return Number.isFinite(level) ? level : 0;
}
