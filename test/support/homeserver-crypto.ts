import { randomUUID } from "node:crypto";
import type { ClientServerCall } from "../../functions/crypto/bot-device.ts";
import type { RecordedRequest } from "./recorded-request.ts";

type Json = Record<string, unknown>;
type Answer = [number, unknown];
type Signatures = Record<string, Record<string, string>>;

/** A device of a user, as the homeserver keeps it: its keys as uploaded, its one-time keys. */
export interface DeviceRecord {
  userId: string;
  deviceId: string;
  displayName?: string;
  /** `device_keys` as uploaded (their own signature included). */
  keys?: Json;
  /** `algorithm:keyId` → the signed key, in upload order (claimed first in, first out). */
  oneTimeKeys: Map<string, unknown>;
  /** Algorithm → the fallback key and whether a claim has used it. */
  fallbackKeys: Map<string, { keyId: string; key: unknown; used: boolean }>;
}

/** A to-device message as it is delivered: `to_*` as MSC2409 pushes them to the appservice. */
export interface ToDeviceDelivery {
  type: string;
  sender: string;
  content: Json;
  to_user_id: string;
  to_device_id: string;
}

/** Who makes a request: a user, with a device or without one. */
export interface Requester {
  userId: string;
  deviceId?: string;
  /** `appservice`: the as_token (masquerading); `device`: a device's own access token. */
  via: "appservice" | "device";
  /** When a device's token was issued (login), for `ui_auth: session_timeout`. */
  issuedAt?: number;
}

/** The homeserver's view the encryption endpoints need. */
export interface HomeserverView {
  asToken: string;
  serverName: string;
  botUserId: string;
  /** The appservice's users (the bot and the namespaces), which get pushes, not syncs. */
  interestedIn(userId: string): boolean;
  /** The user acting through the as_token (`user_id` or the bot), or the error Synapse gives. */
  appserviceActor(request: RecordedRequest): string | Answer;
  /** Room events in the order the homeserver accepted them, as clients get them. */
  timeline(): Json[];
}

/** The appservice's calls on a homeserver at `url`: with the as_token, or a device's `token`. */
export const appserviceCalls =
  (url: () => string, asToken: string): ClientServerCall =>
  async ({ method, path, body, token }) => {
    const response = await fetch(`${url()}/_matrix/client/v3${path}`, {
      method,
      headers: { authorization: `Bearer ${token ?? asToken}`, "content-type": "application/json" },
      ...(body !== undefined && { body }),
    });
    return { status: response.status, text: await response.text() };
  };

const unrecognized: Answer = [404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }];

/**
 * What a homeserver does for end-to-end encryption, as Synapse does with MSC2409, MSC3202 and
 * MSC4190 on: devices (made by an appservice with `PUT /devices/{id}`, or by
 * `m.login.application_service`), acting as a device with `device_id` (or
 * `org.matrix.msc3202.device_id`), device and one-time keys, fallback keys, cross-signing keys and
 * signatures, to-device messages, and the people's side (their own tokens and a minimal `/sync`).
 * What is for the appservice's users is pushed in transactions (`pushTransaction`).
 */
export class HomeserverEncryption {
  /** userId → deviceId → device. */
  readonly devices = new Map<string, Map<string, DeviceRecord>>();
  /** userId → its cross-signing keys. */
  readonly crossSigning = new Map<
    string,
    { master?: Json; selfSigning?: Json; userSigning?: Json }
  >();
  /** `userId\nkeyId` (a device ID or a cross-signing public key) → signatures uploaded on it. */
  readonly extraSignatures = new Map<string, Signatures>();
  /** Access tokens of devices (people's, and those `m.login.application_service` gave). */
  readonly tokens = new Map<string, { userId: string; deviceId: string; issuedAt: number }>();
  /** Messages for people's devices, until their next `/sync`. */
  readonly inboxes = new Map<string, ToDeviceDelivery[]>();
  /** Messages for the appservice's devices, until the next `pushTransaction`. */
  readonly forAppservice: ToDeviceDelivery[] = [];
  /** Users whose devices or cross-signing keys changed, in order (a sequence number each). */
  readonly deviceListChanges: { userId: string; seq: number }[] = [];
  /** Device-list changes not yet pushed to the appservice. */
  private readonly unpushedChanges = new Set<string>();
  private readonly sentToDevice = new Set<string>();
  private pushCounter = 0;

