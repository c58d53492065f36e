import type { ClientServerRequest, HomeserverClient, OutboundAction } from "./request.ts";
import { sendRequest } from "./requests.ts";

/** A room event an action sends: what its encryption needs. */
export interface RoomSend {
  userId: string;
  roomId: string;
  /** The action's txnId: the encrypted send's too, the same on every retry. */
  txnId: string;
  type: string;
  content: Record<string, unknown>;
}

/**
 * How a room send goes out: as it is (the room is not encrypted), as `m.room.encrypted` with
 * `content`, or not at all: the user cannot read the room's state (it is not in the room), or
 * the room's encryption is one this appservice cannot do (`refused`).
 */
export type RoomEncryption =
  | { kind: "clear" }
  | { kind: "encrypted"; content: Record<string, unknown> }
  | { kind: "not-in-room" }
  | { kind: "refused"; reason: string };

/**
 * A call the encryption made (a state read, a key query or claim, a to-device send) answered
 * other than 2xx: its status, for the outbox's reason and its count of server errors.
 */
export class EncryptionCallFailed extends Error {
  override name = "EncryptionCallFailed";
  constructor(
    what: string,
    readonly status: number,
  ) {
    super(`${what}: ${status}`);
  }
}

/**
 * Encrypts the sends into encrypted rooms (`m.room.encryption` in their state). Given to the
 * outbox by the edges: the crypto layer, above this one, implements it. A throw means the send
 * could not be encrypted now (a failed key query, a stale crypto state, the action's time spent):
 * retried, never sent in clear.
 */
export interface RoomEncryptor {
  /** `homeserver`: the action's, whose calls count in its time budget. */
  encrypt(send: RoomSend, homeserver: HomeserverClient): Promise<RoomEncryption>;
}

const SEND_PATH = /^\/_matrix\/client\/v3\/rooms\/([^/]+)\/send\/([^/]+)\/([^/]+)$/;

/** The room event a `PUT …/send/{type}/{txnId}` action sends; undefined for any other call. */
export function roomSendOf(action: OutboundAction): RoomSend | undefined {
  const { request } = action;
  const match = request.method === "PUT" ? SEND_PATH.exec(request.path) : null;
  if (!match) return undefined;
  const [roomId, type, txnId] = match.slice(1).map(decodeURIComponent) as [string, string, string];
  return {
    userId: action.userId,
    roomId,
    txnId,
    type,
    content: (request.body ?? {}) as Record<string, unknown>,
  };
}

/**
 * The call that carries an action: a room send into an encrypted room (already encrypted ones
 * aside) becomes its `m.room.encrypted` send, under the same txnId and query (`ts`); any other call is
 * made as it is. Without an encryptor every call is made as it is. The encryption's calls are
 * made on `homeserver`.
 */
export async function encryptedRequest(
  action: OutboundAction,
  encryptor: RoomEncryptor | undefined,
  homeserver: HomeserverClient,
): Promise<
  | { kind: "call"; request: ClientServerRequest }
  | Extract<RoomEncryption, { kind: "not-in-room" | "refused" }>
> {
  const send = roomSendOf(action);
  if (!encryptor || !send || send.type === "m.room.encrypted") {
    return { kind: "call", request: action.request };
  }
  const encryption = await encryptor.encrypt(send, homeserver);
  switch (encryption.kind) {
    case "clear":
      return { kind: "call", request: action.request };
    case "encrypted": {
      const { query } = action.request;
      const request = sendRequest(send.roomId, "m.room.encrypted", send.txnId, encryption.content);
      return { kind: "call", request: { ...request, ...(query && { query }) } };
    }
    default:
      return encryption;
  }
}
