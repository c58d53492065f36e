import type { AppDataStore } from "./app-data.ts";
import { LinkConflict, type LinkMap, linkMap } from "./links.ts";

/**
 * A portal's message map, in the application's data: remote message IDs ↔ the event IDs of the
 * Matrix events they became, one to one, a map of their own per room (each its own partitions).
 */
export const messageMap = (data: AppDataStore, roomId: string): LinkMap =>
  linkMap(data, `messages ${roomId}`);

/** How the outbox fills the message maps: each send that names its remote message, once sent. */
export interface MessageLinker {
  /**
   * Links `remoteId` to `eventId` in the room's message map (a repeat finds the link made);
   * false when `eventId` is linked to another remote ID already, the map left as it was.
   */
  linkMessage(roomId: string, remoteId: string, eventId: string): Promise<boolean>;
}

export const messageLinker = (data: AppDataStore): MessageLinker => ({
  async linkMessage(roomId, remoteId, eventId) {
    try {
      await messageMap(data, roomId).link(remoteId, eventId);
      return true;
    } catch (error) {
      if (error instanceof LinkConflict) return false;
      throw error;
    }
  },
});
