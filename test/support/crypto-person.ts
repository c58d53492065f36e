import { randomUUID } from "node:crypto";
import type * as Sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { bootstrapCrossSigning } from "../../functions/crypto/cross-signing.ts";
import {
  type CryptoCall,
  sendOutgoingRequests,
  sendRequest,
} from "../../functions/crypto/requests.ts";
import { loadCrypto } from "../../functions/crypto/wasm.ts";
import type { RoomEvent } from "../../functions/matrix/homeserver-calls.ts";
import type { ScriptedHomeserver } from "./homeserver.ts";

type Json = Record<string, unknown>;

/**
 * A person in the tests with a real crypto device (crypto-wasm's `OlmMachine`) on the scripted
 * homeserver, with its own access token. Strict, as Element is since MSC4153: by default its
 * identity is cross-signed and its device signed, it shares room keys only with devices their
 * owner cross-signed (identity-based sharing) and decrypts only from cross-signed devices.
 */
export class CryptoPerson {
  private since: string | undefined;
  /** Room events seen by `sync`, in order. */
  readonly events: RoomEvent[] = [];
  private txn = 0;

  private constructor(
    readonly sdk: typeof Sdk,
    readonly machine: Sdk.OlmMachine,
    readonly homeserver: ScriptedHomeserver,
    readonly userId: string,
    readonly deviceId: string,
    private readonly accessToken: string,
    readonly strict: boolean,
  ) {}

  /**
   * A person with a device, its keys uploaded; `crossSigned` (the default) bootstraps its
   * cross-signing identity and signs its device; `strict` (the default) is Element's policy.
   */
  static async create(
    homeserver: ScriptedHomeserver,
    localpart: string,
    options: { crossSigned?: boolean; strict?: boolean } = {},
  ): Promise<CryptoPerson> {
    const sdk = await loadCrypto();
    const account = homeserver.encryption.addPerson(`@${localpart}:${homeserver.serverName}`);
    const machine = await sdk.OlmMachine.initialize(
      new sdk.UserId(account.userId),
      new sdk.DeviceId(account.deviceId),
    );
    const person = new CryptoPerson(
      sdk,
      machine,
      homeserver,
      account.userId,
      account.deviceId,
      account.accessToken,
      options.strict ?? true,
    );
    await person.sendOutgoing();
    if (options.crossSigned ?? true) await person.bootstrapCrossSigning();
    return person;
  }

  /** Makes, signs and uploads its cross-signing keys (the bootstrap's three requests, in order). */
  async bootstrapCrossSigning() {
    await bootstrapCrossSigning(this.machine, (call) => this.call(call));
    await this.sendOutgoing();
  }

