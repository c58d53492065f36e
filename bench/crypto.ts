// Part of `npm run bench`: what encrypted rooms cost. crypto-wasm's cold start and a device's
// state opened from DynamoDB Local (bench/crypto-cold-start.ts, in processes of their own, as a
// Lambda's cold start); and, through local mode in this process (`startLocal`, encrypted rooms on) against the scripted
// homeserver with a strict person's real crypto device: the time from a transaction's ack to
// `onEvent` for an encrypted message (decrypted first) and a clear one, and from `onEvent` to the
// homeserver receiving the reply (encrypted by the outbox, its room key already shared or shared
// anew at each message), with the DynamoDB requests each message costs (counted by a proxy in
// front of DynamoDB Local).
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createServer, request as httpRequest, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Application } from "../functions/appservice/application.ts";
import type { ClientEvent } from "../functions/appservice/protocol/transaction.ts";
import { botDeviceIdOf, cryptoStoreKeyFrom } from "../functions/crypto/device-crypto.ts";
import { localDynamoDb } from "../functions/local/aws-clients.ts";
import { startDynamoDbLocal } from "../functions/local/dynamodb-local.ts";
import { startLocal } from "../functions/local/local.ts";
import { DynamoDbCryptoStateStore } from "../functions/store/dynamodb/crypto-state.ts";
import type { CryptoPerson as CryptoPersonType } from "../test/support/crypto-person.ts";
import { pushedEvent } from "../test/support/encrypted-appservice.ts";
import { benchHomeserver, percentile } from "./support.ts";

// The handlers' INFO lines (a line per call) would bury the figures.
process.env.POWERTOOLS_LOG_LEVEL ??= "WARN";
const SERVER = "bench.local";
const BOT = `@bot:${SERVER}`;
const SECRET = "the crypto bench's store secret, 32 characters or more";
const MEGOLM = "m.megolm.v1.aes-sha2";

/**
 * DynamoDB Local behind a proxy that counts each operation (its `X-Amz-Target`) and its bytes:
 * a write's request body, a read's answer, as DynamoDB's units are reckoned from item sizes.
 */
