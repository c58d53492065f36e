import { describe, expect, it } from "vitest";
import type { IDBFactory } from "../../functions/crypto/idb-snapshot.ts";
import { PENDING_SEND_TTL_MS, PendingSends } from "../../functions/crypto/pending-sends.ts";
import type { HomeserverClient, OutboundAction } from "../../functions/matrix/request.ts";
import { sendRequest, stateRequest } from "../../functions/matrix/requests.ts";
import {
  encryptedRequest,
  type RoomEncryptor,
  type RoomSend,
  roomSendOf,
} from "../../functions/matrix/room-encryptor.ts";

const ROOM = "!room:test.local";
const action = (request: OutboundAction["request"]): OutboundAction => ({
  id: "txn-1",
  userId: "@bot:test.local",
  roomId: ROOM,
  request,
  kind: "send",
});

/** The encryptor's homeserver: the recording one makes no call. */
const noCalls: HomeserverClient = {
  call: () => Promise.reject(new Error("no call expected")),
};

/** An encryptor that records what it was asked and answers `encrypted` for every room. */
const recording = () => {
  const asked: RoomSend[] = [];
  const encryptor: RoomEncryptor = {
    encrypt: async (send) => {
      asked.push(send);
      return { kind: "encrypted", content: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "x" } };
    },
  };
  return { asked, encryptor };
};

describe("the outbox's room sends and their encryption", () => {
  it("reads a send's room, type, txnId and content from its request", () => {
    const send = action(sendRequest(ROOM, "m.room.message", "txn/1", { body: "hi" }));
    expect(roomSendOf(send)).toEqual({
      userId: "@bot:test.local",
      roomId: ROOM,
      txnId: "txn/1",
      type: "m.room.message",
      content: { body: "hi" },
    });
    expect(roomSendOf(action(stateRequest(ROOM, "m.room.topic", "", { topic: "t" })))).toBe(
      undefined,
    );
  });

  it("sends an encrypted room's event as m.room.encrypted under the same txnId and query", async () => {
    const { asked, encryptor } = recording();
    const send = action(sendRequest(ROOM, "m.room.message", "txn-1", { body: "hi" }, 1234));
    expect(await encryptedRequest(send, encryptor, noCalls)).toEqual({
      kind: "call",
      request: {
        ...sendRequest(ROOM, "m.room.encrypted", "txn-1", {
          algorithm: "m.megolm.v1.aes-sha2",
          ciphertext: "x",
        }),
        query: { ts: "1234" },
      },
    });
    expect(asked).toHaveLength(1);
  });

  it("asks nothing for calls that are no room send, nor for what is already encrypted", async () => {
    const { asked, encryptor } = recording();
    const state = action(stateRequest(ROOM, "m.room.topic", "", { topic: "t" }));
    const encrypted = action(sendRequest(ROOM, "m.room.encrypted", "txn-1", { ciphertext: "y" }));
    for (const made of [state, encrypted]) {
      expect(await encryptedRequest(made, encryptor, noCalls)).toEqual({
        kind: "call",
        request: made.request,
      });
    }
    expect(asked).toEqual([]);
  });
});

describe("the encrypted sends kept with a device's state", () => {
  const factory = async () => {
    const { IDBFactory: Factory } = (await import("fake-indexeddb")) as unknown as {
      IDBFactory: new () => IDBFactory;
    };
    return new PendingSends(new Factory(), "device::appservice-pending-sends");
  };
  const made = (body: string) => ({
    content: { ciphertext: body },
    toDevice: [{ eventType: "m.room.encrypted", txnId: `to-${body}`, body }],
  });

  it("finds a send by its txnId, and drops those older than the TTL when one is kept", async () => {
    const sends = await factory();
    const start = Date.now();
    await sends.put("old", made("old"), start);
    await sends.put("recent", made("recent"), start + PENDING_SEND_TTL_MS / 2);
    expect(await sends.get("old")).toEqual(made("old"));
    expect(await sends.get("unknown")).toBeUndefined();

    await sends.put("new", made("new"), start + PENDING_SEND_TTL_MS + 1);
    expect(await sends.get("old")).toBeUndefined();
    expect(await sends.get("recent")).toEqual(made("recent"));
    expect(await sends.get("new")).toEqual(made("new"));
  });
});
