import { randomUUID } from "node:crypto";
import { sha256 } from "../shared/hash.ts";
import type { Log } from "../shared/log.ts";
import type { AppDataStore } from "../store/app-data.ts";
import type { IntentMemory } from "../store/intent-memory.ts";
import type { As } from "./actions.ts";
import { BudgetExhausted, callBefore } from "./bounded-call.ts";
import { type BridgeInfo, bridgeState } from "./bridge-info.ts";
import { creatorsHaveInfinitePower, creatorsOf, withoutCreators } from "./creators.ts";
import { Intent, isForbidden } from "./intent.ts";
import {
  type DownloadedMedia,
  type MediaContent,
  MediaRepository,
  type UploadOptions,
} from "./media.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  type HomeserverClient,
  HomeserverRefused,
  matrixError,
} from "./request.ts";
import {
  type CreateRoomFields,
  capabilitiesRequest,
  createRoomRequest,
  eventRequest,
  joinedMembersRequest,
  readProfileRequest,
  resolveAliasRequest,
  roomStateRequest,
  stateRequest,
} from "./requests.ts";
import { type HomeserverReader, HttpHomeserverReader } from "./room-state.ts";

/** A room to create once under a key of the application's (`HomeserverCalls.createRoom`). */
export interface RoomOptions extends As, Omit<CreateRoomFields, "alias"> {
  /**
   * The room's alias localpart (`_relay_general` for `#_relay_general:server`), in the
   * registration's alias namespaces. Derived from the key when absent. Either way it is what
   * makes the creation happen once: a repeat is told the alias is taken, and resolves it.
   */
  alias?: string;
  /** The room's avatar, an `mxc://` URI (initial `m.room.avatar` state). */
  avatarUrl?: string;
  /** Makes the room a portal clients recognise: `m.bridge` state (MSC2346), with the bot as `bridgebot`. */
  bridge?: BridgeInfo;
}

/** A direct-message room: the other user is invited, with `is_direct`. */
export interface DirectRoomOptions extends As {
  name?: string;
  initialState?: CreateRoomFields["initialState"];
}

/** A user as a room or the global profile shows them. */
export interface MemberProfile {
  displayName?: string;
  /** An `mxc://` URI. */
  avatarUrl?: string;
}

/** A virtual user made ready to act (`HomeserverCalls.ensurePuppet`). */
export interface PuppetOptions {
  /** Global profile: set when it differs from what was last set. */
  displayName?: string;
  avatarUrl?: string;
  /** A room to join now (the bot invites it where it must). */
  roomId?: string;
  /**
   * How the puppet looks in `roomId` alone (its `m.room.member` content), as bridges show one
   * remote user differently per channel. A later change of the global profile overwrites it:
   * the homeserver updates every room's member event.
   */
  roomProfile?: MemberProfile;
}

/** An event as the homeserver gives it (`GET /rooms/{roomId}/event/{eventId}`). */
export interface RoomEvent {
  event_id: string;
  room_id: string;
  type: string;
  sender: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  state_key?: string;
  unsigned?: Record<string, unknown>;
}

/**
 * Calls whose answer a handler needs before it goes on, made at once rather than queued: each
 * retries 429s (their own wait), 5xx and network failures within a bounded budget, then throws
 * (`BudgetExhausted`), and so does a refusal (`HomeserverRefused`, `MediaTooLarge`): the item
 * is retried later like any failure. Those that create something do it once per key, however
 * often they are repeated, concurrently or after a crash. Everything else goes through the
 * queued `Actions`.
 */
