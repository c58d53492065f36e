// Part of `npm run bench`: outbound throughput (messages/s reaching a scripted homeserver) and
// end-to-end latency from the transaction's ack to the homeserver receiving the bot's reply,
// through the local mode (`npm start` in a process of its own) and its default `!ping` bot;
// then the webhooks: POST → 202, and POST → the homeserver receiving the message.
import { randomUUID } from "node:crypto";
import type { ClientEvent } from "../functions/appservice/protocol/transaction.ts";
import { applicationModuleOf, importApplicationModule } from "../functions/local/applications.ts";
import { freePort } from "../functions/local/free-port.ts";
import { benchHomeserver, percentile, startServer, stopServer } from "./support.ts";

// The webhooks, chosen by name as npm start chooses it; their users' namespace from the manifest.
const APPLICATION = "webhooks";
const { namespaces } = (await importApplicationModule(applicationModuleOf(APPLICATION))).manifest;
const {
  registration,
  registrationPath,
  homeserver,
  bot,
  serverName: SERVER,
} = await benchHomeserver("bench", namespaces?.users);

const port = await freePort();
const { child } = await startServer("functions/local/main.ts", {
  APPLICATION,
  PORT: String(port),
  REGISTRATION: registrationPath,
  HOMESERVER_URL: homeserver.url,
  SERVER_NAME: SERVER,
  POWERTOOLS_LOG_LEVEL: "ERROR",
});
const url = `http://127.0.0.1:${port}`;

