import { describe, expect, it } from "vitest";
import { dynamoDbLocalEnv } from "../../functions/local/dynamodb-local.ts";
import type { FunctionWorkerData } from "../../functions/local/function-worker.ts";
import { takeVariable } from "../../functions/local/remote-secret.ts";
import { workerDataFor } from "../../functions/local/workers.ts";

// Local mode's remote secret reaches the app function's thread and the outbox's only: not the
// events thread (it runs the application's code), not the environment the threads and the
// DynamoDB Local process copy.

const SECRET = "the-relay-secret-shared-with-the-remote";
const tokens = { asToken: "as", hsToken: "hs", adminToken: "admin", remoteSecret: SECRET };
const data = (role: FunctionWorkerData["role"]) =>
  ({ role, tokens, applicationModule: "file:///app.ts", port: 1 }) as FunctionWorkerData;

describe("local mode's remote secret", () => {
  it("the events thread's data holds no secret; the HTTP and outbox threads' do", () => {
    const events = workerDataFor(data("events"));
    expect(events.tokens).toEqual({ asToken: "as", hsToken: "hs", adminToken: "admin" });
    expect(JSON.stringify(events)).not.toContain(SECRET);
    expect(workerDataFor(data("outbox")).tokens.remoteSecret).toBe(SECRET);
    expect(workerDataFor(data("http")).tokens.remoteSecret).toBe(SECRET);
  });

  it("the crypto state's secret reaches the events thread (it decrypts) and the outbox's (it encrypts) alone", () => {
    const crypto = "the-crypto-store-secret-of-the-bot-device";
    const withCrypto = (role: FunctionWorkerData["role"]) =>
      workerDataFor({ ...data(role), tokens: { ...tokens, cryptoStoreSecret: crypto } });
    expect(withCrypto("events").tokens).toEqual({
      asToken: "as",
      hsToken: "hs",
      adminToken: "admin",
      cryptoStoreSecret: crypto,
    });
    expect(withCrypto("outbox").tokens).toMatchObject({ cryptoStoreSecret: crypto });
    expect(JSON.stringify(withCrypto("http"))).not.toContain(crypto);
    expect(withCrypto("http").tokens.remoteSecret).toBe(SECRET);
  });

  it("the variable is taken out of the environment when read, so no thread or child copies it", () => {
    const env: NodeJS.ProcessEnv = { RELAY_SECRET: SECRET, PATH: "/bin" };
    expect(takeVariable(env, "RELAY_SECRET")).toBe(SECRET);
    expect(env).toEqual({ PATH: "/bin" });
    expect(takeVariable(env, "RELAY_SECRET")).toBeUndefined();
  });

  it("DynamoDB Local gets what runs Java, not our secrets or tokens", () => {
    const env = dynamoDbLocalEnv({
      PATH: "/usr/bin",
      JAVA_HOME: "/jdk",
      RELAY_SECRET: SECRET,
      ADMIN_TOKEN: "admin",
      AWS_SECRET_ACCESS_KEY: "aws",
    });
    expect(env).toEqual({ PATH: "/usr/bin", JAVA_HOME: "/jdk", DDB_LOCAL_TELEMETRY: "0" });
  });
});
