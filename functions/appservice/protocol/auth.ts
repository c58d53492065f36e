import { createHash, timingSafeEqual } from "node:crypto";
import { forbidden, unauthorized } from "../../shared/errors.ts";

/** Compares secrets in constant time: digests first, so lengths leak nothing either. */
export function tokensEqual(given: string, expected: string): boolean {
  const digest = (value: string) => createHash("sha256").update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * Checks the homeserver's `hs_token`, sent as `Authorization: Bearer` or, by older
 * homeservers, as `?access_token=`. When both are present they must agree.
 */
export function authenticateHomeserver(
  authorization: string | undefined,
  accessToken: string | undefined,
  hsToken: string,
): void {
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
  if (!tokensEqual(token, hsToken)) throw forbidden("Invalid hs_token");
}