  /** False: a homeserver before Matrix 1.17 (Synapse before 1.141), which ignores `device_id`. */
  stableDeviceIdSupported = true;
  /** False: `PUT /devices/{id}` cannot make a device (no MSC4190): 404 for an unknown one. */
  msc4190Supported = true;
  /**
   * True (Matrix 1.11, MSC3967): a first upload of cross-signing keys needs no interactive auth.
   * A reset (a master key already there) always needs it.
   */
  crossSigningWithoutAuth = true;
  /**
   * Synapse's `ui_auth: session_timeout`: interactive auth is skipped for a device token issued
   * less than this long ago. Undefined: not set.
   */
  uiAuthSessionTimeoutMs: number | undefined;

  constructor(private readonly hs: HomeserverView) {}

  /** The device owning a bearer token, if the token is a device's. */
  tokenOwner(authorization: string | undefined) {
    if (!authorization?.startsWith("Bearer ")) return undefined;
    return this.tokens.get(authorization.slice("Bearer ".length));
  }

  /** A person (not an appservice user) with a device and its own access token. */
  addPerson(userId: string, deviceId = randomUUID().slice(0, 10).toUpperCase()) {
    this.ensureDevice(userId, deviceId);
    const accessToken = `syt_${randomUUID()}`;
    this.tokens.set(accessToken, { userId, deviceId, issuedAt: Date.now() });
    return { userId, deviceId, accessToken };
  }

  device(userId: string, deviceId: string): DeviceRecord | undefined {
    return this.devices.get(userId)?.get(deviceId);
  }

  private ensureDevice(userId: string, deviceId: string, displayName?: string) {
    let devices = this.devices.get(userId);
    if (!devices) {
      devices = new Map();
      this.devices.set(userId, devices);
    }
    let device = devices.get(deviceId);
    const created = !device;
    if (!device) {
      device = { userId, deviceId, oneTimeKeys: new Map(), fallbackKeys: new Map() };
      devices.set(deviceId, device);
    }
    if (displayName !== undefined) device.displayName = displayName;
    return { device, created };
  }

  private changed(userId: string) {
    this.deviceListChanges.push({ userId, seq: this.deviceListChanges.length + 1 });
    this.unpushedChanges.add(userId);
  }

  /** Who makes `request`: a device's token, or the as_token with `user_id` and `device_id`. */
  private requester(request: RecordedRequest): Requester | Answer {
    const owner = this.tokenOwner(request.authorization);
    if (owner) return { ...owner, via: "device" };
    const actor = this.hs.appserviceActor(request);
    if (typeof actor !== "string") return actor;
    const deviceId =
      (this.stableDeviceIdSupported ? request.query.device_id : undefined) ??
      request.query["org.matrix.msc3202.device_id"];
    if (deviceId === undefined) return { userId: actor, via: "appservice" };
    if (!this.device(actor, deviceId)) {
      return [
        400,
        { errcode: "M_EXCLUSIVE", error: "Application service has not registered this device" },
      ];
    }
    return { userId: actor, deviceId, via: "appservice" };
  }

  /** The answer to an encryption request, or undefined when `request` is not one. */
  answer(request: RecordedRequest): Answer | undefined {
    const path = request.path.replace(/^\/_matrix\/client\/(v3|r0)/, "");
    const body = (request.body ?? {}) as Json;
    const parts = path.split("/").map(decodeURIComponent);
    const route = `${request.method} ${parts[1]}${parts[2] ? `/${parts[2]}` : ""}`;
    const known = [
      "POST keys/upload",
      "POST keys/query",
      "POST keys/claim",
      "POST keys/device_signing",
      "POST keys/signatures",
      "PUT sendToDevice",
      "PUT devices",
      "POST login",
      "GET sync",
    ];
    if (!known.some((k) => route.startsWith(k))) return undefined;
    if (route === "POST login") return this.login(request, body);
    const requester = this.requester(request);
    if (Array.isArray(requester)) return requester;
    switch (route) {
      case "POST keys/upload":
        return this.uploadKeys(requester, body);
      case "POST keys/query":
        return this.queryKeys(requester, body);
      case "POST keys/claim":
        return this.claimKeys(body);
      case "POST keys/signatures":
        return this.uploadSignatures(body);
      case "GET sync":
        return this.sync(requester, request.query.since);
    }
    if (path === "/keys/device_signing/upload" && request.method === "POST") {
      return this.uploadSigningKeys(requester, body);
    }
    if (route.startsWith("PUT sendToDevice") && parts.length === 4) {
      return this.sendToDevice(requester, parts[2] as string, parts[3] as string, body);
    }
    if (route.startsWith("PUT devices") && parts.length === 3) {
      return this.putDevice(requester, parts[2] as string, body);
    }
    return unrecognized;
  }

