import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { localRemoteSecret } from "../../functions/local/remote-secret.ts";
import { tempDir } from "../support/temp-dirs.ts";

// Local mode's remote secret (the relay's RELAY_SECRET): never a weak one, never none.

const registrationIn = async () => join(await tempDir("remote-secret-"), "registration.yaml");

const relay = (value: string | undefined) => ({
  variable: "RELAY_SECRET",
  application: "relay",
  ...(value !== undefined && { value }),
});

describe("localRemoteSecret", () => {
  it("the manifest's variable (RELAY_SECRET) when given, refused under 32 characters, naming the variable", async () => {
    const path = await registrationIn();
    const given = "x".repeat(32);
    expect(await localRemoteSecret(relay(given), path)).toEqual({
      secret: given,
      source: "RELAY_SECRET",
      created: false,
    });
    await expect(localRemoteSecret(relay("hunter2"), path)).rejects.toThrow(
      "RELAY_SECRET must be at least 32 characters",
    );
  });

  it("none given: a fresh one in <application>-secret (relay-secret) beside the registration (0600), the same at the next start; a short file refused", async () => {
    const path = await registrationIn();
    const file = join(path, "..", "relay-secret");
    const first = await localRemoteSecret(relay(""), path);
    expect(first).toMatchObject({ source: file, created: true });
    expect(first.secret.length).toBeGreaterThanOrEqual(32);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await readFile(file, "utf8")).trim()).toBe(first.secret);
    expect(await localRemoteSecret(relay(undefined), path)).toEqual({ ...first, created: false });
    await writeFile(file, "short\n");
    await expect(localRemoteSecret(relay(undefined), path)).rejects.toThrow(
      `${file} must hold at least 32 characters`,
    );
  });
});
