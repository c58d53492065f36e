/**
 * What the outbox remembers of the users it registered and the profile fields (`displayname`,
 * `avatar_url`) it last set for the bot.
 */
export interface OutboxMemory {
  isRegistered(userId: string): Promise<boolean>;
  markRegistered(userId: string): Promise<void>;
  lastProfile(userId: string): Promise<Record<string, string> | undefined>;
  markProfileSet(userId: string, profile: Record<string, string>): Promise<void>;
}
