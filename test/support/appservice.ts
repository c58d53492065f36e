import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { ReceiveMessageCommand } from "@aws-sdk/client-sqs";
import { inject } from "vitest";
import type { Application } from "../../functions/appservice/application.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import type { ServiceDeps } from "../../functions/appservice/service-context.ts";
import { localSqs } from "../../functions/local/aws-clients.ts";
import {
  type LocalAppservice,
  type LocalOptions,
  type LocalWorkersOptions,
  startLocal,
  startLocalWorkers,
} from "../../functions/local/local.ts";
import { sqsQueueDepth } from "../../functions/queue/sqs/inspect.ts";
import { addressPolicy } from "../../functions/remote/address-policy.ts";
import type { Log } from "../../functions/shared/log.ts";
import type { AppDataStore, AppDataWrite } from "../../functions/store/app-data.ts";
import { tempDir } from "./temp-dirs.ts";
import { sleep } from "./wait.ts";

export { tempDir } from "./temp-dirs.ts";

/** What every test start shares: a free port, the run's DynamoDB Local, a table of its own. */
async function testDefaults() {
  const dir = await tempDir();
  const id = randomUUID().slice(0, 8);
  return {
    port: 0,
    registrationPath: join(dir, "registration.yaml"),
    homeserverUrl: "http://127.0.0.1:1",
    serverName: "test.local",
    dynamodbEndpoint: inject("dynamodbEndpoint"),
    tableName: `test-${id}`,
    // Longer than any handler runs on a loaded machine, as in AWS (6× the function's timeout):
    // a message is handed out again only when a handler failed. Tests of that set a short one.
    visibilityTimeoutSeconds: 30,
  };
}

/** Local mode on a free port, every function in this thread (`startLocal`). */
export async function startTestAppservice(options: Partial<LocalOptions> = {}) {
  return startLocal({ ...(await testDefaults()), ...options });
}

/** Local mode on a free port, each function in a worker thread as `npm start` runs them. */
export async function startTestWorkers(options: Partial<LocalWorkersOptions> = {}) {
  return startLocalWorkers({ ...(await testDefaults()), ...options });
}

/** An application that records every event it is handed. */
export function recordingApplication(overrides: Application = {}) {
  const events: ClientEvent[] = [];
  const application: Application = {
    onEvent(event) {
      events.push(event);
    },
    ...overrides,
  };
  return { application, events };
}

let eventCounter = 0;
export function makeEvent(
  roomId: string,
  body: string,
  extra: Partial<ClientEvent> = {},
): ClientEvent {
  eventCounter++;
  return {
    event_id: `$event${eventCounter}-${randomUUID()}`,
    room_id: roomId,
    type: "m.room.message",
    sender: "@alice:test.local",
    origin_server_ts: Date.now(),
    content: { msgtype: "m.text", body },
    ...extra,
  };
}