const ping = (roomId: string): ClientEvent => ({
  event_id: `$${randomUUID()}`,
  room_id: roomId,
  type: "m.room.message",
  sender: `@alice:${SERVER}`,
  origin_server_ts: Date.now(),
  content: { msgtype: "m.text", body: "!ping" },
});
async function put(events: ClientEvent[]) {
  const response = await fetch(`${url}/_matrix/app/v1/transactions/${randomUUID()}`, {
    method: "PUT",
    headers: {
      authorization: `Bearer ${registration.hs_token}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({ events }),
  });
  if (response.status !== 200) throw new Error(`${response.status} ${await response.text()}`);
}
const until = async (check: () => boolean, what: () => string, timeoutMs = 300_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
};
const waitForSent = (count: number) =>
  until(
    () => homeserver.sent.length >= count,
    () => `only ${homeserver.sent.length} of ${count} replies arrived`,
  );

const rooms = Array.from({ length: 20 }, (_, i) => `!room${i}:${SERVER}`);
for (const room of rooms) homeserver.createRoom(room, [bot, `@alice:${SERVER}`]);

// Warm-up.
for (let i = 0; i < 20; i++) await put([ping(rooms[i % rooms.length] as string)]);
await waitForSent(20);

// Latency: one ping at a time, from the ack to the homeserver receiving the pong.
const latencies: number[] = [];
for (let i = 0; i < 200; i++) {
  const before = homeserver.sent.length;
  await put([ping(rooms[i % rooms.length] as string)]);
  const acked = Date.now();
  await waitForSent(before + 1);
  latencies.push((homeserver.requests.at(-1)?.at as number) - acked);
}
latencies.sort((a, b) => a - b);

// Throughput: 1,000 pings over 20 rooms, in transactions of 50 events, as fast as acked.
const start = homeserver.sent.length;
const started = Date.now();
for (let t = 0; t < 20; t++)
  await put(Array.from({ length: 50 }, (_, i) => ping(rooms[i % rooms.length] as string)));
const ackedAll = Date.now();
await waitForSent(start + 1000);
const seconds = (Date.now() - started) / 1000;
const sends = homeserver.requests.filter((r) => r.method === "PUT" && r.path.includes("/send/"));

console.log(
  "\nOutbound (the !ping bot through local mode to a scripted homeserver on 127.0.0.1)\n",
);
console.log(
  `  ack → homeserver receives the reply: p50 ${percentile(latencies, 50)} ms, p99 ${percentile(latencies, 99)} ms (200 pings, one at a time)`,
);
console.log(
  `  throughput: 1000 replies in ${seconds.toFixed(1)} s = ${(1000 / seconds).toFixed(0)} messages/s ` +
    `(20 rooms; all 20 transactions acked after ${((ackedAll - started) / 1000).toFixed(1)} s)`,
);
const pings = 20 + latencies.length + 1000;
console.log(
  `  pings ${pings}, replies the homeserver accepted ${homeserver.sent.length} ` +
    `(doubles ${homeserver.sent.length - pings}), send requests ${sends.length}`,
);

// Webhooks: a moderator creates them, then POSTs. Each webhook takes 20 messages at once, then
// one a second (its rate limit): the POSTs go round 50 webhooks of one room, so that the
// pipeline is measured rather than the limit, and the room's order still holds.
const moderator = `@mod:${SERVER}`;
const hookRoom = rooms[0] as string;
homeserver.rooms.get(hookRoom)?.add(moderator);
homeserver.setState(hookRoom, "m.room.power_levels", "", { users: { [moderator]: 100 } });
/** `!webhook new`, then the URL from the direct message room the bot makes for it. */
const createHook = async (name: string) => {
  const roomsBefore = homeserver.createdRooms.length;
  await put([{ ...ping(hookRoom), sender: moderator, content: { body: `!webhook new ${name}` } }]);
  await until(
    () => homeserver.createdRooms.length > roomsBefore,
    () => `no direct message room for ${name}`,
  );
  const dm = homeserver.createdRooms.at(-1)?.roomId as string;
  // As a homeserver does, the new room's state goes to the appservice, which sends the URL there.
  await put(homeserver.initialStateEvents(dm));
  const urlIn = () =>
    /http:\/\/\S+\/webhook\/\S+/.exec(
      String(homeserver.sent.find((e) => e.roomId === dm)?.content.body),
    )?.[0];
  await until(
    () => urlIn() !== undefined,
    () => `no URL for ${name}`,
  );
  return urlIn() as string;
};
const hookUrls: string[] = [];
for (let i = 0; i < 50; i++) hookUrls.push(await createHook(`bench-${i}`));
const postHook = async (i: number, text: string) => {
  const response = await fetch(hookUrls[i % hookUrls.length] as string, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ text }),
  });
  if (response.status !== 202) throw new Error(`${response.status} ${await response.text()}`);
};
// Warm-up: each webhook's user is registered, joined and named on its first message.
for (let i = 0; i < hookUrls.length; i++) await postHook(i, "warm-up");
const warmedUp = () => homeserver.sent.filter((e) => e.content.body === "warm-up").length;
await until(
  () => warmedUp() === hookUrls.length,
  () => `${warmedUp()} of ${hookUrls.length} warm-up messages arrived`,
);
const accepted: number[] = [];
const delivered: number[] = [];
for (let i = 0; i < 200; i++) {
  const before = homeserver.sent.length;
  const posted = Date.now();
  await postHook(i, `**message** ${i}`);
  accepted.push(Date.now() - posted);
  await waitForSent(before + 1);
  delivered.push((homeserver.requests.at(-1)?.at as number) - posted);
}
accepted.sort((a, b) => a - b);
delivered.sort((a, b) => a - b);
const hookStart = homeserver.sent.length;
const burstStarted = Date.now();
for (let i = 0; i < 500; i++) await postHook(i, `burst ${i}`);
await waitForSent(hookStart + 500);
const burstSeconds = (Date.now() - burstStarted) / 1000;
const hookBodies = homeserver.sent.slice(hookStart).map((e) => e.content.body);
const inOrder = hookBodies.every((body, i) => body === `burst ${i}`);
console.log("\nWebhooks (POST /webhook/{id} through local mode to the scripted homeserver)\n");
console.log(
  `  POST → 202: p50 ${percentile(accepted, 50)} ms, p99 ${percentile(accepted, 99)} ms; ` +
    `POST → homeserver receives the message: p50 ${percentile(delivered, 50)} ms, p99 ${percentile(delivered, 99)} ms (200 POSTs, one at a time)`,
);
console.log(
  `  500 POSTs back to back: ${(500 / burstSeconds).toFixed(0)} messages/s delivered, ` +
    `${hookBodies.length} arrived, in order: ${inOrder}`,
);

await stopServer(child);
await homeserver.stop();
