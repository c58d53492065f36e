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

/** What the outbox counts of an action's server errors, across its attempts. */
export interface ServerErrorCounter {
  /** Counts one more server error for the action; returns its count, this one included. */
  countServerError(actionId: string): Promise<number>;
}
