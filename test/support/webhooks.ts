import { expect } from "vitest";
import { makeEvent, waitFor } from "./appservice.ts";
import { startAppserviceAndHomeserver } from "./with-homeserver.ts";

/** What these helpers use of a running appservice: in-process local mode's, or `npm start`'s. */
type Started = Pick<
  Awaited<ReturnType<typeof startAppserviceAndHomeserver>>,
  "homeserver" | "send" | "bot"
> & { local: { url: string } };

// Each transaction these helpers send gets a txnId of its own.
let transactions = 0;

/**
 * The appservice and the scripted homeserver, with `roomId` holding the bot and `moderator`
 * (power level 50), where webhooks are made.
 */
export async function startWithWebhookRoom(roomId: string, moderator: string) {
  const started = await startAppserviceAndHomeserver();
  started.homeserver.createRoom(roomId, [moderator, started.bot]);
  started.homeserver.setState(roomId, "m.room.power_levels", "", {
    users: { [moderator]: 50 },
    users_default: 0,
  });
  return started;
}

/** The bodies of the notices the bot sent into a room, in order. */
export const noticesIn = (started: Started, roomId: string) =>
  started.homeserver.sent
    .filter((e) => e.sender === started.bot && e.roomId === roomId)
    .filter((e) => e.content.msgtype === "m.notice")
    .map((e) => String(e.content.body));

/** Sends `body` as `sender` into `roomId` and waits for the bot's answer to it. */
export async function sendCommand(started: Started, body: string, sender: string, roomId: string) {
  const before = noticesIn(started, roomId).length;
  const event = makeEvent(roomId, body, { sender });
  expect((await started.send(`command-${++transactions}`, [event])).status).toBe(200);
  await waitFor(() => noticesIn(started, roomId).length > before, 20_000, `an answer to ${body}`);
  // The first notice after it: others may follow in the same run (a webhook's expiry notice).
  return noticesIn(started, roomId)[before] as string;
}

/**
 * `!webhook new <name>`: the room is told, the bot creates a direct message room for the
 * creator, and, once the homeserver hands that room's state back (as it does for every room
 * the bot is in; the scripted homeserver pushes nothing, so the test does it), sends the URL
 * there. Returns the URL, its id and the DM room.
 */
export async function newWebhook(
  started: Started,
  name: string,
  moderator: string,
  roomId: string,
  /** Options of `!webhook new` (`--notice --expires 30d`). */
  options = "",
) {
  const { homeserver } = started;
  const roomsBefore = homeserver.createdRooms.length;
  const body = `!webhook new ${name}${options && ` ${options}`}`;
  expect(await sendCommand(started, body, moderator, roomId)).toBe(
    `Webhook ${name} created. I sent its URL to ${moderator} in a direct message: accept my invite to read it.`,
  );
  await waitFor(
    () => homeserver.createdRooms.length > roomsBefore,
    20_000,
    "the direct message room",
  );
  const created = homeserver.createdRooms.at(-1);
  const dm = created?.roomId as string;
  expect(created).toMatchObject({
    creator: started.bot,
    body: {
      name: `Webhook ${name}`,
      invite: [moderator],
      is_direct: true,
      preset: "private_chat",
    },
  });
  const handedBack = homeserver.initialStateEvents(dm);
  expect(handedBack).toHaveLength(1);
  expect((await started.send(`dm-${++transactions}`, handedBack)).status).toBe(200);
  await waitFor(() => noticesIn(started, dm).length > 0, 20_000, "the URL in the direct message");
  const match = new RegExp(`${started.local.url}/webhook/([A-Za-z0-9_-]+)`).exec(
    noticesIn(started, dm)[0] as string,
  );
  expect(match, noticesIn(started, dm)[0]).not.toBeNull();
  return { url: match?.[0] as string, id: match?.[1] as string, dm };
}

/** An Alertmanager webhook payload (version 4): one alert firing. */
export const DISK_FULL_ALERT = {
  version: "4",
  status: "firing",
  alerts: [
    {
      status: "firing",
      labels: { alertname: "DiskFull", severity: "critical", instance: "db1" },
      annotations: { summary: "disk at 97%" },
      generatorURL: "https://prometheus.example/graph",
    },
  ],
};