export interface HomeserverCalls extends HomeserverReader {
  /**
   * The room created under `key` (the remote channel's ID, say): made on the first call, as the
   * bot or `options.as`; every later call, and any that raced it, returns the same room ID.
   */
  createRoom(key: string, options?: RoomOptions): Promise<string>;
  /** The direct-message room of `options.as` (the bot by default) with `userId`, made once. */
  directRoom(userId: string, options?: DirectRoomOptions): Promise<string>;
  /**
   * Uploads media and returns its `mxc://` URI; the same bytes always give the same URI (their
   * SHA-256 is recorded). Over the homeserver's `m.upload.size`: `MediaTooLarge`, unsent.
   */
  uploadMedia(content: MediaContent, options: UploadOptions): Promise<string>;
  /** An `mxc://` URI's bytes, at most `maxBytes` (`MediaTooLarge` past them); undefined if none. */
  downloadMedia(
    mxcUri: string,
    options?: { maxBytes?: number },
  ): Promise<DownloadedMedia | undefined>;
  /** The room an alias names; undefined when none does. */
  resolveAlias(alias: string): Promise<string | undefined>;
  /** The room's joined members with their names and avatars in it (the bot must be in it). */
  joinedMembers(roomId: string, options?: As): Promise<Record<string, MemberProfile>>;
  /** One event; undefined when the homeserver has none by that ID (or may not show it). */
  event(roomId: string, eventId: string, options?: As): Promise<RoomEvent | undefined>;
  /** A user's global profile; undefined when the user has none. */
  profile(userId: string): Promise<MemberProfile | undefined>;
  /**
   * Registers a virtual user (`M_USER_IN_USE` counts), gives it its profile, lets it into a room
   * (the bot invites it, then it joins) and only then sets its look there, now. What was done is
   * remembered with the outbox's memory (the Intent's), so calling it before every message costs
   * two reads, and nothing the outbox did is done again.
   */
  ensurePuppet(userId: string, options?: PuppetOptions): Promise<void>;
  /**
   * Sets `userId`'s power level in the room (read-modify-write of `m.room.power_levels`, as the
   * bot or `options.as`), again if a concurrent change overwrote it.
   */
  setPowerLevel(roomId: string, userId: string, level: number, options?: As): Promise<void>;
}

/** How long one immediate call may take, retries included. */
export const CALL_BUDGET_MS = 10_000;
/** How long one request of an immediate call waits for its answer. */
export const CALL_TIMEOUT_MS = 10_000;

export interface HomeserverCallsDeps {
  homeserver: HomeserverClient;
  botUserId: string;
  /** What the calls remember (rooms by key, media by hash), apart from the app's data. */
  records: AppDataStore;
  /** The users registered and the rooms joined (the Intent's), shared with the outbox. */
  intentMemory: IntentMemory;
  /** Whether the registration's alias namespaces hold an alias (`#localpart:server`). */
  ownsAlias: (alias: string) => boolean;
  /** The localpart prefix of the aliases derived from keys; none: `createRoom` needs `alias`. */
  derivedAliasPrefix: string | undefined;
  log: Log;
  budgetMs?: number;
  /** How long a creation claim holds. @default CLAIM_LEASE_MS */
  claimLeaseMs?: number;
}

/** The collections of `records`: their names and value shapes must not change. */
const RECORDS = {
  /** sha256(key) → `{key, alias, roomId}`, or a claim `{key, alias, owner, until}`, or `{key, alias}`. */
  rooms: "rooms",
  /** Direct-message rooms, keyed by `actor\nuser`, as `rooms`. */
  direct: "direct",
  // `puppets` and `members` were the puppets' registrations, profiles and rooms: the Intent's
  // memory keeps them now, with the outbox's. Their old items are no longer read.
} as const;

const POLL_MS = 200;
/**
 * How long a creation claim holds: past the worst creation (a budget's retries, then up to four
 * requests that each wait their whole timeout), so that no second caller starts while the first
 * may still be creating.
 */
export const CLAIM_LEASE_MS = CALL_BUDGET_MS + 4 * CALL_TIMEOUT_MS;
/** How many times `setPowerLevel` writes when concurrent changes keep overwriting its own. */
const POWER_LEVEL_WRITES = 4;

