import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  newRegistration,
  registrationYaml,
} from "../../functions/appservice/protocol/registration.ts";
import { applicationModuleOf } from "../../functions/local/applications.ts";
import { freePort } from "../../functions/local/free-port.ts";
import {
  makeEvent,
  putTransaction,
  recordingLog,
  startTestAppservice,
  tempDir,
} from "../support/appservice.ts";
import { startNpm, stopAllNpmStarts } from "../support/npm-start.ts";

afterEach(() => stopAllNpmStarts());

/** What a newcomer following the README met on a first start (issue 24). */
describe("npm start's defaults", () => {
  it("makes a DATA_DIR that does not exist, gives a fresh registration an ID of its own, and says the SDK's Node.js warning in one line", async () => {
    const dir = await tempDir();
    const dataDir = join(dir, "not", "yet");
    const registrationPath = join(dir, "registration.yaml");
    const npm = await startNpm({
      PORT: String(await freePort()),
      REGISTRATION: registrationPath,
      DATA_DIR: dataDir,
      // As in a shell: the test run itself silences the SDK's warning (vitest.config.ts).
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "",
    });
    // DynamoDB Local keeps its tables in the folder it was given, made for it.
    expect(existsSync(join(dataDir, "shared-local-instance.db"))).toBe(true);
    const registration = parse(readFileSync(registrationPath, "utf8")) as Record<string, string>;
    expect(registration.id).toMatch(/^serverless-appservice-[0-9a-f]{8}$/);
    // Every function's thread makes its SDK clients: the ack writes the table and the queue.
    const ack = await putTransaction(
      npm.url,
      "1",
      { events: [makeEvent("!room:localhost", "hello")] },
      { token: registration.hs_token },
    );
    expect(ack.status).toBe(200);
    await npm.stop("SIGTERM");
    expect(npm.lines.filter((line) => line.includes("NodeVersionSupportWarning"))).toEqual([]);
    const notice = npm.lines.filter((line) =>
      line.includes("the AWS SDK's releases after January 2027 need Node.js 22"),
    );
    expect(notice).toHaveLength(Number(process.versions.node.split(".")[0]) < 22 ? 1 : 0);
  }, 120_000);

  it("two fresh registrations have IDs of their own; an existing one keeps its ID", async () => {
    const first = await startTestAppservice();
    const second = await startTestAppservice();
    try {
      expect(first.registrationCreated && second.registrationCreated).toBe(true);
      expect(first.registration.id).toMatch(/^serverless-appservice-[0-9a-f]{8}$/);
      expect(second.registration.id).toMatch(/^serverless-appservice-[0-9a-f]{8}$/);
      expect(first.registration.id).not.toBe(second.registration.id);
    } finally {
      await Promise.all([first.stop(), second.stop()]);
    }
    const dir = await tempDir();
    const registrationPath = join(dir, "registration.yaml");
    const yaml = registrationYaml(
      newRegistration({
        id: "serverless-appservice",
        url: null,
        senderLocalpart: "appservice",
        serverName: "test.local",
        prefix: "_as_",
      }),
    );
    writeFileSync(registrationPath, yaml);
    const existing = await startTestAppservice({ registrationPath });
    await existing.stop();
    expect(existing.registration.id).toBe("serverless-appservice");
    expect(readFileSync(registrationPath, "utf8")).toBe(yaml);
  });

  it("warns of each namespace the chosen application needs and the registration lacks, aliases too", async () => {
    const dir = await tempDir();
    const registrationPath = join(dir, "registration.yaml");
    // The webhooks' registration, given to the relay.
    writeFileSync(
      registrationPath,
      registrationYaml(
        newRegistration({
          url: null,
          senderLocalpart: "bot",
          serverName: "test.local",
          prefix: "_as_",
          userPrefixes: ["_webhook_"],
        }),
      ),
    );
    const { log, lines } = recordingLog();
    const local = await startTestAppservice({
      registrationPath,
      applicationModule: applicationModuleOf("relay"),
      log,
    });
    await local.stop();
    expect(
      lines
        .filter((line) => line.level === "warn" && /namespace/.test(line.message))
        .map((line) => [line.message, line.attributes.add]),
    ).toEqual([
      ["the registration misses a namespace the application needs", "@_relay_.*:test.local"],
      ["the registration misses a namespace the application needs", "#_relay_.*:test.local"],
    ]);
  });
});
