import { createHmac } from "node:crypto";
import type * as Sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import type {
  ClientEvent,
  DeviceData,
  ToDeviceMessage,
} from "../appservice/protocol/transaction.ts";
import { sha256 } from "../shared/hash.ts";
import { type CryptoOwner, StaleCryptoStateError } from "../store/crypto-state.ts";
import { actingAsDevice, type BotDeviceOptions, ensureBotDevice } from "./bot-device.ts";
import type { DurableOlmMachine } from "./durable-machine.ts";
import { receiveTransactionCrypto } from "./receive.ts";
import { sendOutgoingRequests } from "./requests.ts";
import type { WarmMachines } from "./warm-machines.ts";
import { loadCrypto } from "./wasm.ts";

/**
 * A user's device ID (the bot's, a puppet's, a webhook user's): the same for a user on every start
 * and deploy, its own per user.
 */
export const botDeviceIdOf = (userId: string) => `AS${sha256(userId).slice(0, 10).toUpperCase()}`;

/**
 * What every device of the appservice shares: where its state is kept, under which key, how the
 * homeserver is called; and the device ID of each user (`botDeviceIdOf` unless a test says).
 */
export type DeviceOptions = Omit<BotDeviceOptions, "owner"> & {
  deviceIdOf?: (userId: string) => string;
  /** The warm process's open machines, reused while no other process saved (none: opened each time). */
  machines?: WarmMachines;
};

/** The device of `userId`, as `options` names it. */
export const deviceOwnerOf = (options: DeviceOptions, userId: string): CryptoOwner => ({
  userId,
  deviceId: (options.deviceIdOf ?? botDeviceIdOf)(userId),
});

/**
 * The one opener of a device: the machine of the device that does `userId`'s crypto, each
 * appservice user its own (the bot's, a puppet's, a webhook user's), made the first time
 * (`ensureBotDevice`: cross-signed, so strict clients trust it), then as last saved: kept warm
 * in `options.machines` if given. `use` it for one unit of work.
 */
export const openUserDevice =
  (options: DeviceOptions) =>
  async (userId: string): Promise<DurableOlmMachine> => {
    const { deviceIdOf: _, machines, ...device } = options;
    const owner = deviceOwnerOf(options, userId);
    const open = async () => (await ensureBotDevice({ ...device, owner })).machine;
    return machines ? machines.open(options.store, owner, open) : open();
  };

/**
 * The 32-byte key that encrypts a device's crypto state, derived from a secret (Secrets Manager
 * in AWS, a file in local mode): any secret of enough entropy, whatever its form.
 */
export const cryptoStoreKeyFrom = (secret: string): Uint8Array =>
  new Uint8Array(createHmac("sha256", secret).update("crypto state store key").digest());

/**
 * What became of an encrypted room event: decrypted (the sender's device cross-signed by its
 * owner, Element's strict policy), its key not here (yet), or refused for good.
 */
export type Decryption =
  | {
      status: "decrypted";
      type: string;
      content: Record<string, unknown>;
      /** The sender's device, cross-signed by its owner. */
      senderDevice?: string;
    }
  | { status: "missing-key" }
  | { status: "undecryptable"; reason: string };

/** Saves refused as stale in a row before the work gives up (and its item is retried later). */
const MAX_STALE_SAVES = 5;

/**
 * One device's crypto work, on its durable machine: each unit of work opens the state last saved
 * (the machine kept warm if no other process saved since: `WarmMachines`; the device made first
 * if it never was: `ensureBotDevice`), sends what the machine then asks
 * for (key uploads, queries, claims) one at a time, and saves the state if it changed, with the
 * version check. A save refused as stale (another process saved meanwhile) is answered by
 * opening the newer state and doing the work again. Within this process the work is done one
 * unit at a time, so only processes race, and rarely.
 */
export class DeviceCrypto {
  private queue: Promise<unknown> = Promise.resolve();
  readonly owner: CryptoOwner;
  private readonly open: (userId: string) => Promise<DurableOlmMachine>;

  /** The crypto of `userId`'s device (the bot's), opened by `openUserDevice`. */
  constructor(private readonly options: DeviceOptions & { userId: string }) {
    this.owner = deviceOwnerOf(options, options.userId);
    this.open = openUserDevice(options);
  }

