import type { AppDataStore, AppDataWrite } from "../../appservice/api.ts";

/** A token bucket: `perSecond` tokens flow in, up to `burst` wait. */
export interface BucketPolicy {
  perSecond: number;
  burst: number;
}

/**
 * Each webhook's: a CI's burst of messages passes, and a leaked URL's flood is held to one
 * message a second in its own room, leaving the other webhooks their share of the homeserver.
 */
export const WEBHOOK_RATE: BucketPolicy = { perSecond: 1, burst: 20 };

// In the application's data, so that every Lambda instance draws from the same bucket.
const BUCKETS = "webhook-rate";

interface Bucket {
  tokens: number;
  /** Epoch milliseconds of `tokens`. */
  at: number;
}

/**
 * Takes a token from `key`'s bucket: undefined when one was taken, else the milliseconds until
 * one is due. A compare-and-set: a concurrent request that took a token first makes this one
 * read again.
 */
export async function takeToken(
  data: AppDataStore,
  key: string,
  policy: BucketPolicy = WEBHOOK_RATE,
  now: () => number = Date.now,
): Promise<number | undefined> {
  const interval = 1000 / policy.perSecond;
  // Each refused write is another request's token: after `burst` of them the bucket is empty.
  for (let attempt = 0; attempt <= policy.burst; attempt++) {
    const stored = (await data.get(BUCKETS, key)) as Bucket | undefined;
    const time = now();
    const bucket = stored ?? { tokens: policy.burst, at: time };
    // Never backwards: another instance's clock may run ahead of this one.
    const at = Math.max(time, bucket.at);
    const tokens = Math.min(
      policy.burst,
      bucket.tokens + ((at - bucket.at) * policy.perSecond) / 1000,
    );
    if (tokens < 1) return Math.ceil((1 - tokens) * interval);
    const taken = await data.write([
      {
        collection: BUCKETS,
        key,
        value: { tokens: tokens - 1, at } satisfies Bucket,
        ...(stored
          ? { ifEquals: stored as unknown as Record<string, unknown> }
          : { ifAbsent: true }),
      },
    ]);
    if (taken) return undefined;
  }
  return Math.ceil(interval);
}

/** The write that forgets `key`'s bucket. */
export const forgetBucket = (key: string): AppDataWrite => ({
  collection: BUCKETS,
  key,
  delete: true,
});

/** When a token was last taken from `key`'s bucket (epoch milliseconds), if ever. */
export async function lastTokenTaken(data: AppDataStore, key: string): Promise<number | undefined> {
  const bucket = (await data.get(BUCKETS, key)) as Bucket | undefined;
  return bucket?.at;
}
