/**
 * Room version 12's creators (MSC4289): the creator and `additional_creators` have infinite
 * power, and an `m.room.power_levels` that names one of them in `users` is refused.
 */

/** Whether a room version gives its creators infinite power: 12 and later, and the MSC's own. */
export const creatorsHaveInfinitePower = (roomVersion: string) =>
  /^\d+$/.test(roomVersion)
    ? Number(roomVersion) >= 12
    : roomVersion.startsWith("org.matrix.hydra.");

/** `powerLevels` without the creators in its `users`, where the version would refuse them. */
export function withoutCreators(
  powerLevels: Record<string, unknown>,
  creators: string[],
): Record<string, unknown> {
  const { users } = powerLevels;
  if (typeof users !== "object" || users === null) return powerLevels;
  return {
    ...powerLevels,
    users: Object.fromEntries(
      Object.entries(users).filter(([userId]) => !creators.includes(userId)),
    ),
  };
}

/** A room's creators, from its `m.room.create` event (with its sender). */
export const creatorsOf = (create: { sender: string; content: Record<string, unknown> }) => [
  create.sender,
  ...(Array.isArray(create.content.additional_creators)
    ? create.content.additional_creators.filter((id): id is string => typeof id === "string")
    : []),
];
