import {
  GetSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";
import { mockClient } from "aws-sdk-client-mock";
import { afterEach, describe, expect, it } from "vitest";
import {
  HS_TOKEN_REREAD_MS,
  HS_TOKEN_ROTATION_WINDOW_MS,
  HsTokens,
  type HsTokenVersions,
} from "../../functions/appservice/protocol/auth.ts";
import { hsTokenVersionsSource } from "../../functions/handlers/shared/secrets.ts";

const bearer = (token: string) => `Bearer ${token}`;
const statusOf = async (promise: Promise<unknown>) =>
  promise.then(
    () => 200,
    (error: { status?: number }) => error.status ?? 500,
  );

/** A secret whose value the test rotates, and a clock the test moves. */
function rotatingSecret(first: HsTokenVersions) {
  let now = 1_000_000;
  let versions = first;
  let reads = 0;
  const read = async () => {
    reads += 1;
    return versions;
  };
  return {
    read,
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
    rotate: (next: string) => {
      versions = { current: next, previous: versions.current, currentSince: now };
    },
    reads: () => reads,
  };
}

describe("hs_token rotation (HsTokens)", () => {
  it("accepts the old and the new token in the window, the old one no longer after it; a wrong one is 403", async () => {
    const secret = rotatingSecret({ current: "old" });
    // A warm function: it read the secret before the rotation.
    const tokens = await HsTokens.load(secret.read, secret.now);
    expect(await statusOf(tokens.authenticate(bearer("old"), undefined))).toBe(200);

    secret.advance(HS_TOKEN_REREAD_MS);
    secret.rotate("new");
    // The homeserver still sends the old one until it is restarted; then the new one, which
    // makes the function read the secret again.
    expect(await statusOf(tokens.authenticate(bearer("old"), undefined))).toBe(200);
    expect(await statusOf(tokens.authenticate(bearer("new"), undefined))).toBe(200);
    expect(await statusOf(tokens.authenticate(undefined, "old"))).toBe(200);
    expect(await statusOf(tokens.authenticate(bearer("wrong"), undefined))).toBe(403);
    expect(await statusOf(tokens.authenticate(undefined, undefined))).toBe(401);

    secret.advance(HS_TOKEN_ROTATION_WINDOW_MS - 1);
    expect(await statusOf(tokens.authenticate(bearer("old"), undefined))).toBe(200);
    secret.advance(1);
    expect(await statusOf(tokens.authenticate(bearer("old"), undefined))).toBe(403);
    expect(await statusOf(tokens.authenticate(bearer("new"), undefined))).toBe(200);
  });

  it("a cold start after the rotation accepts both in the window; without a creation time, the previous one never", async () => {
    const rotated = await HsTokens.load(async () => ({
      current: "new",
      previous: "old",
      currentSince: Date.now() - 60_000,
    }));
    expect(await statusOf(rotated.authenticate(bearer("old"), undefined))).toBe(200);
    expect(await statusOf(rotated.authenticate(bearer("new"), undefined))).toBe(200);
    const stale = await HsTokens.load(async () => ({
      current: "new",
      previous: "old",
      currentSince: Date.now() - HS_TOKEN_ROTATION_WINDOW_MS - 1,
    }));
    expect(await statusOf(stale.authenticate(bearer("old"), undefined))).toBe(403);
    const undated = await HsTokens.load(async () => ({ current: "new", previous: "old" }));
    expect(await statusOf(undated.authenticate(bearer("old"), undefined))).toBe(403);
  });

  it("reads the secret again at most once a minute, however many wrong tokens come; a failed read is a 5xx, then the tokens read before still hold", async () => {
    const secret = rotatingSecret({ current: "old" });
    const tokens = await HsTokens.load(secret.read, secret.now);
    expect(secret.reads()).toBe(1);
    for (let i = 0; i < 20; i++) {
      expect(await statusOf(tokens.authenticate(bearer(`wrong${i}`), undefined))).toBe(403);
    }
    expect(secret.reads()).toBe(1);
    secret.advance(HS_TOKEN_REREAD_MS);
    expect(await statusOf(tokens.authenticate(bearer("wrong"), undefined))).toBe(403);
    expect(secret.reads()).toBe(2);

    let flakyReads = 0;
    const flaky = await HsTokens.load(async () => {
      if (flakyReads++ > 0) throw new Error("Secrets Manager unreachable");
      return { current: "old" };
    }, secret.now);
    secret.advance(HS_TOKEN_REREAD_MS);
    expect(await statusOf(flaky.authenticate(bearer("new"), undefined))).toBe(500);
    expect(await statusOf(flaky.authenticate(bearer("old"), undefined))).toBe(200);
  });
});

describe("the hs_token's secret in Secrets Manager (hsTokenVersionsSource)", () => {
  const secrets = mockClient(SecretsManagerClient);
  afterEach(() => secrets.reset());
  const arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hs";

  it("reads AWSCURRENT with its creation time and AWSPREVIOUS; a secret never rotated has no previous", async () => {
    const put = new Date("2026-11-02T10:00:00Z");
    secrets
      .on(GetSecretValueCommand, { SecretId: arn, VersionStage: "AWSCURRENT" })
      .resolves({ SecretString: "new", CreatedDate: put })
      .on(GetSecretValueCommand, { SecretId: arn, VersionStage: "AWSPREVIOUS" })
      .resolves({ SecretString: "old" });
    const read = hsTokenVersionsSource(arn);
    expect(await read()).toEqual({ current: "new", previous: "old", currentSince: put.getTime() });

    secrets
      .on(GetSecretValueCommand, { SecretId: arn, VersionStage: "AWSPREVIOUS" })
      .rejects(new ResourceNotFoundException({ message: "no such version", $metadata: {} }));
    expect(await read()).toEqual({ current: "new", currentSince: put.getTime() });
    // Any other failure is one.
    secrets
      .on(GetSecretValueCommand, { SecretId: arn, VersionStage: "AWSPREVIOUS" })
      .rejects(new Error("throttled"));
    await expect(read()).rejects.toThrow("throttled");
  });
});
