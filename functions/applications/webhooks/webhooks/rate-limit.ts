import {
  type AppDataStore,
  type AppDataWrite,
  type BucketPolicy,
  lastBucketToken,
  takeBucketToken,
} from "../../../appservice/api.ts";

export type { BucketPolicy };

/**
 * Each webhook's: a CI's burst of messages passes, and a leaked URL's flood is held to one
 * message a second in its own room, leaving the other webhooks their share of the homeserver.
 */
export const WEBHOOK_RATE: BucketPolicy = { perSecond: 1, burst: 20 };

// In the application's data, so that every Lambda instance draws from the same bucket.
const BUCKETS = "webhook-rate";

/** Takes a token from `key`'s bucket (`takeBucketToken`). */
export const takeToken = (
  data: AppDataStore,
  key: string,
  policy: BucketPolicy = WEBHOOK_RATE,
  now: () => number = Date.now,
): Promise<number | undefined> => takeBucketToken(data, BUCKETS, key, policy, now);

/** The write that forgets `key`'s bucket. */
export const forgetBucket = (key: string): AppDataWrite => ({
  collection: BUCKETS,
  key,
  delete: true,
});

/** When a token was last taken from `key`'s bucket (epoch milliseconds), if ever. */
export const lastTokenTaken = (data: AppDataStore, key: string): Promise<number | undefined> =>
  lastBucketToken(data, BUCKETS, key);
