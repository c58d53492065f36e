import type * as Sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { ActionTimeSpent } from "../matrix/action-time.ts";
import type { Log } from "../shared/log.ts";
import type { CryptoOwner } from "../store/crypto-state.ts";
import { type DurableOlmMachine, StaleCryptoStateError } from "./durable-machine.ts";
import type { EncryptedSend, PendingToDevice } from "./pending-sends.ts";
import { type CryptoCall, sendOutgoingRequests, sendRequest } from "./requests.ts";
import { loadCrypto } from "./wasm.ts";

/** The one algorithm of `m.room.encryption` for room events. */
export const MEGOLM = "m.megolm.v1.aes-sha2";

/** A room as its encryption needs it, read from its state. */
export interface RoomToEncryptFor {
  roomId: string;
  /** Its `m.room.encryption` content. */
  encryption: Record<string, unknown>;
  /** Its `m.room.history_visibility` (`shared` when it has none). */
  historyVisibility: string;
  /**
   * Whose devices get the room key: the joined members, and the invited ones unless the room's
   * history is visible to joined members only (as matrix-js-sdk decides).
   */
  members: string[];
}

/** Encrypting a room's sends cannot be done, now or later: its algorithm is not Megolm. */
export class UnsupportedRoomEncryption extends Error {}

const positive = (value: unknown): value is number =>
  typeof value === "number" && Number.isSafeInteger(value) && value > 0;

/**
 * The machine's settings for a room: Element's strict sharing (identity-based: only devices
 * their owner cross-signed, the others get `m.room_key.withheld`), the room's history
 * visibility, and its rotation (`rotation_period_ms`, `rotation_period_msgs`; the machine's
 * defaults, a week and 100 messages as the spec says, where absent).
 */
export function encryptionSettings(
  sdk: typeof Sdk,
  room: RoomToEncryptFor,
): Sdk.EncryptionSettings {
  const {
    algorithm,
    rotation_period_ms: periodMs,
    rotation_period_msgs: periodMessages,
  } = room.encryption;
  if (algorithm !== MEGOLM) {
    throw new UnsupportedRoomEncryption(
      `the room's encryption ${String(algorithm)} is not ${MEGOLM}`,
    );
  }
  const settings = new sdk.EncryptionSettings();
  settings.sharingStrategy = sdk.CollectStrategy.identityBasedStrategy();
  settings.historyVisibility =
    room.historyVisibility === "joined"
      ? sdk.HistoryVisibility.Joined
      : room.historyVisibility === "invited"
        ? sdk.HistoryVisibility.Invited
        : room.historyVisibility === "world_readable"
          ? sdk.HistoryVisibility.WorldReadable
          : sdk.HistoryVisibility.Shared;
  // In microseconds.
  if (positive(periodMs)) settings.rotationPeriod = BigInt(periodMs) * 1000n;
  if (positive(periodMessages)) settings.rotationPeriodMessages = BigInt(periodMessages);
  return settings;
}

/**
 * Encrypts one room event as a client does, sending nothing encrypted: the members tracked and
 * their devices queried, Olm sessions claimed where missing, the room key shared (its to-device
 * messages kept, and marked sent: whoever saves this commits to sending them) and the event
 * encrypted. `send` makes the key queries and claims.
 */
async function encryptEvent(
  machine: Sdk.OlmMachine,
  sdk: typeof Sdk,
  room: RoomToEncryptFor,
  type: string,
  content: Record<string, unknown>,
  send: (call: CryptoCall) => Promise<string>,
): Promise<EncryptedSend> {
  const settings = encryptionSettings(sdk, room);
  // The machine frees the IDs it is given: a new list for each call.
  const users = () => room.members.map((id) => new sdk.UserId(id));
  await machine.updateTrackedUsers(users());
  await sendOutgoingRequests(machine, send);
  const claim = await machine.getMissingSessions(users());
  if (claim) await sendRequest(machine, claim, send);
  const toDevice: EncryptedSend["toDevice"] = [];
  for (const request of await machine.shareRoomKey(
    new sdk.RoomId(room.roomId),
    users(),
    settings,
  )) {
    toDevice.push({ eventType: request.event_type, txnId: request.txn_id, body: request.body });
    // The machine encrypts with a room key only once it is shared.
    await machine.markRequestAsSent(request.id, request.type, "{}");
  }
  const encrypted = await machine.encryptRoomEvent(
    new sdk.RoomId(room.roomId),
    type,
    JSON.stringify(content),
  );
  return { content: JSON.parse(encrypted) as Record<string, unknown>, toDevice };
}