  /** `m.login.application_service`: a device token for an appservice user (made or kept). */
  private login(request: RecordedRequest, body: Json): Answer {
    if (body.type !== "m.login.application_service") {
      return [400, { errcode: "M_UNKNOWN", error: "Unknown login type" }];
    }
    if (request.authorization !== `Bearer ${this.hs.asToken}`) {
      return [401, { errcode: "M_MISSING_TOKEN", error: "Missing access token." }];
    }
    const identifier = (body.identifier ?? {}) as Json;
    const user = String(identifier.user ?? body.user ?? "");
    const userId = user.startsWith("@") ? user : `@${user}:${this.hs.serverName}`;
    const actor = this.hs.appserviceActor({ ...request, query: { user_id: userId } });
    if (typeof actor !== "string") return actor;
    const deviceId =
      typeof body.device_id === "string" ? body.device_id : randomUUID().slice(0, 10).toUpperCase();
    this.ensureDevice(
      userId,
      deviceId,
      typeof body.initial_device_display_name === "string"
        ? body.initial_device_display_name
        : undefined,
    );
    const accessToken = `syt_${randomUUID()}`;
    this.tokens.set(accessToken, { userId, deviceId, issuedAt: Date.now() });
    return [
      200,
      {
        user_id: userId,
        access_token: accessToken,
        device_id: deviceId,
        home_server: this.hs.serverName,
      },
    ];
  }

  /** MSC4190: an appservice makes (201) or updates (200) a device of one of its users. */
  private putDevice(requester: Requester, deviceId: string, body: Json): Answer {
    const displayName = typeof body.display_name === "string" ? body.display_name : undefined;
    if (requester.via === "appservice" && this.msc4190Supported) {
      const { created } = this.ensureDevice(requester.userId, deviceId, displayName);
      return [created ? 201 : 200, {}];
    }
    const device = this.device(requester.userId, deviceId);
    if (!device) return [404, { errcode: "M_NOT_FOUND", error: "Unknown device" }];
    if (displayName !== undefined) device.displayName = displayName;
    return [200, {}];
  }

