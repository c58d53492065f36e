/** Profile fields as the homeserver names them: a global profile, or a user's look in one room. */
export interface ProfileFields {
  displayname?: string;
  /** An `mxc://` URI. */
  avatar_url?: string;
}

/** What is remembered of a user. */
export interface UserMemory {
  /** Registered by us (or found taken, `M_USER_IN_USE`): never registered again. */
  registered: boolean;
  /** The global profile fields last set; `{}` when none. */
  profile: ProfileFields;
}

/**
 * The Intent's one memory (`matrix/intent.ts`), shared by the outbox, the immediate calls and the
 * user queries: the users registered, the profiles set, the rooms joined. It says what was done,
 * not what the homeserver holds now: a call refused for a reason the memory says is settled
 * (403 while "joined") is repaired and the memory written again.
 */
export interface IntentMemory {
  user(userId: string): Promise<UserMemory>;
  markRegistered(userId: string): Promise<void>;
  /** Replaces the remembered global profile. */
  markProfileSet(userId: string, profile: ProfileFields): Promise<void>;
  /** The user's look in the room as last set (`{}` when none); undefined when not known to be in it. */
  member(roomId: string, userId: string): Promise<ProfileFields | undefined>;
  /** The user joined the room, wearing `look` there (`{}`: its global profile, as a join writes it). */
  markJoined(roomId: string, userId: string, look: ProfileFields): Promise<void>;
  /** The user left the room (or was made to). */
  markLeft(roomId: string, userId: string): Promise<void>;
}
