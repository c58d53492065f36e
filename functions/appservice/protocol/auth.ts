import { createHash, timingSafeEqual } from "node:crypto";
import { forbidden, unauthorized } from "../../shared/errors.ts";

/** Compares secrets in constant time: digests first, so lengths leak nothing either. */
export function tokensEqual(given: string, expected: string): boolean {
  const digest = (value: string) => createHash("sha256").update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * The `hs_token` the homeserver presented, as `Authorization: Bearer` or, by older homeservers,
 * as `?access_token=`. When both are present they must agree.
 */
export function presentedHsToken(
  authorization: string | undefined,
  accessToken: string | undefined,
): string {
  let headerToken: string | undefined;
  if (authorization !== undefined) {
    const match = /^Bearer +([^\s,]+)$/i.exec(authorization.trim());
    if (!match) throw unauthorized("The Authorization header must be 'Bearer <hs_token>'");
    headerToken = match[1];
  }
  if (headerToken !== undefined && accessToken !== undefined && headerToken !== accessToken) {
    throw forbidden("The Authorization header and the access_token parameter disagree");
  }
  const token = headerToken ?? accessToken;
  if (token === undefined || token === "") throw unauthorized("Missing hs_token");
  return token;
}

/** Checks the homeserver's `hs_token` (`presentedHsToken`) against the one expected. */
export function authenticateHomeserver(
  authorization: string | undefined,
  accessToken: string | undefined,
  hsToken: string,
): void {
  if (!tokensEqual(presentedHsToken(authorization, accessToken), hsToken)) {
    throw forbidden("Invalid hs_token");
  }
}

/** The hs_token's secret as Secrets Manager keeps it: its value, and the one before. */
export interface HsTokenVersions {
  current: string;
  /** The value before the last rotation (Secrets Manager's `AWSPREVIOUS`), where there is one. */
  previous?: string;
  /** When `current` was put (epoch ms): the window of `previous` runs from then. */
  currentSince?: number;
}

/**
 * How long after a new hs_token is put the one before is still accepted: the time to update the
 * registration and restart the homeserver, which sends the old one until then.
 */
export const HS_TOKEN_ROTATION_WINDOW_MS = 24 * 60 * 60 * 1000;
/** A token that matches none makes the secret be read again, at most this often. */
export const HS_TOKEN_REREAD_MS = 60 * 1000;

/**
 * The hs_tokens a function accepts during a rotation: the secret's current value, and its
 * previous one until `HS_TOKEN_ROTATION_WINDOW_MS` after the current one was put. A token that
 * matches neither makes the secret be read again (at most once a minute): a warm function learns
 * of a rotation from the homeserver's first request with the new token.
 */
export class HsTokens {
  private versions: Promise<HsTokenVersions>;
  private readAt: number;

  private constructor(
    private readonly read: () => Promise<HsTokenVersions>,
    first: HsTokenVersions,
    private readonly now: () => number,
  ) {
    this.versions = Promise.resolve(first);
    this.readAt = now();
  }

  /** Read once now, so that a function that cannot read its secret fails at its start. */
  static async load(read: () => Promise<HsTokenVersions>, now: () => number = Date.now) {
    return new HsTokens(read, await read(), now);
  }

  /** 401 without a token, 403 with one accepted by none of the versions (after a re-read). */
  async authenticate(authorization: string | undefined, accessToken: string | undefined) {
    const token = presentedHsToken(authorization, accessToken);
    if (this.accepts(await this.versions, token)) return;
    if (this.now() - this.readAt >= HS_TOKEN_REREAD_MS) {
      this.readAt = this.now();
      const kept = this.versions;
      this.versions = this.read();
      // A failed read keeps what was read before, and is an error (5xx: the homeserver retries).
      this.versions.catch(() => {
        this.versions = kept;
      });
      if (this.accepts(await this.versions, token)) return;
    }
    throw forbidden("Invalid hs_token");
  }

  private accepts({ current, previous, currentSince }: HsTokenVersions, token: string): boolean {
    const inWindow =
      previous !== undefined &&
      currentSince !== undefined &&
      this.now() < currentSince + HS_TOKEN_ROTATION_WINDOW_MS;
    // Both compared every time (constant time each): which one matched is not told either.
    const matchesCurrent = tokensEqual(token, current);
    const matchesPrevious = tokensEqual(token, previous ?? current) && inWindow;
    return matchesCurrent || matchesPrevious;
  }
}
