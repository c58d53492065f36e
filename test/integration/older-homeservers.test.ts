import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import {
  newRegistration,
  type Registration,
  registrationYaml,
} from "../../functions/appservice/protocol/registration.ts";
import type { Log } from "../../functions/shared/log.ts";
import { startTestAppservice, tempDir } from "../support/appservice.ts";

describe("a registration for older and newer homeservers", () => {
  it("npm start warns when the file asks for ephemeral events under one name only", async () => {
    const warnings: { message: string; attributes: Record<string, unknown>[] }[] = [];
    const log: Log = {
      debug() {},
      info() {},
      error() {},
      warn: (message, ...attributes) => warnings.push({ message, attributes }),
    };
    const start = async (registration: Registration) => {
      const registrationPath = join(await tempDir(), "registration.yaml");
      await writeFile(registrationPath, registrationYaml(registration));
      const local = await startTestAppservice({ registrationPath, log });
      onTestFinished(local.stop);
    };
    const { "de.sorunome.msc2409.push_ephemeral": _, ...stableOnly } = newRegistration({
      id: "older",
      url: null,
      senderLocalpart: "bot",
      serverName: "test.local",
      prefix: "_as_",
      userPrefixes: ["_webhook_"],
    });
    await start(stableOnly);
    expect(warnings).toEqual([
      {
        message: expect.stringContaining("ephemeral events under one name only"),
        attributes: [{ add: "de.sorunome.msc2409.push_ephemeral: true" }],
      },
    ]);

    warnings.length = 0;
    const { receive_ephemeral: __, ...noFlag } = stableOnly;
    await start({ ...noFlag, "de.sorunome.msc2409.push_ephemeral": true });
    expect(warnings.map((w) => w.attributes)).toEqual([[{ add: "receive_ephemeral: true" }]]);

    // Both names, as generated: nothing to say.
    warnings.length = 0;
    await start({ ...stableOnly, "de.sorunome.msc2409.push_ephemeral": true });
    expect(warnings).toEqual([]);
  });
});
