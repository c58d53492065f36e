/** What the outbox remembers of the users it registered and the rooms they joined. */
export interface MembershipStore {
  isRegistered(userId: string): Promise<boolean>;
  markRegistered(userId: string): Promise<void>;
  markJoined(roomId: string, userId: string): Promise<void>;
}
