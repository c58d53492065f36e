// Part of `npm run bench`: the 500 encrypted messages over 20 encrypted rooms (issue 26),
// sent by 4 strict people (real crypto-wasm machines, cross-signed), pushed in transactions of 50
// with their room keys to local mode in this process (its own DynamoDB Local and fauxqs, the
// bot's crypto state in DynamoDB); each must reach the application decrypted, exactly once, in
// its room's order (test/integration/crypto-many-rooms.test.ts runs 40). Figures: the time to
// encrypt them, then from the first push to the last delivery, and messages a second.
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DeliveredEvent } from "../functions/appservice/application.ts";
import {
  newRegistration,
  registrationYaml,
} from "../functions/appservice/protocol/registration.ts";
import { startLocal } from "../functions/local/local.ts";
import { pushedEvent, ScriptedHomeserver } from "../test/support/homeserver.ts";
import {
  deliveryProblems,
  encryptedRooms,
  pushInTransactions,
  sendRoundRobin,
} from "../test/support/many-encrypted-rooms.ts";

const SERVER = "bench.local";
// The held rooms' INFO lines (one per wait for a room key) would bury the figures.
process.env.POWERTOOLS_LOG_LEVEL ??= "WARN";
const MESSAGES = Number(process.env.BENCH_ENCRYPTED_MESSAGES ?? 500);
const ROOMS = 20;
const PEOPLE = 4;

const dir = await mkdtemp(join(tmpdir(), "appservice-encrypted-bench-"));
const registrationPath = join(dir, "registration.yaml");
const registration = newRegistration({
  id: "bench-encrypted",
  url: null,
  senderLocalpart: "bot",
  serverName: SERVER,
  prefix: "_b_",
});
await writeFile(registrationPath, registrationYaml(registration));
const bot = `@bot:${SERVER}`;
const homeserver = new ScriptedHomeserver(registration.as_token, SERVER, bot);
await homeserver.start();

const received: DeliveredEvent[] = [];
const local = await startLocal({
  port: 0,
  registrationPath,
  homeserverUrl: homeserver.url,
  serverName: SERVER,
  cryptoStoreSecret: "the encrypted rooms bench's crypto store secret",
  application: { onEvent: (event) => void received.push(event) },
});
homeserver.appservice = { id: registration.id, url: local.url, hsToken: registration.hs_token };

const until = async (check: () => boolean, what: () => string, timeoutMs = 1_800_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
};
const seconds = (from: number, to: number) => ((to - from) / 1000).toFixed(1);

try {
  const { people, rooms, invites } = await encryptedRooms(homeserver, bot, {
    roomCount: ROOMS,
    peopleCount: PEOPLE,
  });
  const invited = performance.now();
  await pushInTransactions(homeserver, invites);
  const isInvite = new Set(invites.map((invite) => invite.event_id));
  await until(
    () => received.filter((event) => isInvite.has(event.event_id)).length === ROOMS,
    () => "the invites",
  );
  const joined = performance.now();

  const sent = await sendRoundRobin(rooms, bot, MESSAGES);
  const encrypted = performance.now();
  await pushInTransactions(
    homeserver,
    sent.map(({ eventId }) => pushedEvent(homeserver, eventId)),
  );
  const pushed = performance.now();
  const ids = new Set(sent.map((message) => message.eventId));
  const messages = () =>
    new Set(received.filter((event) => ids.has(event.event_id)).map((event) => event.event_id))
      .size;
  await until(
    () => messages() >= MESSAGES,
    () => `${messages()} of ${MESSAGES} delivered`,
  );
  const delivered = performance.now();
  // Late duplicates would come after a redelivery: give them a moment before counting.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const problems = deliveryProblems(sent, received);
  for (const person of people) person.close();

  console.log(
    `\nEncrypted rooms (${MESSAGES} messages over ${ROOMS} rooms by ${PEOPLE} strict people, ` +
      "local mode in process, DynamoDB Local)\n",
  );
  console.log(
    `  ${ROOMS} invites (the bot's device made, cross-signed): ${seconds(invited, joined)} s`,
  );
  console.log(`  encrypted by the people: ${seconds(joined, encrypted)} s`);
  console.log(
    `  pushed (acked) in ${seconds(encrypted, pushed)} s; every message delivered decrypted ` +
      `${seconds(encrypted, delivered)} s after the first push = ` +
      `${(MESSAGES / ((delivered - encrypted) / 1000)).toFixed(1)} messages/s`,
  );
  console.log(
    problems.length === 0
      ? "  each delivered decrypted, exactly once, in its room's order"
      : `  WRONG: ${problems.length} rooms:\n    ${problems.join("\n    ")}`,
  );
  if (problems.length > 0) process.exitCode = 1;
} finally {
  await local.stop();
  await homeserver.stop();
}
