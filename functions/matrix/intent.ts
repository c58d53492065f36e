import type { Log } from "../shared/log.ts";
import type { IntentMemory, ProfileFields } from "../store/intent-memory.ts";
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
 */
export class Intent {
  constructor(
    private readonly deps: IntentDeps,
    private readonly call: Call,
  ) {}

  /**
   * Registers a virtual user the memory does not know (the bot is never registered), then sets
   * the fields of `wanted` that differ from those last set (as the user itself). Returns how the
   * registration went and the global profile as it now stands: one read of the memory for both.
   */
  async ensureUser(
    userId: string,
    wanted: ProfileFields = {},
  ): Promise<{ registration: Registration; profile: ProfileFields }> {
    const { botUserId, memory, log } = this.deps;
    const known = await memory.user(userId);
    let registration: Registration = "remembered";
    if (userId !== botUserId && !known.registered) {
      const response = await this.call(botUserId, registerRequest(userId));
      const inUse = matrixError(response.body).errcode === "M_USER_IN_USE";
      if (!ok(response) && !inUse) {
        throw new HomeserverRefused(`registering ${userId}`, response.status, response.body);
      }
      await memory.markRegistered(userId);
      log.info("registered a virtual user", { userId });
      registration = inUse ? "in use" : "created";
    }
    const profile = { ...known.profile };
    for (const field of PROFILE_FIELDS) {
      const value = wanted[field];
      if (value === undefined || profile[field] === value) continue;
      await this.expectOk(
        userId,
        profileRequest(userId, field, value),
        `setting ${field} of ${userId}`,
      );
      profile[field] = value;
    }
    if (!same(profile, known.profile)) await memory.markProfileSet(userId, profile);
    return { registration, profile };
  }

  /**
   * Joins a user (registered: `ensureUser` first) to the room unless the memory says it is in
   * (or `force`: a 403 said it is not). A virtual user is invited by the bot before it joins: a
   * room that needs an invite would deny the join (Synapse logs each such denial), and one that
   * needs none, or a user already in, makes the invite's refusal harmless; the join's answer
   * decides. The bot is not invited by itself. Returns its look in the room as last set.
   */
  async ensureJoined(userId: string, roomId: string, force = false): Promise<ProfileFields> {
    const { botUserId, memory, log } = this.deps;
    const last = force ? undefined : await memory.member(roomId, userId);
    if (last) return last;
    if (userId !== botUserId) await this.call(botUserId, inviteRequest(roomId, userId));
    await this.expectOk(userId, joinRequest(roomId), `joining ${userId} to ${roomId}`);
    // A join writes the global profile into the room: no look of its own there any more.
    await memory.markJoined(roomId, userId, {});
    log.info("joined a room to act in it", { userId, roomId });
    return {};
  }

  /**
   * Sets the user's look in the room (its `m.room.member` content: `look` over its global
   * `profile`) unless it is `last`, the one last set (`ensureJoined` first). Refused (403) for a
   * user the memory says is in, it is let in again and the look set again.
   */
  async ensureLook(
    userId: string,
    roomId: string,
    look: ProfileFields,
    { last, profile }: { last: ProfileFields; profile: ProfileFields },
  ): Promise<void> {
    if (same(last, look)) return;
    const request = stateRequest(roomId, "m.room.member", userId, {
      membership: "join",
      ...profile,
      ...look,
    });
    let response = await this.call(userId, request);
    if (isForbidden(response)) {
      await this.ensureJoined(userId, roomId, true);
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
  }

  private async expectOk(userId: string, request: ClientServerRequest, what: string) {
    const response = await this.call(userId, request);
    if (!ok(response)) throw new HomeserverRefused(what, response.status, response.body);
  }
}
