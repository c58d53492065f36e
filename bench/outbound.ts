// Part of `npm run bench`: outbound throughput (messages/s reaching a scripted homeserver) and
// end-to-end latency from the transaction's ack to the homeserver receiving the bot's reply,
// through the local mode (`npm start` in a process of its own) and its default `!ping` bot.
import { randomUUID } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newRegistration, registrationYaml } from "../functions/appservice/registration.ts";
import type { ClientEvent } from "../functions/appservice/transaction.ts";
import { freePort } from "../functions/local/free-port.ts";
import { ScriptedHomeserver } from "../test/support/homeserver.ts";
import { percentile, startServer, stopServer } from "./support.ts";

const SERVER = "bench.local";
const dir = await mkdtemp(join(tmpdir(), "appservice-outbound-bench-"));
const registrationPath = join(dir, "registration.yaml");
const registration = newRegistration({
  id: "bench",
  url: null,
  senderLocalpart: "bot",
  serverName: SERVER,
  prefix: "_b_",
});
await writeFile(registrationPath, registrationYaml(registration));
const bot = `@bot:${SERVER}`;
const homeserver = new ScriptedHomeserver(registration.as_token, SERVER, bot);
await homeserver.start();

const port = await freePort();
const { child } = await startServer("functions/local/main.ts", {
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
const waitForSent = async (count: number, timeoutMs = 300_000) => {
  const deadline = Date.now() + timeoutMs;
  while (homeserver.sent.length < count) {
    if (Date.now() > deadline)
      throw new Error(`only ${homeserver.sent.length} of ${count} replies arrived`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
};

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

await stopServer(child);
await homeserver.stop();