  private counts(device: DeviceRecord): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const keyId of device.oneTimeKeys.keys()) {
      const algorithm = keyId.split(":")[0] as string;
      counts[algorithm] = (counts[algorithm] ?? 0) + 1;
    }
    return counts;
  }

  private unusedFallbackTypes(device: DeviceRecord): string[] {
    return [...device.fallbackKeys].filter(([, key]) => !key.used).map(([algorithm]) => algorithm);
  }

  private uploadKeys(requester: Requester, body: Json): Answer {
    if (!requester.deviceId) {
      return [
        400,
        {
          errcode: "M_UNKNOWN",
          error: "To upload keys, you must pass device_id when authenticating",
        },
      ];
    }
    const { device } = this.ensureDevice(requester.userId, requester.deviceId);
    const deviceKeys = body.device_keys as Json | undefined;
    if (deviceKeys) {
      if (deviceKeys.user_id !== requester.userId || deviceKeys.device_id !== requester.deviceId) {
        return [
          400,
          { errcode: "M_INVALID_PARAM", error: "User ID or device ID does not match the device" },
        ];
      }
      if (JSON.stringify(device.keys) !== JSON.stringify(deviceKeys)) {
        device.keys = deviceKeys;
        this.changed(requester.userId);
      }
    }
    for (const [keyId, key] of Object.entries((body.one_time_keys ?? {}) as Json)) {
      if (!device.oneTimeKeys.has(keyId)) device.oneTimeKeys.set(keyId, key);
    }
    for (const [keyId, key] of Object.entries((body.fallback_keys ?? {}) as Json)) {
      const algorithm = keyId.split(":")[0] as string;
      device.fallbackKeys.set(algorithm, { keyId, key, used: false });
    }
    return [200, { one_time_key_counts: this.counts(device) }];
  }

  /** A key object with the signatures uploaded on it since, merged in. */
  private withSignatures(userId: string, keyId: string, key: Json): Json {
    const extra = this.extraSignatures.get(`${userId}\n${keyId}`);
    if (!extra) return key;
    const signatures: Signatures = structuredClone((key.signatures ?? {}) as Signatures);
    for (const [signer, bySigner] of Object.entries(extra)) {
      signatures[signer] = { ...signatures[signer], ...bySigner };
    }
    return { ...key, signatures };
  }

  private static publicKeyOf(key: Json | undefined): string | undefined {
    return Object.values((key?.keys ?? {}) as Record<string, string>)[0];
  }

  private queryKeys(requester: Requester, body: Json): Answer {
    const wanted = (body.device_keys ?? {}) as Record<string, string[]>;
    const device_keys: Record<string, Record<string, Json>> = {};
    const master_keys: Record<string, Json> = {};
    const self_signing_keys: Record<string, Json> = {};
    const user_signing_keys: Record<string, Json> = {};
    for (const [userId, deviceIds] of Object.entries(wanted)) {
      const devices: Record<string, Json> = {};
      for (const device of this.devices.get(userId)?.values() ?? []) {
        if (!device.keys || (deviceIds.length > 0 && !deviceIds.includes(device.deviceId))) {
          continue;
        }
        const keys = this.withSignatures(userId, device.deviceId, device.keys);
        devices[device.deviceId] = {
          ...keys,
          ...(device.displayName !== undefined && {
            unsigned: { device_display_name: device.displayName },
          }),
        };
      }
      device_keys[userId] = devices;
      const cross = this.crossSigning.get(userId);
      const master = cross?.master;
      if (master) {
        const masterId = HomeserverEncryption.publicKeyOf(master) as string;
        master_keys[userId] = this.withSignatures(userId, masterId, master);
      }
      if (cross?.selfSigning) self_signing_keys[userId] = cross.selfSigning;
      if (cross?.userSigning && userId === requester.userId) {
        user_signing_keys[userId] = cross.userSigning;
      }
    }
    return [200, { device_keys, master_keys, self_signing_keys, user_signing_keys, failures: {} }];
  }

  private claimKeys(body: Json): Answer {
    const wanted = (body.one_time_keys ?? {}) as Record<string, Record<string, string>>;
    const one_time_keys: Record<string, Record<string, Record<string, unknown>>> = {};
    for (const [userId, byDevice] of Object.entries(wanted)) {
      for (const [deviceId, algorithm] of Object.entries(byDevice)) {
        const device = this.device(userId, deviceId);
        if (!device) continue;
        let claimed: [string, unknown] | undefined;
        for (const [keyId, key] of device.oneTimeKeys) {
          if (keyId.startsWith(`${algorithm}:`)) {
            device.oneTimeKeys.delete(keyId);
            claimed = [keyId, key];
            break;
          }
        }
        const fallback = device.fallbackKeys.get(algorithm);
        if (!claimed && fallback) {
          fallback.used = true;
          claimed = [fallback.keyId, fallback.key];
        }
        if (!claimed) continue;
        one_time_keys[userId] ??= {};
        (one_time_keys[userId] as Record<string, Record<string, unknown>>)[deviceId] = {
          [claimed[0]]: claimed[1],
        };
      }
    }
    return [200, { one_time_keys, failures: {} }];
  }

  /**
   * Cross-signing keys: a first upload is accepted (MSC3967) with any token; a reset, or any
   * upload without MSC3967, needs interactive auth, skipped only for a device token issued within
   * `uiAuthSessionTimeoutMs`. The as_token cannot do interactive auth: 500, as Synapse answers.
   */
  private uploadSigningKeys(requester: Requester, body: Json): Answer {
    const existing = this.crossSigning.get(requester.userId);
    const needsAuth = existing?.master !== undefined || !this.crossSigningWithoutAuth;
    if (needsAuth) {
      const fresh =
        requester.via === "device" &&
        this.uiAuthSessionTimeoutMs !== undefined &&
        Date.now() - (requester.issuedAt ?? 0) < this.uiAuthSessionTimeoutMs;
      if (!fresh && requester.via === "appservice") {
        return [
          500,
          { errcode: "M_UNKNOWN", error: "Cannot validate a user without an access token" },
        ];
      }
      if (!fresh) {
        return [
          401,
          {
            session: randomUUID(),
            flows: [{ stages: ["m.login.password"] }],
            params: {},
          },
        ];
      }
    }
    const cross = existing ?? {};
    if (body.master_key) cross.master = body.master_key as Json;
    if (body.self_signing_key) cross.selfSigning = body.self_signing_key as Json;
    if (body.user_signing_key) cross.userSigning = body.user_signing_key as Json;
    this.crossSigning.set(requester.userId, cross);
    this.changed(requester.userId);
    return [200, {}];
  }

  private uploadSignatures(body: Json): Answer {
    for (const [userId, byKey] of Object.entries(body as Record<string, Record<string, Json>>)) {
      for (const [keyId, signed] of Object.entries(byKey)) {
        const key = `${userId}\n${keyId}`;
        const signatures = this.extraSignatures.get(key) ?? {};
        for (const [signer, bySigner] of Object.entries((signed.signatures ?? {}) as Signatures)) {
          signatures[signer] = { ...signatures[signer], ...bySigner };
        }
        this.extraSignatures.set(key, signatures);
      }
      this.changed(userId);
    }
    return [200, { failures: {} }];
  }

  private sendToDevice(requester: Requester, type: string, txnId: string, body: Json): Answer {
    const txnKey = `${requester.userId}\n${requester.deviceId ?? ""}\n${txnId}`;
    if (this.sentToDevice.has(txnKey)) return [200, {}];
    this.sentToDevice.add(txnKey);
    const messages = (body.messages ?? {}) as Record<string, Record<string, Json>>;
    for (const [userId, byDevice] of Object.entries(messages)) {
      for (const [target, content] of Object.entries(byDevice)) {
        const deviceIds = target === "*" ? [...(this.devices.get(userId)?.keys() ?? [])] : [target];
        for (const deviceId of deviceIds) {
          const delivery: ToDeviceDelivery = {
            type,
            sender: requester.userId,
            content,
            to_user_id: userId,
            to_device_id: deviceId,
          };
          if (this.hs.interestedIn(userId)) {
            this.forAppservice.push(delivery);
          } else {
            const inbox = `${userId}\n${deviceId}`;
            this.inboxes.set(inbox, [...(this.inboxes.get(inbox) ?? []), delivery]);
          }
        }
      }
    }
    return [200, {}];
  }

  /**
   * A minimal `/sync` for a person's device: its to-device messages (taken), the device-list
   * changes and room events since `since`, its key counts. `next_batch` is `events.changes`.
   */
  private sync(requester: Requester, since: string | undefined): Answer {
    if (!requester.deviceId) return [400, { errcode: "M_UNKNOWN", error: "No device" }];
    const [eventsSeen, changesSeen] = (since ?? "0.0").split(".").map(Number) as [number, number];
    const inbox = `${requester.userId}\n${requester.deviceId}`;
    const toDevice = this.inboxes.get(inbox) ?? [];
    this.inboxes.delete(inbox);
    const timeline = this.hs.timeline();
    const join: Record<string, { timeline: { events: Json[] } }> = {};
    for (const event of timeline.slice(eventsSeen)) {
      const roomId = event.room_id as string;
      join[roomId] ??= { timeline: { events: [] } };
      join[roomId].timeline.events.push(event);
    }
    const changed = [
      ...new Set(this.deviceListChanges.filter((c) => c.seq > changesSeen).map((c) => c.userId)),
    ];
    const device = this.device(requester.userId, requester.deviceId) as DeviceRecord;
    return [
      200,
      {
        next_batch: `${timeline.length}.${this.deviceListChanges.length}`,
        to_device: {
          events: toDevice.map(({ type, sender, content }) => ({ type, sender, content })),
        },
        device_lists: { changed, left: [] },
        device_one_time_keys_count: this.counts(device),
        device_unused_fallback_key_types: this.unusedFallbackTypes(device),
        rooms: { join },
      },
    ];
  }

  /**
   * The encryption part of the next transaction for the appservice, as Synapse builds it with
   * MSC2409 and MSC3202 on: the to-device messages for its users' devices and the device-list
   * changes since the last push (taken: a failed transaction loses them, as with Synapse), and the
   * one-time-key counts and unused fallback key types of every device of its users. Like Synapse,
   * the counts list each cross-signing public key of those users too, as if it were a device.
   */
  takeTransactionExtensions(): Json {
    const toDevice = this.forAppservice.splice(0);
    const changed = [...this.unpushedChanges];
    this.unpushedChanges.clear();
    const counts: Record<string, Record<string, Record<string, number>>> = {};
    const fallbacks: Record<string, Record<string, string[]>> = {};
    for (const [userId, devices] of this.devices) {
      if (!this.hs.interestedIn(userId)) continue;
      counts[userId] = {};
      fallbacks[userId] = {};
      for (const device of devices.values()) {
        counts[userId][device.deviceId] = this.counts(device);
        fallbacks[userId][device.deviceId] = this.unusedFallbackTypes(device);
      }
      const cross = this.crossSigning.get(userId);
      for (const key of [cross?.master, cross?.selfSigning, cross?.userSigning]) {
        const publicKey = HomeserverEncryption.publicKeyOf(key);
        if (publicKey) counts[userId][publicKey] = {};
      }
    }
    return {
      "de.sorunome.msc2409.to_device": toDevice,
      "org.matrix.msc3202.device_lists": { changed, left: [] },
      "org.matrix.msc3202.device_one_time_keys_count": counts,
      "org.matrix.msc3202.device_unused_fallback_key_types": fallbacks,
    };
  }

  /** A transaction ID for the next push. */
  nextTransactionId() {
    this.pushCounter++;
    return `crypto-${this.pushCounter}-${randomUUID().slice(0, 8)}`;
  }
}
