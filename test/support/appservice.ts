import { randomUUID } from "node:crypto";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inject } from "vitest";
import type { Application } from "../../functions/appservice/application.ts";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import type { ServiceDeps } from "../../functions/appservice/service-context.ts";
import { type LocalOptions, startLocal } from "../../functions/local/local.ts";

export const tempDir = () => mkdtemp(join(tmpdir(), "appservice-test-"));

/** Local mode on a free port, against the run's shared DynamoDB Local, with a table of its own. */
export async function startTestAppservice(options: Partial<LocalOptions> = {}) {
  const dir = await tempDir();
  const id = randomUUID().slice(0, 8);
  return startLocal({
    port: 0,
    registrationPath: join(dir, "registration.yaml"),
    homeserverUrl: "http://127.0.0.1:1",
    serverName: "test.local",
    dynamodbEndpoint: inject("dynamodbEndpoint"),
    tableName: `test-${id}`,
    visibilityTimeoutSeconds: 2,
    ...options,
  });
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

/** Polls until `check` holds or the time runs out. */
export async function waitFor(check: () => boolean, timeoutMs = 20_000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
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

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const unexpected = (what: string) => () => Promise.reject(new Error(`no ${what} expected`));

/** Services for an application that makes no homeserver call and keeps no data. */
export const noServices: ServiceDeps = {
  log: { debug() {}, info() {}, warn() {}, error() {} },
  outboundQueue: { send: unexpected("outbound call") },
  botUserId: "@bot:test.local",
  homeserver: {
    roomState: unexpected("homeserver read"),
    roomStateEvent: unexpected("homeserver read"),
  },
  data: { get: unexpected("data read"), list: unexpected("data read"), write: unexpected("write") },
  publicBaseUrl: "http://127.0.0.1:1",
  secretKey: "test",
};