  /** A client-server call with its own token; the answer's JSON text, or throws on an error. */
  async call(call: CryptoCall | { method: "GET"; path: string; body?: undefined }) {
    const response = await fetch(`${this.homeserver.url}/_matrix/client/v3${call.path}`, {
      method: call.method,
      headers: { authorization: `Bearer ${this.accessToken}`, "content-type": "application/json" },
      ...(call.body !== undefined && { body: call.body }),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${call.method} ${call.path}: ${response.status} ${text}`);
    return text;
  }

  /** Sends what its machine asks for (key uploads, queries, claims, to-device) until it is done. */
  sendOutgoing() {
    return sendOutgoingRequests(this.machine, (call) => this.call(call));
  }

  /**
   * Syncs once: to-device messages (room keys), device-list changes and key counts go to its
   * machine, room events to `events`; then it sends what its machine asks for.
   */
  async sync() {
    const query = this.since ? `?since=${encodeURIComponent(this.since)}` : "";
    const sync = JSON.parse(await this.call({ method: "GET", path: `/sync${query}` })) as {
      next_batch: string;
      to_device: { events: Json[] };
      device_lists: { changed: string[]; left: string[] };
      device_one_time_keys_count: Record<string, number>;
      device_unused_fallback_key_types: string[];
      rooms: { join: Record<string, { timeline: { events: RoomEvent[] } }> };
    };
    this.since = sync.next_batch;
    const { sdk } = this;
    await this.machine.receiveSyncChanges(
      JSON.stringify(sync.to_device.events),
      new sdk.DeviceLists(
        sync.device_lists.changed.map((id) => new sdk.UserId(id)),
        sync.device_lists.left.map((id) => new sdk.UserId(id)),
      ),
      new Map(Object.entries(sync.device_one_time_keys_count)),
      new Set(sync.device_unused_fallback_key_types),
      this.decryptionSettings(),
    );
    for (const room of Object.values(sync.rooms.join)) this.events.push(...room.timeline.events);
    await this.sendOutgoing();
  }

  private decryptionSettings() {
    const { sdk } = this;
    return new sdk.DecryptionSettings(
      this.strict ? sdk.TrustRequirement.CrossSigned : sdk.TrustRequirement.Untrusted,
    );
  }

  /**
   * Encrypts `content` into an encrypted room whose members are `members`, as a client does: the
   * members' devices queried, Olm sessions made where missing, the room key shared (strict:
   * only with cross-signed devices), then the event sent. Returns its event ID.
   */
  async sendEncrypted(roomId: string, members: string[], content: Json, type = "m.room.message") {
    const { sdk } = this;
    // The machine takes the IDs it is given (they are freed): a new list for each call.
    const users = () => members.map((id) => new sdk.UserId(id));
    const room = new sdk.RoomId(roomId);
    await this.machine.updateTrackedUsers(users());
    await this.sendOutgoing();
    const claim = await this.machine.getMissingSessions(users());
    if (claim) await sendRequest(this.machine, claim, (call) => this.call(call));
    const settings = new sdk.EncryptionSettings();
    settings.sharingStrategy = this.strict
      ? sdk.CollectStrategy.identityBasedStrategy()
      : sdk.CollectStrategy.allDevices();
    for (const request of await this.machine.shareRoomKey(room, users(), settings)) {
      await sendRequest(this.machine, request, (call) => this.call(call));
    }
    const encrypted = await this.machine.encryptRoomEvent(room, type, JSON.stringify(content));
    this.txn++;
    const answer = await this.call({
      method: "PUT",
      path: `/rooms/${encodeURIComponent(roomId)}/send/m.room.encrypted/${this.txn}-${randomUUID()}`,
      body: encrypted,
    });
    return (JSON.parse(answer) as { event_id: string }).event_id;
  }

  /**
   * Tracks `userIds` and queries their keys, as a client does for the members of its encrypted
   * rooms: their devices' trust is then known when it decrypts.
   */
  async track(userIds: string[]) {
    await this.machine.updateTrackedUsers(userIds.map((id) => new this.sdk.UserId(id)));
    await this.sendOutgoing();
  }

  /**
   * Decrypts a room event under its policy (strict: only from cross-signed devices). Throws the
   * machine's `MegolmDecryptionError` when it cannot or will not.
   */
  async decrypt(event: RoomEvent): Promise<{ type: string; content: Json; senderDevice?: string }> {
    const decrypted = await this.machine.decryptRoomEvent(
      JSON.stringify(event),
      new this.sdk.RoomId(event.room_id),
      this.decryptionSettings(),
    );
    const { type, content } = JSON.parse(decrypted.event) as { type: string; content: Json };
    const senderDevice = decrypted.senderDevice?.toString();
    return { type, content, ...(senderDevice !== undefined && { senderDevice }) };
  }

  /** The event with this ID, among those `sync` saw. */
  event(eventId: string): RoomEvent {
    const event = this.events.find((e) => e.event_id === eventId);
    if (!event) throw new Error(`${this.userId} has not seen ${eventId}`);
    return event;
  }

  close() {
    this.machine.close();
  }
}
