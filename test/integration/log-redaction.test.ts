import { describe, expect, it, onTestFinished } from "vitest";
import { WEBHOOK_USER_PREFIX } from "../../functions/applications/webhooks/webhooks/user.ts";
import type { Log } from "../../functions/shared/log.ts";
import { newWebhook } from "../support/webhooks.ts";
import { SERVER, startAppserviceAndHomeserver } from "../support/with-homeserver.ts";

const ROOM = `!redacted:${SERVER}`;
const MODERATOR = `@mod:${SERVER}`;

/** Every log line as it would be printed, errors with their message and stack. */
const lines: string[] = [];
const log = Object.fromEntries(
  ["debug", "info", "warn", "error"].map((level) => [
    level,
    (message: string, ...attributes: unknown[]) =>
      lines.push(
        `${level} ${message} ${JSON.stringify(attributes, (_key, value) =>
          value instanceof Error
            ? { name: value.name, message: value.message, stack: value.stack }
            : value,
        )}`,
      ),
  ]),
) as unknown as Log;

describe("log lines name routes, never a secret URL", () => {
  it("a failing webhook POST (?wait=true, the homeserver answering 500) logs its route, and no line of the run holds the webhook's id or an access_token", async () => {
    const started = await startAppserviceAndHomeserver({ log });
    onTestFinished(started.stop);
    const { homeserver } = started;
    homeserver.createRoom(ROOM, [MODERATOR, started.bot]);
    homeserver.setState(ROOM, "m.room.power_levels", "", { users: { [MODERATOR]: 50 } });
    const { url, id } = await newWebhook(started, "ci", MODERATOR, ROOM);
    homeserver.cue(
      (r) =>
        r.method === "PUT" &&
        r.path.includes("/send/") &&
        r.query.user_id?.startsWith(`@${WEBHOOK_USER_PREFIX}`) === true,
      { status: 500, body: { errcode: "M_UNKNOWN", error: "Internal server error" } },
      1000,
    );
    const queryToken = "q".repeat(40);
    const response = await fetch(`${url}?wait=true&access_token=${queryToken}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ text: "never in the room" }),
    });
    expect(response.status).toBe(504);

    const failed = lines.filter((line) => line.startsWith("error request failed"));
    expect(failed).toHaveLength(1);
    expect(failed[0]).toContain('"route":"POST /webhook/{id}"');
    // Every line of the run: the id, in any case, and the query's token appear in none.
    expect(lines.length).toBeGreaterThan(10);
    for (const line of lines) {
      expect(line.toLowerCase()).not.toContain(id.toLowerCase());
      expect(line).not.toContain(queryToken);
    }
  }, 60_000);
});