/**
 * What an encryption whose action's time ran out keeps for the action's retry, in one save: the
 * to-device messages already sent (the retry sends the rest, each under its own txnId still), or,
 * before anything was encrypted, the devices queried and the Olm sessions claimed (so that the
 * retry does not claim their one-time keys again). A save refused as stale keeps nothing: the
 * retry does that work again, which is safe.
 */
async function keepProgress(
  durable: DurableOlmMachine,
  txnId: string,
  made: EncryptedSend | undefined,
  sent: number,
): Promise<void> {
  if (made) {
    if (sent <= (made.toDeviceSent ?? 0)) return;
    await durable.pendingSends.put(txnId, { ...made, toDeviceSent: sent });
  }
  try {
    await durable.save();
  } catch (error) {
    if (!(error instanceof StaleCryptoStateError)) throw error;
  }
}

/** Saves refused as stale in a row before an encryption gives up (its send is retried later). */
const MAX_STALE_SAVES = 5;

const enc = encodeURIComponent;

/**
 * One room event encrypted by a device, write-ahead: the machine's state and what it made (the
 * `m.room.encrypted` content and the room key's to-device messages, under `txnId`) are saved
 * together with the version check before anything encrypted is sent; then the to-device
 * messages are sent, and the content returned for the caller to send under `txnId`. A retry
 * (after a crash anywhere past the save) finds what was saved and sends exactly that again,
 * under the same txnIds, never encrypting twice. A save refused as stale (another writer saved
 * the device's state meanwhile, and nothing was sent) opens the newer state and encrypts again.
 */
export async function encryptRoomEventWriteAhead(options: {
  /** The device's machine, as last saved. */
  open: () => Promise<DurableOlmMachine>;
  /** Client-server calls made as a device; each answers the body's text, throws on a failure. */
  callsAs: (owner: CryptoOwner) => (call: CryptoCall) => Promise<string>;
  room: RoomToEncryptFor;
  txnId: string;
  type: string;
  content: Record<string, unknown>;
  log: Log;
}): Promise<EncryptedSend> {
  const { open, room, txnId, log } = options;
  const sdk = await loadCrypto();
  for (let attempt = 1; ; attempt++) {
    try {
      const durable = await open();
      return await durable.use(async ({ machine, owner, pendingSends }) => {
        const send = options.callsAs(owner);
        let made: EncryptedSend | undefined;
        let sent = 0;
        try {
          made = await pendingSends.get(txnId);
          if (!made) {
            made = await encryptEvent(machine, sdk, room, options.type, options.content, send);
            await pendingSends.put(txnId, made);
            await durable.save();
          }
          for (sent = made.toDeviceSent ?? 0; sent < made.toDevice.length; sent++) {
            const message = made.toDevice[sent] as PendingToDevice;
            await send({
              method: "PUT",
              path: `/sendToDevice/${enc(message.eventType)}/${enc(message.txnId)}`,
              body: message.body,
            });
          }
          return made;
        } catch (error) {
          // Kept before `use` closes the machine on the way out.
          if (error instanceof ActionTimeSpent) await keepProgress(durable, txnId, made, sent);
          throw error;
        }
      });
    } catch (error) {
      if (!(error instanceof StaleCryptoStateError) || attempt >= MAX_STALE_SAVES) throw error;
      log.info("the crypto state was saved by another process: encrypted again on it", {
        userId: error.owner.userId,
        deviceId: error.owner.deviceId,
        roomId: room.roomId,
        attempt,
      });
    }
  }
}
