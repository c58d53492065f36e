import type { Log } from "../shared/log.ts";
import type { IntentMemory, ProfileFields, UserMemory } from "../store/intent-memory.ts";
import {
  type ClientServerRequest,
  type ClientServerResponse,
  HomeserverRefused,
  matrixError,
} from "./request.ts";
import {
  inviteRequest,
  joinRequest,
  PROFILE_FIELDS,
  profileRequest,
  registerRequest,
  stateRequest,
} from "./requests.ts";

/**
 * One call on the homeserver as its caller makes it: the outbox's (a transient failure throws
 * its retry) or an immediate call's (retried within its budget). Any answer it returns is final.
 */
export type Call = (userId: string, request: ClientServerRequest) => Promise<ClientServerResponse>;

export interface IntentDeps {
  memory: IntentMemory;
  /** Never registered; the one who invites the others. */
  botUserId: string;
  log: Log;
}

/** How `ensureRegistered` found the user: remembered, made now, or made before (`M_USER_IN_USE`). */
export type Registration = "remembered" | "created" | "in use";

const ok = (response: ClientServerResponse) => response.status >= 200 && response.status < 300;
export const isForbidden = (response: ClientServerResponse) =>
  response.status === 403 && matrixError(response.body).errcode === "M_FORBIDDEN";
const same = (a: ProfileFields, b: ProfileFields) =>
  PROFILE_FIELDS.every((field) => a[field] === b[field]);

/**
 * Makes a user ready to act, as mautrix's IntentAPI does, for every caller (the outbox, the
 * immediate calls) over one memory: registered once (`M_USER_IN_USE` counts), profile set when it
 * differs from what was last set, joined to a room once, and only then its look in that room. A
 * virtual user is let in by the bot before it joins: registered, invited, joined, then its member
 * state. What the homeserver refuses for good throws `HomeserverRefused`; what `call` throws
 * (its retries) goes through.
 *
 * One per operation: it keeps what it read of the memory for the operation's length.
 */
export class Intent {
  private readonly users = new Map<string, Promise<UserMemory>>();
  private readonly members = new Map<string, Promise<ProfileFields | undefined>>();

  constructor(
    private readonly deps: IntentDeps,
    private readonly call: Call,
  ) {}

  private user(userId: string): Promise<UserMemory> {
    let known = this.users.get(userId);
    if (!known) {
      known = this.deps.memory.user(userId);
      this.users.set(userId, known);
      // A failed read is not kept: the next asks again.
      known.catch(() => this.users.delete(userId));
    }
    return known;
  }

  private member(roomId: string, userId: string): Promise<ProfileFields | undefined> {
    const key = `${roomId}\n${userId}`;
    let known = this.members.get(key);
    if (!known) {
      known = this.deps.memory.member(roomId, userId);
      this.members.set(key, known);
      known.catch(() => this.members.delete(key));
    }
    return known;
  }

  /** Registers a virtual user the memory does not know (the bot is never registered). */
  async ensureRegistered(userId: string): Promise<Registration> {
    const { botUserId, memory, log } = this.deps;
    if (userId === botUserId) return "remembered";
    const known = await this.user(userId);
    if (known.registered) return "remembered";
    const response = await this.call(botUserId, registerRequest(userId));
    const inUse = matrixError(response.body).errcode === "M_USER_IN_USE";
    if (!ok(response) && !inUse) {
      throw new HomeserverRefused(`registering ${userId}`, response.status, response.body);
    }
    await memory.markRegistered(userId);
    this.users.set(userId, Promise.resolve({ ...known, registered: true }));
    log.info("registered a virtual user", { userId, ...(inUse && { inUse }) });
    return inUse ? "in use" : "created";
  }

  /**
   * Sets the fields of `wanted` that differ from those last set (as the user itself), and returns
   * the global profile as it now stands.
   */
  async ensureProfile(userId: string, wanted: ProfileFields): Promise<ProfileFields> {
    const known = await this.user(userId);
    const profile = { ...known.profile };
    for (const field of PROFILE_FIELDS) {
      const value = wanted[field];
      if (value === undefined || profile[field] === value) continue;
      const response = await this.call(userId, profileRequest(userId, field, value));
      if (!ok(response)) {
        throw new HomeserverRefused(
          `setting ${field} of ${userId}`,
          response.status,
          response.body,
        );
      }
      profile[field] = value;
    }
    if (!same(profile, known.profile)) {
      await this.deps.memory.markProfileSet(userId, profile);
      this.users.set(userId, Promise.resolve({ ...known, profile }));
    }
    return profile;
  }

  /**
   * Joins the user to the room unless the memory says it is in (or `force`: a 403 said it is
   * not). A virtual user is registered first, then invited by the bot before it joins: a room
   * that needs an invite would deny the join (Synapse logs each such denial), and one that needs
   * none, or a user already in, makes the invite's refusal harmless; the join's answer decides.
   * The bot is not invited by itself.
   */
  async ensureJoined(userId: string, roomId: string, { force = false } = {}): Promise<void> {
    const { botUserId, memory, log } = this.deps;
    if (!force && (await this.member(roomId, userId)) !== undefined) return;
    await this.ensureRegistered(userId);
    if (userId !== botUserId) await this.call(botUserId, inviteRequest(roomId, userId));
    const joined = await this.call(userId, joinRequest(roomId));
    if (!ok(joined)) {
      throw new HomeserverRefused(`joining ${userId} to ${roomId}`, joined.status, joined.body);
    }
    // A join writes the global profile into the room: no look of its own there any more.
    await memory.markJoined(roomId, userId, {});
    this.members.set(`${roomId}\n${userId}`, Promise.resolve({}));
    log.info("joined a room to act in it", { userId, roomId });
  }

  /**
   * Sets the user's look in the room (its `m.room.member` content: `look` over its global
   * profile) unless it is the one last set. The user is joined first if the memory does not say
   * it is in; if the homeserver says it is not (403), it is joined again and the look set again.
   */
  async ensureLook(userId: string, roomId: string, look: ProfileFields): Promise<void> {
    await this.ensureJoined(userId, roomId);
    const last = await this.member(roomId, userId);
    if (last && same(last, look)) return;
    const { profile } = await this.user(userId);
    const request = stateRequest(roomId, "m.room.member", userId, {
      membership: "join",
      ...profile,
      ...look,
    });
    let response = await this.call(userId, request);
    if (isForbidden(response)) {
      await this.ensureJoined(userId, roomId, { force: true });
      response = await this.call(userId, request);
    }
    if (!ok(response)) {
      throw new HomeserverRefused(
        `setting ${userId}'s look in ${roomId}`,
        response.status,
        response.body,
      );
    }
    await this.deps.memory.markJoined(roomId, userId, look);
    this.members.set(`${roomId}\n${userId}`, Promise.resolve(look));
  }
}
