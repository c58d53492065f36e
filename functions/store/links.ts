import type { AppDataStore, AppValue } from "./app-data.ts";

/**
 * One remote thing bound to one Matrix thing: a portal (a remote channel and its room), a
 * puppet (a remote user and its virtual Matrix user).
 */
export interface Link {
  remoteId: string;
  /** The room ID of a portal, the user ID of a puppet. */
  matrixId: string;
  /** What the application keeps with it (a channel's name, a user's last avatar hash, …). */
  value: AppValue;
}

/**
 * A one-to-one mapping kept in the application's data, looked up from either side. `link` is a
 * conditional write on both sides at once, so handlers racing on the same remote ID end with
 * one link, and every one of them is handed it.
 */
export interface LinkMap {
  byRemoteId(remoteId: string): Promise<Link | undefined>;
  byMatrixId(matrixId: string): Promise<Link | undefined>;
  /**
   * Binds `remoteId` to `matrixId` unless `remoteId` is bound already: the link that holds
   * (`created`: this call made it). Throws when `matrixId` alone is bound, to another remote ID.
   */
  link(remoteId: string, matrixId: string, value?: AppValue): Promise<Link & { created: boolean }>;
  /** Replaces the link's value if it still is `link.value`: false when another write came first. */
  update(link: Link, value: AppValue): Promise<boolean>;
  /** Removes the link, both sides. */
  unlink(link: Link): Promise<void>;
}

/** `link` was asked to bind a Matrix ID that is bound to another remote ID already. */
export class LinkConflict extends Error {
  override name = "LinkConflict";
}

/** The two collections of a map `name`: by remote ID, and by Matrix ID. */
const sides = (name: string) => ({ remote: `${name}.remote`, matrix: `${name}.matrix` });

/** The link map `name` ("portals", "puppets") in the application's data. */
export function linkMap(data: AppDataStore, name: string): LinkMap {
  const collections = sides(name);
  const byRemoteId = async (remoteId: string): Promise<Link | undefined> => {
    const stored = await data.get(collections.remote, remoteId);
    if (!stored) return undefined;
    return { remoteId, matrixId: stored.matrixId as string, value: stored.value as AppValue };
  };
  return {
    byRemoteId,
    async byMatrixId(matrixId) {
      const stored = await data.get(collections.matrix, matrixId);
      return stored ? byRemoteId(stored.remoteId as string) : undefined;
    },
    async link(remoteId, matrixId, value = {}) {
      const written = await data.write([
        {
          collection: collections.remote,
          key: remoteId,
          value: { matrixId, value },
          ifAbsent: true,
        },
        { collection: collections.matrix, key: matrixId, value: { remoteId }, ifAbsent: true },
      ]);
      if (written) return { remoteId, matrixId, value, created: true };
      const existing = await byRemoteId(remoteId);
      if (existing) return { ...existing, created: false };
      const other = await data.get(collections.matrix, matrixId);
      throw new LinkConflict(
        `${name}: ${matrixId} is linked to ${JSON.stringify(other?.remoteId)}, not ${JSON.stringify(remoteId)}`,
      );
    },
    update: (link, value) =>
      data.write([
        {
          collection: collections.remote,
          key: link.remoteId,
          value: { matrixId: link.matrixId, value },
          ifEquals: { matrixId: link.matrixId, value: link.value },
        },
      ]),
    async unlink(link) {
      await data.write([
        { collection: collections.remote, key: link.remoteId, delete: true },
        { collection: collections.matrix, key: link.matrixId, delete: true },
      ]);
    },
  };
}