  /**
   * Runs `work` on the device's machine, then sends its requests and saves the state if `work`
   * says it changed it or a request was sent. Redone on a newer state if the save was stale.
   */
  withMachine<T>(
    work: (machine: Sdk.OlmMachine, sdk: typeof Sdk) => Promise<{ result: T; changed: boolean }>,
  ): Promise<T> {
    const run = this.queue.then(() => this.runWork(work));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async runWork<T>(
    work: (machine: Sdk.OlmMachine, sdk: typeof Sdk) => Promise<{ result: T; changed: boolean }>,
  ): Promise<T> {
    const sdk = await loadCrypto();
    for (let attempt = 1; ; attempt++) {
      try {
        // The device's making is saved with the version check too: two processes may race.
        const durable = await this.open(this.owner.userId);
        return await durable.use(async ({ machine }) => {
          const { result, changed } = await work(machine, sdk);
          const sent = await this.sendOutgoing(machine);
          if (changed || sent > 0) await durable.save();
          return result;
        });
      } catch (error) {
        if (!(error instanceof StaleCryptoStateError) || attempt >= MAX_STALE_SAVES) throw error;
        this.options.log.info("the crypto state was saved by another process: done again on it", {
          userId: this.owner.userId,
          deviceId: this.owner.deviceId,
          attempt,
        });
      }
    }
  }

  private sendOutgoing(machine: Sdk.OlmMachine) {
    return sendOutgoingRequests(machine, actingAsDevice(this.options.http, this.owner));
  }

  /** Makes the device if it was never made, so that people's clients can encrypt for it. */
  ensureDevice(): Promise<void> {
    return this.withMachine(async () => ({ result: undefined, changed: false }));
  }

  /**
   * A transaction's to-device messages for the device, device-list changes and key counts, given
   * to its machine; resolves once the state holding what they carried (room keys) is saved. Key
   * counts alone (every transaction has them) save nothing unless keys were uploaded.
   */
  receive(transaction: { toDevice: ToDeviceMessage[]; devices?: DeviceData }): Promise<void> {
    const lists = transaction.devices?.deviceLists;
    const changed =
      transaction.toDevice.length > 0 ||
      (lists?.changed?.length ?? 0) > 0 ||
      (lists?.left?.length ?? 0) > 0;
    return this.withMachine(async (machine) => {
      await receiveTransactionCrypto(machine, this.owner, transaction);
      return { result: undefined, changed };
    });
  }

  /**
   * Tracks these users' devices (members of the bot's encrypted rooms), queried now if new to
   * the machine; saves only if one was new, so a repeat costs a load and nothing else.
   */
  track(userIds: string[]): Promise<void> {
    return this.withMachine(async (machine, sdk) => {
      const tracked = new Set([...(await machine.trackedUsers())].map((id) => id.toString()));
      const added = userIds.filter((id) => !tracked.has(id));
      if (added.length > 0) await machine.updateTrackedUsers(added.map((id) => new sdk.UserId(id)));
      return { result: undefined, changed: added.length > 0 };
    });
  }

  /**
   * Queries every tracked user's devices again (sent before the save): after the homeserver
   * lost device-list changes (an events-only retry of a failed transaction).
   */
  markAllTrackedUsersAsDirty(): Promise<void> {
    return this.withMachine(async (machine) => {
      await machine.markAllTrackedUsersAsDirty();
      return { result: undefined, changed: true };
    });
  }

  /**
   * Decrypts an `m.room.encrypted` room event, from cross-signed devices only. The sender is
   * tracked and its devices queried first, so that its device's trust is known.
   */
  decrypt(event: ClientEvent): Promise<Decryption> {
    return this.withMachine<Decryption>(async (machine, sdk) => {
      await machine.updateTrackedUsers([new sdk.UserId(event.sender)]);
      // The sender's keys before the decryption (a newly tracked sender is queried now).
      const queried = await this.sendOutgoing(machine);
      // Element's strict policy (MSC4153): only from devices their owner cross-signed.
      const settings = new sdk.DecryptionSettings(sdk.TrustRequirement.CrossSigned);
      try {
        const decrypted = await machine.decryptRoomEvent(
          JSON.stringify(event),
          new sdk.RoomId(event.room_id),
          settings,
        );
        const clear = JSON.parse(decrypted.event) as {
          type: string;
          content: Record<string, unknown>;
        };
        const senderDevice = decrypted.senderDevice?.toString();
        return {
          result: {
            status: "decrypted",
            type: clear.type,
            content: clear.content,
            ...(senderDevice !== undefined && { senderDevice }),
          },
          changed: queried > 0,
        };
      } catch (error) {
        if (!(error instanceof sdk.MegolmDecryptionError)) throw error;
        const code = error.code;
        const missing =
          code === sdk.DecryptionErrorCode.MissingRoomKey ||
          code === sdk.DecryptionErrorCode.UnknownMessageIndex;
        return {
          result: missing
            ? { status: "missing-key" }
            : { status: "undecryptable", reason: sdk.DecryptionErrorCode[code] ?? "unknown" },
          changed: queried > 0,
        };
      }
    });
  }
}