const ok = (response: ClientServerResponse) => response.status >= 200 && response.status < 300;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class HttpHomeserverCalls extends HttpHomeserverReader implements HomeserverCalls {
  private readonly serverName: string;
  private readonly media: MediaRepository;

  constructor(private readonly deps: HomeserverCallsDeps) {
    super(deps.homeserver, deps.botUserId, deps.budgetMs ?? CALL_BUDGET_MS);
    this.serverName = deps.botUserId.slice(deps.botUserId.indexOf(":") + 1);
    this.media = new MediaRepository(deps.homeserver, deps.botUserId, deps.records);
  }

  /** The Intent for calls within `deadline`. */
  private intent(deadline: number) {
    const { intentMemory: memory, botUserId, log } = this.deps;
    return new Intent({ memory, botUserId, log }, (userId, request) =>
      callBefore(deadline, this.homeserver, userId, request),
    );
  }

  /**
   * One call within `deadline`; refused (403) for a virtual user the Intent does not remember
   * registering, it is registered and the call made again.
   */
  private async call(
    deadline: number,
    userId: string,
    request: ClientServerRequest,
  ): Promise<ClientServerResponse> {
    const response = await callBefore(deadline, this.homeserver, userId, request);
    if (!isForbidden(response)) return response;
    const { registration } = await this.intent(deadline).ensureUser(userId);
    if (registration === "remembered") return response;
    return callBefore(deadline, this.homeserver, userId, request);
  }

  private async expectOk(
    deadline: number,
    userId: string,
    request: ClientServerRequest,
    what: string,
  ) {
    const response = await this.call(deadline, userId, request);
    if (!ok(response)) throw new HomeserverRefused(what, response.status, response.body);
    return response.body as Record<string, unknown>;
  }

  private deadline() {
    return Date.now() + this.budgetMs;
  }

  createRoom(key: string, options: RoomOptions = {}): Promise<string> {
    return this.createOnce(RECORDS.rooms, key, options);
  }

  directRoom(userId: string, options: DirectRoomOptions = {}): Promise<string> {
    const actor = options.as ?? this.botUserId;
    return this.createOnce(RECORDS.direct, `${actor}\n${userId}`, {
      ...options,
      invite: [userId],
      isDirect: true,
      preset: "trusted_private_chat",
    });
  }

  /**
   * Creates the room under `collection`/`key` once: a claim in the records lets one caller at a
   * time create it; the alias in the request makes a repeat after a crash (the room made, not
   * recorded) answer `M_ROOM_IN_USE`, and the alias then names the room made.
   */
  private async createOnce(collection: string, key: string, options: RoomOptions) {
    const recordKey = sha256(key);
    const alias = options.alias ?? this.derivedAlias(collection, key);
    const fullAlias = `#${alias}:${this.serverName}`;
    if (!this.deps.ownsAlias(fullAlias)) {
      throw new HomeserverRefused(
        `creating the room for ${JSON.stringify(key)}: ${fullAlias} is outside the registration's alias namespaces`,
        400,
        { errcode: "M_EXCLUSIVE" },
      );
    }
    const deadline = this.deadline();
    const owner = randomUUID();
    const claim = {
      key,
      alias,
      owner,
      until: Date.now() + (this.deps.claimLeaseMs ?? CLAIM_LEASE_MS),
    };
    for (;;) {
      const record = await this.deps.records.get(collection, recordKey);
      if (typeof record?.roomId === "string") return record.roomId;
      const free = !record || typeof record.until !== "number" || record.until < Date.now();
      if (
        free &&
        (await this.deps.records.write([
          {
            collection,
            key: recordKey,
            value: claim,
            ...(record ? { ifEquals: record } : { ifAbsent: true }),
          },
        ]))
      ) {
        break;
      }
      if (!free) {
        // Another caller is creating it (or crashed doing so): wait for it, or for its lease.
        if (Date.now() + POLL_MS > deadline) {
          throw new BudgetExhausted(
            `another handler is creating the room for ${JSON.stringify(key)} (claimed until ${new Date(record.until as number).toISOString()})`,
          );
        }
        await sleep(POLL_MS);
      }
    }
    try {
      const roomId = await this.createOrResolve(deadline, alias, fullAlias, options);
      await this.deps.records.write([
        { collection, key: recordKey, value: { key, alias, roomId } },
      ]);
      this.deps.log.info("created a room under a key", { key, roomId, alias: fullAlias });
      return roomId;
    } catch (error) {
      // Free at once for a retry, unless the lease was taken over meanwhile.
      await this.deps.records
        .write([{ collection, key: recordKey, value: { key, alias }, ifEquals: claim }])
        .catch(() => undefined);
      throw error;
    }
  }

  private async createOrResolve(
    deadline: number,
    alias: string,
    fullAlias: string,
    options: RoomOptions,
  ): Promise<string> {
    const { as, avatarUrl, initialState, bridge, powerLevels, ...fields } = options;
    const actor = as ?? this.botUserId;
    const state = [
      ...(avatarUrl !== undefined
        ? [{ type: "m.room.avatar", state_key: "", content: { url: avatarUrl } }]
        : []),
      ...(bridge ? bridgeState(bridge, this.botUserId) : []),
      ...(initialState ?? []),
    ];
    const request = createRoomRequest({
      ...fields,
      alias,
      ...(powerLevels && {
        powerLevels: await this.powerLevelsFor(deadline, actor, powerLevels, options),
      }),
      ...(state.length > 0 && { initialState: state }),
    });
    const response = await this.call(deadline, actor, request);
    if (ok(response)) return (response.body as { room_id: string }).room_id;
    if (matrixError(response.body).errcode === "M_ROOM_IN_USE") {
      const roomId = await this.resolveAliasBefore(deadline, fullAlias);
      if (roomId) return roomId;
    }
    throw new HomeserverRefused(`creating the room ${fullAlias}`, response.status, response.body);
  }

  /**
   * The power levels to ask for: in a room version whose creators have infinite power, without
   * the creators (the actor, `additionalCreators`, a trusted private chat's invitees), whom the
   * homeserver would refuse there.
   */
  private async powerLevelsFor(
    deadline: number,
    actor: string,
    powerLevels: Record<string, unknown>,
    { roomVersion, additionalCreators, preset, invite }: RoomOptions,
  ) {
    if (powerLevels.users === undefined) return powerLevels;
    const version = roomVersion ?? (await this.defaultRoomVersion(deadline, actor));
    if (version === undefined || !creatorsHaveInfinitePower(version)) return powerLevels;
    const invitees = preset === "trusted_private_chat" ? (invite ?? []) : [];
    return withoutCreators(powerLevels, [actor, ...(additionalCreators ?? []), ...invitees]);
  }

  /** The version of the homeserver's new rooms (`m.room_versions`), asked once per instance. */
  private defaultVersion: Promise<string | undefined> | undefined;
  private defaultRoomVersion(deadline: number, actor: string) {
    this.defaultVersion ??= this.expectOk(
      deadline,
      actor,
      capabilitiesRequest(),
      "reading the homeserver's capabilities",
    ).then(
      (body) =>
        (body.capabilities as { "m.room_versions"?: { default?: string } } | undefined)?.[
          "m.room_versions"
        ]?.default,
      (error: unknown) => {
        this.defaultVersion = undefined;
        throw error;
      },
    );
    return this.defaultVersion;
  }

  /** `<prefix><hash of the key>`: in the namespace, the same for every repeat of the key. */
  private derivedAlias(collection: string, key: string) {
    if (this.deps.derivedAliasPrefix === undefined) {
      throw new Error(
        "createRoom needs options.alias: no alias namespace of the registration is a prefix to derive one from (such as #_as_.*:server)",
      );
    }
    return `${this.deps.derivedAliasPrefix}${collection}_${sha256(`${collection}\n${key}`).slice(0, 32)}`;
  }

  uploadMedia(content: MediaContent, options: UploadOptions): Promise<string> {
    return this.media.upload(this.deadline(), content, options);
  }

  downloadMedia(mxcUri: string, options: { maxBytes?: number } = {}) {
    return this.media.download(this.deadline(), mxcUri, options.maxBytes);
  }

  private async resolveAliasBefore(deadline: number, alias: string) {
    const response = await this.call(deadline, this.botUserId, resolveAliasRequest(alias));
    if (response.status === 404) return undefined;
    if (!ok(response))
      throw new HomeserverRefused(`resolving ${alias}`, response.status, response.body);
    return (response.body as { room_id: string }).room_id;
  }

  resolveAlias(alias: string): Promise<string | undefined> {
    return this.resolveAliasBefore(this.deadline(), alias);
  }

  async joinedMembers(roomId: string, options: As = {}) {
    const body = await this.expectOk(
      this.deadline(),
      options.as ?? this.botUserId,
      joinedMembersRequest(roomId),
      `reading the members of ${roomId}`,
    );
    const joined = (body.joined ?? {}) as Record<
      string,
      { display_name?: string; avatar_url?: string }
    >;
    return Object.fromEntries(
      Object.entries(joined).map(([userId, member]) => [
        userId,
        {
          ...(typeof member.display_name === "string" && { displayName: member.display_name }),
          ...(typeof member.avatar_url === "string" && { avatarUrl: member.avatar_url }),
        },
      ]),
    );
  }

  async event(roomId: string, eventId: string, options: As = {}) {
    const response = await this.call(
      this.deadline(),
      options.as ?? this.botUserId,
      eventRequest(roomId, eventId),
    );
    if (response.status === 404) return undefined;
    if (!ok(response)) {
      throw new HomeserverRefused(
        `reading ${eventId} in ${roomId}`,
        response.status,
        response.body,
      );
    }
    return response.body as RoomEvent;
  }

  async profile(userId: string) {
    const response = await this.call(this.deadline(), this.botUserId, readProfileRequest(userId));
    if (response.status === 404) return undefined;
    if (!ok(response)) {
      throw new HomeserverRefused(
        `reading the profile of ${userId}`,
        response.status,
        response.body,
      );
    }
    const { displayname, avatar_url } = response.body as Record<string, unknown>;
    return {
      ...(typeof displayname === "string" && { displayName: displayname }),
      ...(typeof avatar_url === "string" && { avatarUrl: avatar_url }),
    };
  }

  async ensurePuppet(userId: string, options: PuppetOptions = {}) {
    const { displayName, avatarUrl, roomId, roomProfile } = options;
    const intent = this.intent(this.deadline());
    // The fields left undefined are not set.
    const wanted = { displayname: displayName, avatar_url: avatarUrl };
    const { profile } = await intent.ensureUser(userId, wanted);
    if (!roomId) return;
    const last = await intent.ensureJoined(userId, roomId);
    if (roomProfile) {
      const look = {
        ...(roomProfile.displayName !== undefined && { displayname: roomProfile.displayName }),
        ...(roomProfile.avatarUrl !== undefined && { avatar_url: roomProfile.avatarUrl }),
      };
      await intent.ensureLook(userId, roomId, look, { last, profile });
    }
  }

  async setPowerLevel(roomId: string, userId: string, level: number, options: As = {}) {
    if (!Number.isSafeInteger(level))
      throw new RangeError(`A power level is an integer, not ${level}`);
    const deadline = this.deadline();
    const actor = options.as ?? this.botUserId;
    const read = () =>
      this.expectOk(
        deadline,
        actor,
        roomStateRequest(roomId, "m.room.power_levels", ""),
        `reading the power levels of ${roomId}`,
      );
    const create = (await this.expectOk(
      deadline,
      actor,
      roomStateRequest(roomId, "m.room.create", "", "event"),
      `reading the creation of ${roomId}`,
    )) as { sender: string; content: Record<string, unknown> };
    const version = create.content.room_version;
    // A creator's power is infinite there, and a power level event naming one is refused.
    if (
      creatorsHaveInfinitePower(typeof version === "string" ? version : "1") &&
      creatorsOf(create).includes(userId)
    ) {
      return;
    }
    let levels = await read();
    for (let write = 0; ; write++) {
      const users = (levels.users ?? {}) as Record<string, unknown>;
      if (users[userId] === level) return;
      if (write === POWER_LEVEL_WRITES) {
        throw new BudgetExhausted(`the power levels of ${roomId} kept changing under ours`);
      }
      await this.expectOk(
        deadline,
        actor,
        stateRequest(roomId, "m.room.power_levels", "", {
          ...levels,
          users: { ...users, [userId]: level },
        }),
        `setting ${userId}'s power level in ${roomId}`,
      );
      // A writer that read before our change and wrote after it undid it: then again.
      levels = await read();
    }
  }
}
