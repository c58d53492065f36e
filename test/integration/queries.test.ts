import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from "vitest";
import type { Application, ThirdPartyProtocol } from "../../functions/appservice/application.ts";
import { registrationYaml } from "../../functions/appservice/protocol/registration.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { checkHomeserver } from "../../functions/matrix/homeserver-health.ts";
import { DynamoDbStore } from "../../functions/store/dynamodb/store.ts";
import { pingHomeserver } from "../../scripts/ping-homeserver.ts";
import { makeEvent, tempDir, waitFor } from "../support/appservice.ts";
import {
  SERVER,
  startAppserviceAndHomeserver,
  startWithHomeserver,
} from "../support/with-homeserver.ts";

const ircProtocol: ThirdPartyProtocol = {
  user_fields: ["network", "nickname"],
  location_fields: ["network", "channel"],
  icon: "mxc://example.org/irc",
  field_types: {
    network: { regexp: "[a-z.]+", placeholder: "libera.chat" },
    nickname: { regexp: "[^\\s]+", placeholder: "alice" },
    channel: { regexp: "#[^\\s]+", placeholder: "#matrix" },
  },
  instances: [{ desc: "Libera", fields: { network: "libera.chat" }, network_id: "libera" }],
};

/** Accepts users and aliases whose localpart ends in `ok`, and speaks IRC. */
function testApplication(asked: string[]): Application {
  return {
    onUserQuery(userId) {
      asked.push(userId);
      return userId.includes("ok:")
        ? { displayName: "Okay User", avatarUrl: "mxc://example.org/ok" }
        : undefined;
    },
    onAliasQuery(alias) {
      asked.push(alias);
      return alias.includes("ok:") ? { name: "Okay Room", topic: "bridged" } : undefined;
    },
    thirdParty: {
      protocols: { irc: ircProtocol },
      users: (protocol, fields) =>
        fields.nickname === "alice"
          ? [
              {
                userid: `@_as_alice:${SERVER}`,
                protocol,
                fields: { network: "libera.chat", nickname: "alice" },
              },
            ]
          : [],
      locations: (protocol, fields) =>
        fields.channel === "#matrix"
          ? [
              {
                alias: `#_as_matrix:${SERVER}`,
                protocol,
                fields: { network: "libera.chat", channel: "#matrix" },
              },
            ]
          : [],
      usersByUserId: (userId) =>
        userId === `@_as_alice:${SERVER}`
          ? [{ userid: userId, protocol: "irc", fields: { nickname: "alice" } }]
          : [],
      locationsByAlias: (alias) =>
        alias === `#_as_matrix:${SERVER}`
          ? [{ alias, protocol: "irc", fields: { channel: "#matrix" } }]
          : [],
    },
  };
}

const expectError = async (response: Response, status: number, errcode: string) => {
  expect(response.status).toBe(status);
  expect(((await response.json()) as { errcode: string }).errcode).toBe(errcode);
};

