/** A JSON object an application keeps. */
export type AppValue = Record<string, unknown>;

/** One write of an all-or-nothing `write`. */
export type AppDataWrite =
  | {
      collection: string;
      key: string;
      value: AppValue;
      /** Only if the key is free: otherwise the whole write is refused. */
      ifAbsent?: boolean;
      /**
       * Only if the key still holds this value, as `get` returned it: otherwise the whole write
       * is refused (a compare-and-set, for read-modify-write under concurrency).
       */
      ifEquals?: AppValue;
      /**
       * Epoch milliseconds after which the entry is gone: `get` and `list` no longer return it,
       * and the table's TTL deletes it (within days).
       */
      expiresAt?: number;
    }
  | { collection: string; key: string; delete: true };

/**
 * What an application stores for itself, in collections of keyed JSON values (in the
 * appservice's own table, under keys of their own).
 */
export interface AppDataStore {
  get(collection: string, key: string): Promise<AppValue | undefined>;
  /** Every entry of a collection, by key. */
  list(collection: string): Promise<{ key: string; value: AppValue }[]>;
  /** Up to 100 writes, all or none; false when an `ifAbsent` or `ifEquals` condition failed. */
  write(writes: AppDataWrite[]): Promise<boolean>;
}

/** The values of a collection's entries, typed as their writer stored them (nothing checks it). */
export async function listValues<T>(data: AppDataStore, collection: string): Promise<T[]> {
  const entries = await data.list(collection);
  return entries.map((entry) => entry.value as unknown as T);
}
