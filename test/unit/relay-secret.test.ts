import { mkdtemp, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { localRelaySecret } from "../../functions/local/relay-secret.ts";

// Local mode's RELAY_SECRET: never a weak one, never none.

const registrationIn = async () =>
  join(await mkdtemp(join(tmpdir(), "relay-secret-")), "registration.yaml");

describe("localRelaySecret", () => {
  it("RELAY_SECRET when given, refused under 32 characters, naming the variable", async () => {
    const path = await registrationIn();
    const given = "x".repeat(32);
    expect(await localRelaySecret(given, path)).toEqual({
      secret: given,
      source: "RELAY_SECRET",
      created: false,
    });
    await expect(localRelaySecret("hunter2", path)).rejects.toThrow(
      "RELAY_SECRET must be at least 32 characters",
    );
  });

  it("none given: a fresh one in relay-secret beside the registration (0600), the same at the next start; a short file refused", async () => {
    const path = await registrationIn();
    const file = join(path, "..", "relay-secret");
    const first = await localRelaySecret("", path);
    expect(first).toMatchObject({ source: file, created: true });
    expect(first.secret.length).toBeGreaterThanOrEqual(32);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await readFile(file, "utf8")).trim()).toBe(first.secret);
    expect(await localRelaySecret(undefined, path)).toEqual({ ...first, created: false });
    await writeFile(file, "short\n");
    await expect(localRelaySecret(undefined, path)).rejects.toThrow(
      `${file} must hold at least 32 characters`,
    );
  });
});
