import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { applicationNames } from "../../functions/local/applications.ts";

// An application's folder name becomes its secret's id in the stack (`<Name>Secret`) and a file
// name in local mode: only lower-case names, and none whose secret is named as a token's.

const folders: string[] = [];
afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true });
});

/** A folder of applications, each with a manifest (and one without, which is no application). */
function applications(...names: string[]): string {
  const folder = mkdtempSync(join(tmpdir(), "applications-"));
  folders.push(folder);
  for (const name of names) {
    mkdirSync(join(folder, name));
    writeFileSync(join(folder, name, "manifest.ts"), "");
  }
  mkdirSync(join(folder, "No_Manifest"));
  return folder;
}

describe("applicationNames", () => {
  it("lists the folders with a manifest, sorted", () => {
    expect(applicationNames(applications("relay", "echo-bot", "web2"))).toEqual([
      "echo-bot",
      "relay",
      "web2",
    ]);
    expect(applicationNames()).toEqual(expect.arrayContaining(["echo-bot", "relay", "webhooks"]));
  });

  it.each(["Relay", "2fa", "-x", "my_app", "a.b", "ünï"])("refuses the folder %s", (name) => {
    expect(() => applicationNames(applications("relay", name))).toThrow(
      `${name} is not lower-case letters, digits and dashes, starting with a letter`,
    );
  });

  it.each(["as-token", "hs-token", "admin-token"])("refuses %s: a token's secret id", (name) => {
    expect(() => applicationNames(applications(name))).toThrow(`${name} is reserved`);
  });
});
