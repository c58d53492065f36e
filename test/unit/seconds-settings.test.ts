import { describe, expect, it } from "vitest";
import { SECONDS_SETTINGS, secondsSettings } from "../../functions/local/seconds-settings.ts";

// `npm start` reads these (functions/local/main.ts); local-mode.test.ts spawns one refused start.
describe("npm start's settings in whole seconds", () => {
  it("unset or empty: undefined, the default", () => {
    expect(secondsSettings({ ROOM_CLAIM_LEASE_SECONDS: "" })).toEqual({
      OUTBOX_BACKOFF_CAP_SECONDS: undefined,
      ROOM_CLAIM_LEASE_SECONDS: undefined,
      VISIBILITY_TIMEOUT_SECONDS: undefined,
    });
  });

  it.each(Object.entries(SECONDS_SETTINGS))("%s: 1 to %i taken", (name, max) => {
    expect(secondsSettings({ [name]: "1" })[name as keyof typeof SECONDS_SETTINGS]).toBe(1);
    expect(secondsSettings({ [name]: String(max) })[name as keyof typeof SECONDS_SETTINGS]).toBe(
      max,
    );
  });

  it.each(
    Object.entries(SECONDS_SETTINGS).flatMap(([name, max]) =>
      ["0", "1.5", "-3", "07", "1e3", " 5", "ten", String(max + 1)].map(
        (value) => [name, value, max] as const,
      ),
    ),
  )("%s=%s: refused, naming the variable", (name, value, max) => {
    expect(() => secondsSettings({ [name]: value })).toThrow(
      `${name}=${value} is not a whole number of seconds from 1 to ${max}`,
    );
  });

  it("the bounds: SQS's longest visibility timeout, Lambda's longest run for the room claim", () => {
    expect(SECONDS_SETTINGS).toEqual({
      OUTBOX_BACKOFF_CAP_SECONDS: 43_200,
      ROOM_CLAIM_LEASE_SECONDS: 900,
      VISIBILITY_TIMEOUT_SECONDS: 43_200,
    });
  });
});