describe("user and alias queries", () => {
  it("a namespaced user the application accepts → one register call with the right body, its profile, 200", async () => {
    const asked: string[] = [];
    const { get, homeserver } = await startWithHomeserver({ application: testApplication(asked) });
    const userId = `@_as_ok:${SERVER}`;
    const response = await get(`/_matrix/app/v1/users/${encodeURIComponent(userId)}`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({});
    const registers = homeserver.requests.filter((r) => r.path.endsWith("/register"));
    expect(registers).toHaveLength(1);
    expect(registers[0]?.body).toEqual({
      type: "m.login.application_service",
      username: "_as_ok",
      inhibit_login: true,
    });
    expect(registers[0]?.query).toEqual({});
    expect(homeserver.profiles.get(userId)).toEqual({
      displayname: "Okay User",
      avatar_url: "mxc://example.org/ok",
    });
    // Asked again (legacy path): it exists, nothing more is created.
    expect((await get(`/users/${encodeURIComponent(userId)}`)).status).toBe(200);
    expect(homeserver.requests.filter((r) => r.path.endsWith("/register"))).toHaveLength(1);
  });

  it("a namespaced user the application rejects → 404 M_NOT_FOUND, no homeserver call", async () => {
    const asked: string[] = [];
    const { get, homeserver } = await startWithHomeserver({ application: testApplication(asked) });
    await expectError(
      await get(`/_matrix/app/v1/users/${encodeURIComponent(`@_as_nope:${SERVER}`)}`),
      404,
      "M_NOT_FOUND",
    );
    expect(asked).toEqual([`@_as_nope:${SERVER}`]);
    expect(homeserver.requests).toHaveLength(0);
  });

  it("a user or alias outside our namespaces → 404, and the application is not asked", async () => {
    const asked: string[] = [];
    const { get } = await startWithHomeserver({ application: testApplication(asked) });
    await expectError(
      await get(`/_matrix/app/v1/users/${encodeURIComponent(`@ok:${SERVER}`)}`),
      404,
      "M_NOT_FOUND",
    );
    await expectError(
      await get(`/_matrix/app/v1/rooms/${encodeURIComponent(`#ok:${SERVER}`)}`),
      404,
      "M_NOT_FOUND",
    );
    expect(asked).toEqual([]);
  });

  it("an alias → createRoom as the bot with room_alias_name, 200; legacy path too", async () => {
    const { get, homeserver } = await startWithHomeserver({ application: testApplication([]) });
    const response = await get(`/_matrix/app/v1/rooms/${encodeURIComponent(`#_as_ok:${SERVER}`)}`);
    expect(response.status).toBe(200);
    const creates = homeserver.requests.filter((r) => r.path.endsWith("/createRoom"));
    expect(creates).toHaveLength(1);
    expect(creates[0]?.body).toEqual({
      room_alias_name: "_as_ok",
      name: "Okay Room",
      topic: "bridged",
    });
    expect(creates[0]?.query).toEqual({});
    expect(homeserver.aliases.has(`#_as_ok:${SERVER}`)).toBe(true);
    expect((await get(`/rooms/${encodeURIComponent(`#_as_ok:${SERVER}`)}`)).status).toBe(200);
  });

  it("homeserver 429 then 200 inside the budget → 200", async () => {
    const { get, homeserver } = await startWithHomeserver({ application: testApplication([]) });
    homeserver.cue((r) => r.path.endsWith("/register"), {
      status: 429,
      body: { errcode: "M_LIMIT_EXCEEDED", error: "Too many requests", retry_after_ms: 500 },
    });
    homeserver.cue((r) => r.path.endsWith("/register"), {
      status: 502,
      body: { errcode: "M_UNKNOWN", error: "Bad gateway" },
    });
    const response = await get(`/_matrix/app/v1/users/${encodeURIComponent(`@_as_ok:${SERVER}`)}`);
    expect(response.status).toBe(200);
    expect(
      homeserver.requests.filter((r) => r.path.endsWith("/register")).map((r) => r.status),
    ).toEqual([429, 502, 200]);
  });

  it("a homeserver failing past the budget → 404", async () => {
    const { get, homeserver } = await startWithHomeserver({
      application: testApplication([]),
      queryBudgetMs: 1500,
    });
    homeserver.cue(
      (r) => r.path.endsWith("/register"),
      { status: 500, body: { errcode: "M_UNKNOWN", error: "down" } },
      100,
    );
    const started = Date.now();
    await expectError(
      await get(`/_matrix/app/v1/users/${encodeURIComponent(`@_as_ok:${SERVER}`)}`),
      404,
      "M_NOT_FOUND",
    );
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("16 concurrent queries for the same new alias → one createRoom, all 200", async () => {
    const { get, homeserver } = await startWithHomeserver({ application: testApplication([]) });
    const path = `/_matrix/app/v1/rooms/${encodeURIComponent(`#_as_ok:${SERVER}`)}`;
    const responses = await Promise.all(Array.from({ length: 16 }, () => get(path)));
    expect(responses.map((r) => r.status)).toEqual(Array(16).fill(200));
    expect(homeserver.requests.filter((r) => r.path.endsWith("/createRoom"))).toHaveLength(1);
  });
});

describe("third-party lookups", () => {
  // Lookups change nothing: one appservice serves them all.
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  beforeAll(async () => {
    started = await startAppserviceAndHomeserver({ application: testApplication([]) });
  });
  afterAll(() => started?.stop());

  it.each(["/_matrix/app/v1", "/_matrix/app/unstable"])(
    "answer in the spec's shapes under %s",
    async (prefix) => {
      const { get } = started;
      const json = async (path: string) => {
        const response = await get(`${prefix}${path}`);
        expect(response.status, path).toBe(200);
        return response.json();
      };
      expect(await json("/thirdparty/protocol/irc")).toEqual(ircProtocol);
      expect(await json("/thirdparty/user/irc?network=libera.chat&nickname=alice")).toEqual([
        {
          userid: `@_as_alice:${SERVER}`,
          protocol: "irc",
          fields: { network: "libera.chat", nickname: "alice" },
        },
      ]);
      expect(
        await json(`/thirdparty/location/irc?channel=${encodeURIComponent("#matrix")}`),
      ).toEqual([
        {
          alias: `#_as_matrix:${SERVER}`,
          protocol: "irc",
          fields: { network: "libera.chat", channel: "#matrix" },
        },
      ]);
      expect(
        await json(`/thirdparty/user?userid=${encodeURIComponent(`@_as_alice:${SERVER}`)}`),
      ).toEqual([
        { userid: `@_as_alice:${SERVER}`, protocol: "irc", fields: { nickname: "alice" } },
      ]);
      expect(
        await json(`/thirdparty/location?alias=${encodeURIComponent(`#_as_matrix:${SERVER}`)}`),
      ).toEqual([
        { alias: `#_as_matrix:${SERVER}`, protocol: "irc", fields: { channel: "#matrix" } },
      ]);
      await expectError(await get(`${prefix}/thirdparty/protocol/xmpp`), 404, "M_NOT_FOUND");
      await expectError(
        await get(`${prefix}/thirdparty/user/xmpp?nickname=alice`),
        404,
        "M_NOT_FOUND",
      );
      await expectError(
        await get(`${prefix}/thirdparty/user/irc?nickname=bob`),
        404,
        "M_NOT_FOUND",
      );
      await expectError(
        await get(`${prefix}/thirdparty/location?alias=${encodeURIComponent("#x:y")}`),
        404,
        "M_NOT_FOUND",
      );
      await expectError(await get(`${prefix}/thirdparty/user`), 400, "M_MISSING_PARAM");
    },
  );

  it("an application without third-party support → 404 for every protocol", async () => {
    const { get } = await startWithHomeserver({ application: {} });
    await expectError(await get("/_matrix/app/v1/thirdparty/protocol/irc"), 404, "M_NOT_FOUND");
  });
});

describe("ping", () => {
  it("POST /_matrix/app/v1/ping → 200 {}, with a transaction_id, null or none", async () => {
    const { local, registration } = await startWithHomeserver();
    for (const body of ['{"transaction_id":"abc"}', '{"transaction_id":null}', "{}"]) {
      const response = await fetch(`${local.url}/_matrix/app/v1/ping`, {
        method: "POST",
        headers: { authorization: `Bearer ${registration.hs_token}` },
        body,
      });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({});
    }
  });

  it("npm run ping: the homeserver pings the appservice and reports the duration, or what is wrong", async () => {
    const { homeserver, registration } = await startWithHomeserver();
    const ok = await pingHomeserver(homeserver.url, registration);
    expect(ok).toEqual({
      ok: true,
      message: expect.stringMatching(/reached the appservice and back in \d+ ms/),
    });

    homeserver.appservice = { id: registration.id, url: null, hsToken: registration.hs_token };
    expect((await pingHomeserver(homeserver.url, registration)).message).toMatch(
      /no URL for this appservice/,
    );

    homeserver.appservice = {
      id: registration.id,
      url: "http://127.0.0.1:1",
      hsToken: registration.hs_token,
    };
    expect((await pingHomeserver(homeserver.url, registration)).message).toMatch(
      /could not connect to the appservice/,
    );

    const { local } = await startWithHomeserver();
    homeserver.appservice = { id: registration.id, url: local.url, hsToken: "not-the-token" };
    expect((await pingHomeserver(homeserver.url, registration)).message).toMatch(
      /answered HTTP 403 \(the homeserver's hs_token/,
    );

    expect(
      (await pingHomeserver(homeserver.url, { ...registration, as_token: "wrong" })).message,
    ).toMatch(/does not know appservice/);
    expect((await pingHomeserver("http://127.0.0.1:1", registration)).ok).toBe(false);
  });
});

describe("the operator console's homeserver check", () => {
  it("reports the ping's round trip, only reachability before Matrix v1.7, or why it failed", async () => {
    const { homeserver, registration } = await startWithHomeserver();
    const check = () => checkHomeserver(homeserver.url, registration.id, registration.as_token);
    expect(await check()).toEqual({
      reachable: true,
      checkedWith: "ping",
      roundTripMs: expect.any(Number),
    });

    homeserver.appservice = { id: registration.id, url: null, hsToken: registration.hs_token };
    expect(await check()).toEqual({
      reachable: true,
      checkedWith: "ping",
      detail: expect.stringMatching(/^ping failed: 400 M_URL_NOT_SET/),
    });

    homeserver.pingSupported = false;
    expect(await check()).toEqual({
      reachable: true,
      checkedWith: "versions",
      detail: expect.stringContaining("before Matrix v1.7"),
    });

    expect(
      await checkHomeserver("http://127.0.0.1:1", registration.id, registration.as_token),
    ).toEqual({
      reachable: false,
      checkedWith: "none",
      detail: expect.stringMatching(/^unreachable: /),
    });
  });
});

describe("ping against a homeserver older than Matrix v1.7", () => {
  it("explains the M_UNRECOGNIZED, and shows the last transaction from the appservice's records", async () => {
    const { local, homeserver, registration, send } = await startWithHomeserver();
    homeserver.pingSupported = false;
    const dynamodb = localDynamoDb(local.dynamodbEndpoint);
    onTestFinished(() => dynamodb.destroy());
    const records = new DynamoDbStore(dynamodb, local.tableName);

    const empty = await pingHomeserver(homeserver.url, registration, records);
    expect(empty.ok).toBe(false);
    expect(empty.message).toMatch(
      /^400 M_UNRECOGNIZED: the homeserver predates the appservice ping \(Matrix v1\.7\)\./,
    );
    expect(empty.message).toContain("Everything else works without it");
    expect(empty.message).toContain("say !ping in a room with the bot");
    expect(empty.message).toContain("hold no transaction");

    const first = [makeEvent("!r:test.local", "one")];
    expect((await send("41", first)).status).toBe(200);
    const between = Date.now();
    await waitFor(() => Date.now() > between, 1000, "the clock to move on");
    expect((await send("42", [makeEvent("!r:test.local", "two")])).status).toBe(200);
    const sent = Date.now();
    // A retry of an older transaction is no new transaction.
    expect((await send("41", first)).status).toBe(200);
    const { message } = await pingHomeserver(homeserver.url, registration, records);
    const at = /txnId 42, at (\S+) \(\d+ s ago\)\.$/.exec(message)?.[1];
    expect(at, message).toBeDefined();
    expect(Date.parse(at as string)).toBeGreaterThan(between);
    expect(Date.parse(at as string)).toBeLessThanOrEqual(sent);

    // Without the records, it says how to reach them.
    expect((await pingHomeserver(homeserver.url, registration)).message).toMatch(
      /run this with DYNAMODB_ENDPOINT .* TABLE_NAME/,
    );
    // Newer homeservers answer an unknown endpoint with 404.
    homeserver.pingSupported = true;
    homeserver.cue((r) => r.path.includes("/appservice/"), {
      status: 404,
      body: { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" },
    });
    expect((await pingHomeserver(homeserver.url, registration)).message).toMatch(
      /^404 M_UNRECOGNIZED: the homeserver predates the appservice ping/,
    );

    // The script itself, reading the table through DYNAMODB_ENDPOINT and TABLE_NAME.
    homeserver.pingSupported = false;
    const registrationPath = join(await tempDir(), "registration.yaml");
    await writeFile(registrationPath, registrationYaml(registration));
    const script = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", "scripts/ping.ts"],
      {
        cwd: new URL("../..", import.meta.url).pathname,
        env: {
          ...process.env,
          REGISTRATION: registrationPath,
          HOMESERVER_URL: homeserver.url,
          DYNAMODB_ENDPOINT: local.dynamodbEndpoint,
          TABLE_NAME: local.tableName,
        },
      },
    ).catch((error: { code: number; stderr: string }) => error);
    expect(script).toMatchObject({ code: 1 });
    expect((script as { stderr: string }).stderr).toMatch(
      /predates the appservice ping[\s\S]*The last transaction the appservice received: txnId 42, at /,
    );
  });
});

describe("auth on every query path", () => {
  // Refused requests change nothing: one appservice serves them all.
  let started: Awaited<ReturnType<typeof startAppserviceAndHomeserver>>;
  beforeAll(async () => {
    started = await startAppserviceAndHomeserver({ application: testApplication([]) });
  });
  afterAll(() => started?.stop());

  it.each([
    "/_matrix/app/v1/users/%40_as_ok%3Atest.local",
    "/users/%40_as_ok%3Atest.local",
    "/_matrix/app/v1/rooms/%23_as_ok%3Atest.local",
    "/rooms/%23_as_ok%3Atest.local",
    "/_matrix/app/v1/thirdparty/protocol/irc",
    "/_matrix/app/unstable/thirdparty/user?userid=x",
  ])("%s: 401 M_UNAUTHORIZED without a token, 403 M_FORBIDDEN with a wrong one", async (path) => {
    const { get, homeserver } = started;
    const before = homeserver.requests.length;
    await expectError(await get(path, ""), 401, "M_UNAUTHORIZED");
    await expectError(await get(path, "wrong"), 403, "M_FORBIDDEN");
    expect(homeserver.requests.slice(before)).toEqual([]);
  });
});
