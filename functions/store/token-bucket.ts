import type { AppDataStore } from "./app-data.ts";

/** A token bucket: `perSecond` tokens flow in, up to `burst` wait. */
export interface BucketPolicy {
  perSecond: number;
  burst: number;
}

interface Bucket {
  tokens: number;
  /** Epoch milliseconds of `tokens`. */
  at: number;
}

/**
 * Takes a token from the bucket `key` of `collection`, kept in the application's data so that
 * every Lambda instance draws from the same bucket: undefined when one was taken, else the
 * milliseconds until one is due. A compare-and-set: a concurrent request that took a token first
 * makes this one read again.
 */
export async function takeBucketToken(
  data: AppDataStore,
  collection: string,
  key: string,
  policy: BucketPolicy,
  now: () => number = Date.now,
): Promise<number | undefined> {
  const interval = 1000 / policy.perSecond;
  // Each refused write is another request's token: after `burst` of them the bucket is empty.
  for (let attempt = 0; attempt <= policy.burst; attempt++) {
    const stored = (await data.get(collection, key)) as Bucket | undefined;
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
        collection,
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

/** When a token was last taken from a bucket (epoch milliseconds), if ever. */
export async function lastBucketToken(
  data: AppDataStore,
  collection: string,
  key: string,
): Promise<number | undefined> {
  const bucket = (await data.get(collection, key)) as Bucket | undefined;
  return bucket?.at;
}
