import { describe, expect, it } from "vitest";
import {
  type ApplicationManifest,
  applicationConfig,
  SettingError,
} from "../../functions/appservice/manifest.ts";

// The setting a manifest's `remoteSecret.urlSetting` names is the remote service's URL: the
// outbox takes its origin (`new URL`) and signs what goes there. A bad value stops the start or
// the synth with its name, not the outbox at its first delivery.

const manifest: ApplicationManifest = {
  settings: {
    REMOTE_URL: {
      description: "the remote service at",
      functions: ["events"],
      context: "remoteUrl",
    },
  },
  remoteSecret: { urlSetting: "REMOTE_URL" },
};

describe("applicationConfig: remoteSecret.urlSetting", () => {
  it("takes an http(s) URL", () => {
    for (const url of ["http://127.0.0.1:9100", "https://chat.example.org/api"]) {
      expect(applicationConfig(manifest, { REMOTE_URL: url })).toEqual({ REMOTE_URL: url });
    }
  });

  it.each(["chat.example.org", "not a url", "ftp://chat.example.org", "file:///etc/passwd"])(
    "refuses %s, naming the setting",
    (url) => {
      expect(() => applicationConfig(manifest, { REMOTE_URL: url })).toThrow(
        `REMOTE_URL=${url}: not an http(s) URL (the remote service's, remoteSecret.urlSetting)`,
      );
    },
  );

  it("throws a SettingError that names the setting missing or refused (the synth says which context value)", () => {
    const thrown = (env: Record<string, string | undefined>) => {
      try {
        applicationConfig(manifest, env);
      } catch (error) {
        return error;
      }
      throw new Error("accepted");
    };
    for (const env of [{}, { REMOTE_URL: "ftp://chat.example.org" }]) {
      expect(thrown(env)).toBeInstanceOf(SettingError);
      expect(thrown(env)).toMatchObject({ variable: "REMOTE_URL" });
    }
    // Not a setting's value: the manifest's own mistake.
    expect(() =>
      applicationConfig({ remoteSecret: { urlSetting: "NOWHERE" } } as ApplicationManifest, {}),
    ).not.toThrow(SettingError);
  });

  it("refuses a urlSetting that is none of the settings", () => {
    expect(() =>
      applicationConfig({ remoteSecret: { urlSetting: "NOWHERE" } } as ApplicationManifest, {}),
    ).toThrow("remoteSecret.urlSetting NOWHERE is none of the manifest's settings");
  });

  it("a function without the setting in its configuration is not checked for it", () => {
    expect(applicationConfig(manifest, {}, { fn: "queries" })).toEqual({});
  });
});