async function countingDynamoDb(target: string) {
  const counts = new Map<string, { requests: number; bytes: number }>();
  const reads = new Set(["Query", "GetItem", "BatchGetItem", "Scan"]);
  const server = createServer((incoming, outgoing) => {
    const operation = String(incoming.headers["x-amz-target"] ?? "?").split(".")[1] ?? "?";
    const url = new URL(target);
    const chunks: Buffer[] = [];
    incoming.on("data", (chunk: Buffer) => chunks.push(chunk));
    incoming.on("end", () => {
      const body = Buffer.concat(chunks);
      const forwarded = httpRequest(
        { host: url.hostname, port: url.port, method: incoming.method, path: incoming.url },
        (answer: IncomingMessage) => {
          const answerChunks: Buffer[] = [];
          answer.on("data", (chunk: Buffer) => answerChunks.push(chunk));
          answer.on("end", () => {
            const answerBody = Buffer.concat(answerChunks);
            const tally = counts.get(operation) ?? { requests: 0, bytes: 0 };
            tally.requests++;
            tally.bytes += reads.has(operation) ? answerBody.length : body.length;
            counts.set(operation, tally);
            outgoing.writeHead(answer.statusCode ?? 500, answer.headers);
            outgoing.end(answerBody);
          });
        },
      );
      forwarded.setHeader("content-length", body.length);
      for (const [name, value] of Object.entries(incoming.headers))
        if (name !== "content-length" && value !== undefined) forwarded.setHeader(name, value);
      forwarded.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    /** The counts so far, and a reset. */
    take() {
      const taken = new Map(counts);
      counts.clear();
      return taken;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const dynamo = await startDynamoDbLocal();
const proxy = await countingDynamoDb(dynamo.endpoint);

const { registration, registrationPath, homeserver } = await benchHomeserver("crypto-bench");

/** When each event reached `onEvent`; a message whose body starts with "reply" is answered. */
const reached = new Map<string, number>();
const application: Application = {
  async onEvent(event, { actions }) {
    reached.set(event.event_id, performance.now());
    if (event.type === "m.room.member" && event.state_key === BOT) {
      if (event.content.membership === "invite") await actions.join(event.room_id);
      return;
    }
    const body = String(event.content.body ?? "");
    if (event.type === "m.room.message" && body.startsWith("reply"))
      await actions.sendMessage(event.room_id, `re: ${event.event_id}`);
  },
};
const local = await startLocal({
  port: 0,
  registrationPath,
  homeserverUrl: homeserver.url,
  serverName: SERVER,
  dynamodbEndpoint: proxy.endpoint,
  cryptoStoreSecret: SECRET,
  visibilityTimeoutSeconds: 30,
  application,
});
homeserver.appservice = { id: registration.id, url: local.url, hsToken: registration.hs_token };

const { CryptoPerson } = await import("../test/support/crypto-person.ts");
const alice: CryptoPersonType = await CryptoPerson.create(homeserver, "alice");

const until = async (check: () => boolean, what: string, timeoutMs = 120_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
};
async function push(events: ClientEvent[]) {
  const response = await homeserver.pushTransaction(events);
  if (response.status !== 200) throw new Error(`${response.status} ${await response.text()}`);
}
const pushed = (eventId: string) => pushedEvent(homeserver, eventId);
/** An encrypted room of Alice's with the bot in it, joined; `rotateEachMessage`: a new key each. */
async function encryptedRoom(rotateEachMessage = false) {
  const room = `!encrypted-${randomUUID().slice(0, 8)}:${SERVER}`;
  homeserver.createRoom(room, [alice.userId, BOT]);
  homeserver.setState(room, "m.room.encryption", "", {
    algorithm: MEGOLM,
    ...(rotateEachMessage && { rotation_period_msgs: 1 }),
  });
  const invite: ClientEvent = {
    event_id: `$${randomUUID()}`,
    room_id: room,
    type: "m.room.member",
    sender: alice.userId,
    state_key: BOT,
    origin_server_ts: Date.now(),
    content: { membership: "invite" },
  };
  await push([invite]);
  await until(() => reached.has(invite.event_id), "the invite handled");
  return room;
}
const clearRoom = () => {
  const room = `!clear-${randomUUID().slice(0, 8)}:${SERVER}`;
  homeserver.createRoom(room, [alice.userId, BOT]);
  return room;
};
const encrypted = (room: string) => homeserver.state.has(`${room}\nm.room.encryption\n`);
/** Alice's message into `room`, encrypted where the room is, as the homeserver pushes it. */
async function aliceSays(room: string, body: string): Promise<ClientEvent> {
  const content = { msgtype: "m.text", body };
  if (encrypted(room)) return pushed(await alice.sendEncrypted(room, [alice.userId, BOT], content));
  return {
    event_id: `$${randomUUID()}`,
    room_id: room,
    type: "m.room.message",
    sender: alice.userId,
    origin_server_ts: Date.now(),
    content,
  };
}
const botSends = (room: string) =>
  homeserver.sent.filter((event) => event.roomId === room && event.sender === BOT);

interface Figures {
  ackToEvent: number[];
  eventToReply: number[];
  messagesPerSecond?: number;
  dynamodb: Map<string, { requests: number; bytes: number }>;
  count: number;
}
/**
 * `count` messages of Alice's into `room`, one at a time: each pushed, then timed from the ack
 * to `onEvent`, and (`reply`) from `onEvent` to the homeserver receiving the bot's answer.
 */
async function oneAtATime(room: string, count: number, reply: boolean): Promise<Figures> {
  const figures: Figures = { ackToEvent: [], eventToReply: [], dynamodb: new Map(), count };
  proxy.take();
  for (let i = 0; i < count; i++) {
    const event = await aliceSays(room, `${reply ? "reply" : "message"} ${i}`);
    const answers = botSends(room).length;
    await push([event]);
    const acked = Date.now();
    await until(() => reached.has(event.event_id), "the event reached onEvent");
    const atEvent = Date.now();
    figures.ackToEvent.push(atEvent - acked);
    if (reply) {
      await until(() => botSends(room).length > answers, "the reply");
      figures.eventToReply.push(Date.now() - atEvent);
      const answer = botSends(room).at(-1);
      if (answer?.type !== (encrypted(room) ? "m.room.encrypted" : "m.room.message"))
        throw new Error(`the reply went out as ${answer?.type}`);
    }
  }
  figures.dynamodb = proxy.take();
  return figures;
}
/** `count` messages pushed in transactions of `batch`: messages/s from the first push to the last. */
async function burst(room: string, count: number, batch: number, reply: boolean) {
  const events: ClientEvent[] = [];
  for (let i = 0; i < count; i++)
    events.push(await aliceSays(room, `${reply ? "reply" : "burst"} ${i}`));
  const answers = botSends(room).length;
  const started = Date.now();
  for (let i = 0; i < count; i += batch) await push(events.slice(i, i + batch));
  await until(() => events.every((event) => reached.has(event.event_id)), "the burst", 600_000);
  if (reply) await until(() => botSends(room).length >= answers + count, "the replies", 600_000);
  return count / ((Date.now() - started) / 1000);
}

const ms = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return `p50 ${Math.round(percentile(sorted, 50))} ms, p99 ${Math.round(percentile(sorted, 99))} ms`;
};
const perMessage = (figures: Figures) =>
  [...figures.dynamodb]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(
      ([operation, { requests, bytes }]) =>
        `${operation} ${(requests / figures.count).toFixed(1)} (${(bytes / figures.count / 1024).toFixed(1)} KB)`,
    )
    .join(", ");

const COUNT = Number(process.env.BENCH_CRYPTO_MESSAGES ?? 50);
const sharedRoom = await encryptedRoom();
const rotatingRoom = await encryptedRoom(true);
const plainRoom = clearRoom();
// Warm-up: the bot's device made (on the first invite), Olm sessions both ways, JIT.
await oneAtATime(sharedRoom, 5, true);
await oneAtATime(plainRoom, 5, true);
await oneAtATime(rotatingRoom, 2, true);

const clearIn = await oneAtATime(plainRoom, COUNT, false);
const decryptIn = await oneAtATime(sharedRoom, COUNT, false);
const clearReply = await oneAtATime(plainRoom, COUNT, true);
const sharedReply = await oneAtATime(sharedRoom, COUNT, true);
const rotatingReply = await oneAtATime(rotatingRoom, Math.ceil(COUNT / 2), true);
const clearBurst = await burst(plainRoom, 200, 50, false);
const decryptBurst = await burst(sharedRoom, 200, 50, false);
const clearReplyBurst = await burst(plainRoom, 50, 10, true);
const replyBurst = await burst(sharedRoom, 50, 10, true);

const state = await new DynamoDbCryptoStateStore(
  localDynamoDb(dynamo.endpoint),
  local.tableName,
).load({
  userId: BOT,
  deviceId: botDeviceIdOf(BOT),
});

// Cold starts, each in a process of its own, opening the bot's device as the runs above left it.
const colds = Array.from({ length: 3 }, () => {
  const child = spawnSync(
    process.execPath,
    ["--import", "tsx", join(import.meta.dirname, "crypto-cold-start.ts")],
    {
      env: {
        ...process.env,
        BENCH_DYNAMODB: dynamo.endpoint,
        BENCH_TABLE: local.tableName,
        BENCH_USER: BOT,
        BENCH_DEVICE: botDeviceIdOf(BOT),
        BENCH_STORE_KEY: Buffer.from(cryptoStoreKeyFrom(SECRET)).toString("hex"),
      },
      encoding: "utf8",
    },
  );
  if (child.status !== 0) throw new Error(`the cold start failed: ${child.stderr}`);
  return JSON.parse(child.stdout.trim().split("\n").at(-1) as string) as {
    importMs: number;
    initMs: number;
    firstOpenMs: number;
    warmOpensMs: number[];
  };
});
const range = (values: number[]) =>
  `${Math.round(Math.min(...values))}–${Math.round(Math.max(...values))} ms`;

console.log(
  "\nEncrypted rooms (local mode in process, DynamoDB Local, the scripted homeserver, a strict person)\n",
);
console.log(
  `  cold start (3 processes): import of crypto-wasm ${range(colds.map((c) => c.importMs))}, ` +
    `initAsync ${range(colds.map((c) => c.initMs))}; the bot's device opened from DynamoDB ` +
    `(${((state?.data.length ?? 0) / 1024).toFixed(0)} KB gzipped, version ${state?.version}): ` +
    `first ${range(colds.map((c) => c.firstOpenMs))}, warm ${ms(colds.flatMap((c) => c.warmOpensMs))}`,
);
console.log(
  `  ack → onEvent, clear: ${ms(clearIn.ackToEvent)}; DynamoDB a message: ${perMessage(clearIn)}`,
);
console.log(
  `  ack → onEvent, encrypted (decrypted first): ${ms(decryptIn.ackToEvent)}; DynamoDB a message: ${perMessage(decryptIn)}`,
);
console.log(
  `  onEvent → the homeserver has the reply, clear: ${ms(clearReply.eventToReply)}; DynamoDB a message and its reply: ${perMessage(clearReply)}`,
);
console.log(
  `  onEvent → the homeserver has the reply, encrypted, room key shared: ${ms(sharedReply.eventToReply)}; DynamoDB: ${perMessage(sharedReply)}`,
);
console.log(
  `  onEvent → the homeserver has the reply, encrypted, a new room key each (rotation_period_msgs 1): ${ms(rotatingReply.eventToReply)}; DynamoDB: ${perMessage(rotatingReply)}`,
);
console.log(
  `  (${COUNT} messages one at a time each; ${Math.ceil(COUNT / 2)} with a new key)` +
    `\n  throughput, 200 messages in transactions of 50, one room: clear ${clearBurst.toFixed(0)}/s, encrypted ${decryptBurst.toFixed(0)}/s; ` +
    `50 messages each answered, in transactions of 10: clear ${clearReplyBurst.toFixed(1)}/s, encrypted ${replyBurst.toFixed(1)}/s`,
);

alice.close();
await local.stop();
await homeserver.stop();
await proxy.stop();
await dynamo.stop();
