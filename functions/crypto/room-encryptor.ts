import type { ClientServerRequest, HomeserverClient } from "../matrix/request.ts";
import { membersRequest, roomStateRequest } from "../matrix/requests.ts";
import {
  EncryptionCallFailed,
  type RoomEncryption,
  type RoomEncryptor,
  type RoomSend,
} from "../matrix/room-encryptor.ts";
import type { Log } from "../shared/log.ts";
import type { CryptoOwner } from "../store/crypto-state.ts";
import type { DurableOlmMachine } from "./durable-machine.ts";
import type { CryptoCall } from "./requests.ts";
import { encryptRoomEventWriteAhead, MEGOLM, type RoomToEncryptFor } from "./room-encryption.ts";

/**
 * The machine's calls made on the homeserver as the device: as its user with the as_token,
 * acting as the device (`device_id`, and `org.matrix.msc3202.device_id` for homeservers before
 * Matrix 1.17). Answers the body's JSON text; throws on any answer but a 2xx.
 */
export const deviceCalls =
  (homeserver: HomeserverClient, owner: CryptoOwner) =>
  async (call: CryptoCall): Promise<string> => {
    const response = await homeserver.call(owner.userId, {
      method: call.method,
      path: `/_matrix/client/v3${call.path}`,
      query: { device_id: owner.deviceId, "org.matrix.msc3202.device_id": owner.deviceId },
      body: JSON.parse(call.body),
    });
    if (response.status < 200 || response.status > 299) {
      throw new EncryptionCallFailed(`${call.method} ${call.path.split("/")[1]}`, response.status);
    }
    return JSON.stringify(response.body);
  };

/**
 * The outbox's `RoomEncryptor` on devices: whether a room is encrypted is read from its state
 * as the sending user sees it (`m.room.encryption`), and a send into one is encrypted by the
 * device `open` gives for its user, write-ahead (`encryptRoomEventWriteAhead`), for the room's
 * joined members (and invited ones, as its history visibility says).
 */
export class DeviceRoomEncryptor implements RoomEncryptor {
  constructor(
    private readonly options: {
      /** The machine of the device that encrypts `userId`'s sends, as last saved. */
      open: (userId: string) => Promise<DurableOlmMachine>;
      log: Log;
    },
  ) {}

  async encrypt(send: RoomSend, homeserver: HomeserverClient): Promise<RoomEncryption> {
    const { log } = this.options;
    const read = async (request: ClientServerRequest, what: string) => {
      const response = await homeserver.call(send.userId, request);
      if (response.status === 404) return undefined;
      if (response.status === 403) return "forbidden" as const;
      if (response.status < 200 || response.status > 299) {
        throw new EncryptionCallFailed(`reading ${what}`, response.status);
      }
      return response.body as Record<string, unknown>;
    };
    const encryption = await read(
      roomStateRequest(send.roomId, "m.room.encryption", ""),
      "m.room.encryption",
    );
    if (encryption === "forbidden") return { kind: "not-in-room" };
    if (encryption === undefined) return { kind: "clear" };
    if (encryption.algorithm !== MEGOLM) {
      return { kind: "refused", reason: `the room's encryption is not ${MEGOLM}` };
    }
    const visibility = await read(
      roomStateRequest(send.roomId, "m.room.history_visibility", ""),
      "m.room.history_visibility",
    );
    const historyVisibility =
      typeof visibility === "object" && typeof visibility.history_visibility === "string"
        ? visibility.history_visibility
        : "shared";
    const members = await read(membersRequest(send.roomId), "the members");
    if (typeof members !== "object") throw new EncryptionCallFailed("reading the members", 403);
    const room: RoomToEncryptFor = {
      roomId: send.roomId,
      encryption,
      historyVisibility,
      members: membersWithKeys(members, historyVisibility),
    };
    const made = await encryptRoomEventWriteAhead({
      open: () => this.options.open(send.userId),
      callsAs: (owner) => deviceCalls(homeserver, owner),
      room,
      txnId: send.txnId,
      type: send.type,
      content: send.content,
      log,
    });
    return { kind: "encrypted", content: made.content };
  }
}

/**
 * The members whose devices get a room key, from `GET /members`: the joined ones, and the
 * invited ones unless the history is visible to joined members only.
 */
function membersWithKeys(answer: Record<string, unknown>, historyVisibility: string): string[] {
  const memberships = historyVisibility === "joined" ? ["join"] : ["join", "invite"];
  const chunk = Array.isArray(answer.chunk) ? (answer.chunk as Record<string, unknown>[]) : [];
  const members = new Set<string>();
  for (const event of chunk) {
    const membership = (event.content as { membership?: unknown } | undefined)?.membership;
    if (typeof event.state_key === "string" && memberships.includes(membership as string)) {
      members.add(event.state_key);
    }
  }
  return [...members];
}