/** Sends a transaction as a homeserver does. */
export function putTransaction(
  baseUrl: string,
  txnId: string,
  body: unknown,
  init: { token?: string; path?: string; headers?: Record<string, string> } = {},
) {
  const path = init.path ?? `/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`;
  return fetch(`${baseUrl}${path}`, {
    method: "PUT",
    headers: {
      "content-type": "application/json",
      ...(init.token !== undefined && { authorization: `Bearer ${init.token}` }),
      ...init.headers,
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

export { sleep, waitFor } from "./wait.ts";

/**
 * Waits until the appservice is at rest: no message waiting, delayed or in flight on its queues
 * and no handler running, so that no redelivery or late duplicate can still come. Then an
 * "exactly once" holds for good. Returns how many messages each dead-letter queue holds.
 */
export async function waitUntilDrained(local: LocalAppservice, timeoutMs = 30_000) {
  const sqs = localSqs(local.sqsEndpoint);
  const counts = async (queueUrl: string) => {
    const depth = await sqsQueueDepth(sqs, queueUrl);
    return { waiting: depth.waiting, inFlight: depth.inFlight + depth.delayed };
  };
  const empty = (queue: { waiting: number; inFlight: number }) =>
    queue.waiting === 0 && queue.inFlight === 0;
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // Work flows inbound → outbound → dead-letter queues, and a handler runs only while its
      // message is in flight: read in that order, between two looks at the handlers.
      const idleBefore = local.handlersRunning() === 0;
      const inbound = await counts(local.inboundQueueUrl);
      const outbound = await counts(local.outboundQueueUrl);
      const inboundDead = await counts(local.inboundDeadLetterUrl);
      const outboundDead = await counts(local.outboundDeadLetterUrl);
      const idleAfter = local.handlersRunning() === 0;
      if (
        idleBefore &&
        idleAfter &&
        empty(inbound) &&
        empty(outbound) &&
        inboundDead.inFlight === 0 &&
        outboundDead.inFlight === 0
      ) {
        return {
          inboundDeadLetters: inboundDead.waiting,
          outboundDeadLetters: outboundDead.waiting,
        };
      }
      if (Date.now() > deadline) {
        throw new Error(
          `Timed out waiting for the queues to drain: ${JSON.stringify({ inbound, outbound, inboundDead, outboundDead, handlersRunning: local.handlersRunning() })}`,
        );
      }
      await sleep(50);
    }
  } finally {
    sqs.destroy();
  }
}

/** Whether a process of this PID is running. */
export const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** What `waitUntilDrained` returns when nothing was dead-lettered. */
export const NO_DEAD_LETTERS = { inboundDeadLetters: 0, outboundDeadLetters: 0 };

const unexpected = (what: string) => () => Promise.reject(new Error(`no ${what} expected`));

/** Services for an application that makes no homeserver call and keeps no data. */
export const noServices: ServiceDeps = {
  log: { debug() {}, info() {}, warn() {}, error() {} },
  outboundQueue: { send: unexpected("outbound call") },
  botUserId: "@bot:test.local",
  homeserver: {
    roomState: unexpected("homeserver read"),
    roomStateEvent: unexpected("homeserver read"),
    createRoom: unexpected("homeserver call"),
    directRoom: unexpected("homeserver call"),
    uploadMedia: unexpected("homeserver call"),
    downloadMedia: unexpected("homeserver call"),
    resolveAlias: unexpected("homeserver read"),
    joinedMembers: unexpected("homeserver read"),
    event: unexpected("homeserver read"),
    profile: unexpected("homeserver read"),
    ensurePuppet: unexpected("homeserver call"),
    setPowerLevel: unexpected("homeserver call"),
  },
  data: { get: unexpected("data read"), list: unexpected("data read"), write: unexpected("write") },
  publicBaseUrl: "http://127.0.0.1:1",
  sentEvents: { eventIdOf: unexpected("sent event read") },
  secretKey: "test",
  ownsUser: () => false,
  deliveryPolicy: addressPolicy(),
  deliveryOutcomes: {
    record: unexpected("delivery outcome"),
    last: unexpected("delivery outcome"),
  },
};

/** A log that keeps its lines, to count what was logged at which level. */
export function recordingLog() {
  const lines: { level: keyof Log; message: string; attributes: Record<string, unknown> }[] = [];
  const at =
    (level: keyof Log) =>
    (message: string, ...attributes: Record<string, unknown>[]) =>
      void lines.push({ level, message, attributes: Object.assign({}, ...attributes) });
  const log: Log = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
  return { log, lines };
}

/** The messages a dead-letter queue holds (received, not deleted), their bodies parsed. */
export async function deadLetters(local: LocalAppservice, queue: "inbound" | "outbound") {
  const sqs = localSqs(local.sqsEndpoint);
  try {
    const { Messages = [] } = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queue === "inbound" ? local.inboundDeadLetterUrl : local.outboundDeadLetterUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
      }),
    );
    return Messages.map((message) => JSON.parse(message.Body as string));
  } finally {
    sqs.destroy();
  }
}

/**
 * The store as it is, counting what it is asked: the most reads of each kind under way at once
 * (reads made together), and every write.
 */
export function countingStore(data: AppDataStore) {
  const underway = { get: 0, list: 0 };
  const most = { get: 0, list: 0 };
  const writes: AppDataWrite[][] = [];
  const counted = async <T>(kind: "get" | "list", read: () => Promise<T>) => {
    most[kind] = Math.max(most[kind], ++underway[kind]);
    try {
      return await read();
    } finally {
      underway[kind]--;
    }
  };
  const store: AppDataStore = {
    get: (collection, key) => counted("get", () => data.get(collection, key)),
    list: (collection) => counted("list", () => data.list(collection)),
    write: (batch) => {
      writes.push(batch);
      return data.write(batch);
    },
  };
  return { store, most, writes };
}
