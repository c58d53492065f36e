import { describe, expect, it } from "vitest";
import { encryptedRoomsSetting } from "../../functions/local/encrypted-rooms-setting.ts";

// `npm start` reads it (functions/local/main.ts); crypto-echo.test.ts spawns one with it on.
describe("npm start's encrypted rooms switch", () => {
  it.each([
    [{ ENCRYPTED_ROOMS: "true" }, true],
    // The former name, from when encrypted rooms were only read.
    [{ READ_ENCRYPTED_ROOMS: "true" }, true],
    [{ ENCRYPTED_ROOMS: "false", READ_ENCRYPTED_ROOMS: "true" }, true],
    [{}, false],
    [{ ENCRYPTED_ROOMS: "" }, false],
    [{ ENCRYPTED_ROOMS: "false" }, false],
    [{ ENCRYPTED_ROOMS: "1" }, false],
    [{ READ_ENCRYPTED_ROOMS: "yes" }, false],
  ])("%j: %s", (env, on) => {
    expect(encryptedRoomsSetting(env)).toBe(on);
  });
});
