// Issue 25's check: an application is a folder that declares itself. Echo-bot's folder, copied
// under a new name into functions/applications/ (its manifest given a namespace, to tell it
// apart), runs by that name with no other file touched: registration, events, the stack's
// choice (`cdk synth -c application=`), bundle.
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { bundle } from "../../bench/floor.ts";
import { parseRegistration } from "../../functions/appservice/protocol/registration.ts";
import {
  applicationModuleOf,
  applicationNames,
  loadApplication,
} from "../../functions/local/applications.ts";
import { applicationChoice } from "../../infra/application.ts";
import { functionEntries } from "../../infra/bundling.ts";
import { makeEvent, NO_DEAD_LETTERS, waitFor, waitUntilDrained } from "../support/appservice.ts";
import { roomWithBot, SERVER, startWithHomeserver } from "../support/with-homeserver.ts";

const root = join(import.meta.dirname, "../..");
const name = `copied-echo-${process.pid}`;
const folder = join(root, "functions/applications", name);

describe("an application copied into functions/applications/ runs by its folder's name", () => {
  beforeAll(() => {
    cpSync(join(root, "functions/applications/echo-bot"), folder, { recursive: true });
    writeFileSync(
      join(folder, "manifest.ts"),
      [
        'import { defineApplication } from "../../appservice/api.ts";',
        "",
        'export const manifest = defineApplication({ namespaces: { users: ["_copied_"] } });',
        "",
        'const whole = async () => (await import("./index.ts")).application;',
        "export const events = whole;",
        "export const queries = whole;",
        "export const routes = whole;",
        "export const operator = whole;",
        "",
      ].join("\n"),
    );
  });
  afterAll(() => rmSync(folder, { recursive: true, force: true }));

  it("is listed, and npm run registration claims its namespace", async () => {
    expect(applicationNames()).toContain(name);
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", "scripts/registration.ts", "--server-name", "example.org"],
      { cwd: root, env: { ...process.env, APPLICATION: name } },
    );
    const registration = parseRegistration(parse(stdout));
    expect(registration.namespaces.users.map((namespace) => namespace.regex)).toContain(
      "@_copied_.*:example\\.org",
    );
  });

  it("handles its events in-process: joins when invited, echoes a message", async () => {
    const { application } = await loadApplication(applicationModuleOf(name));
    const started = await startWithHomeserver({ application });
    const { homeserver, send, local } = started;
    const room = `!copied:${SERVER}`;
    await roomWithBot(started, room);
    expect((await send("hello", [makeEvent(room, "hello")])).status).toBe(200);
    await waitFor(() => homeserver.sent.length >= 1);
    expect(await waitUntilDrained(local)).toEqual(NO_DEAD_LETTERS);
    expect(homeserver.sent.map((sent) => sent.content.body)).toEqual(["echo: hello"]);
  });

  it("is what `cdk synth -c application=` runs by its name: routes and namespaces", async () => {
    const choice = await applicationChoice(name, () => undefined);
    expect(choice.name).toBe(name);
    expect(choice.application.userPrefixes).toEqual(["_copied_"]);
    expect(choice.application.routes?.map(({ method, path }) => `${method} ${path}`)).toEqual([
      "GET /echo/{text}",
    ]);
  });

  it("is what its Lambda bundle holds, and no other application", async () => {
    const dir = mkdtempSync(join(tmpdir(), "copied-application-"));
    try {
      const { inputs } = await bundle(
        join(root, functionEntries.events),
        join(dir, "events.mjs"),
        name,
      );
      const applications = inputs.filter((input) => input.startsWith("functions/applications/"));
      expect(applications).toContain(`functions/applications/${name}/index.ts`);
      expect(
        applications.filter((input) => !input.startsWith(`functions/applications/${name}/`)),
      ).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
