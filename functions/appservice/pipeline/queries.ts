import { BudgetExhausted, callBefore } from "../../matrix/bounded-call.ts";
import {
  type ClientServerRequest,
  type HomeserverClient,
  matrixError,
} from "../../matrix/request.ts";
import { createRoomRequest, profileRequest, registerRequest } from "../../matrix/requests.ts";
import type { Log } from "../../shared/log.ts";
import { claimKeys } from "../../store/claim-keys.ts";
import type { IntentMemory } from "../../store/intent-memory.ts";
import { type ClaimStore, holdsClaim } from "../../store/store.ts";
import type { ApplicationQueries } from "../application.ts";
import type { createNamespaceMatcher } from "../protocol/namespaces.ts";

export interface QueryDeps {
  application: ApplicationQueries;
  namespaces: ReturnType<typeof createNamespaceMatcher>;
  homeserver: HomeserverClient;
  /** The Intent's memory (`matrix/intent.ts`): the users registered here are remembered there. */
  intentMemory: IntentMemory;
  claims: ClaimStore;
  botUserId: string;
  log: Log;
  /** How long a query may spend on the homeserver before it answers 404. */
  budgetMs: number;
  /** Who is asking (the request ID): the owner of the creation claim. */
  owner: string;
}

const POLL_MS = 200;

class CreationFailed extends Error {
  override name = "CreationFailed";
}

/**
 * Runs `create` once however many queries for `key` arrive together: the first claims it, the
 * others wait (within the budget) until it is done. True once the thing exists.
 */
async function createOnce(
  key: string,
  deps: QueryDeps,
  create: (
    call: (userId: string, request: ClientServerRequest) => ReturnType<typeof callBefore>,
  ) => Promise<void>,
): Promise<boolean> {
  const deadline = Date.now() + deps.budgetMs;
  const call = (userId: string, request: ClientServerRequest) =>
    callBefore(deadline, deps.homeserver, userId, request);
  for (;;) {
    const outcome = (await deps.claims.claim([key], deps.owner, deps.budgetMs + 5000)).get(key);
    if (outcome === "done") return true;
    if (holdsClaim(outcome)) break;
    if (Date.now() + POLL_MS > deadline) {
      deps.log.warn("query gave up waiting for a concurrent creation", { key });
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  try {
    await create(call);
    await deps.claims.complete(key);
    return true;
  } catch (error) {
    await deps.claims.release(key, deps.owner);
    if (!(error instanceof BudgetExhausted || error instanceof CreationFailed)) throw error;
    deps.log.warn("query answered 404: the homeserver did not let us create it", {
      key,
      reason: error.message,
    });
    return false;
  }
}

const expectOk = async (
  response: ReturnType<typeof callBefore>,
  what: string,
  tolerated?: string,
) => {
  const { status, body } = await response;
  if (status >= 200 && status < 300) return;
  const { errcode, error } = matrixError(body);
  if (tolerated && errcode === tolerated) return;
  throw new CreationFailed(`${what}: ${status} ${errcode ?? ""} ${error ?? ""}`.trim());
};

/**
 * `GET /users/{userId}`: a user of our namespace the application wants is registered (an
 * existing one, `M_USER_IN_USE`, counts) and given its profile before we answer yes.
 */
export async function queryUser(userId: string, deps: QueryDeps): Promise<boolean> {
  if (!deps.namespaces.matches("users", userId)) return false;
  const profile = await deps.application.onUserQuery?.(userId, { log: deps.log });
  if (!profile) return false;
  return createOnce(claimKeys.userQuery(userId), deps, async (call) => {
    await expectOk(call(deps.botUserId, registerRequest(userId)), "register", "M_USER_IN_USE");
    await deps.intentMemory.markRegistered(userId);
    if (profile.displayName !== undefined) {
      await expectOk(
        call(userId, profileRequest(userId, "displayname", profile.displayName)),
        "display name",
      );
    }
    if (profile.avatarUrl !== undefined) {
      await expectOk(
        call(userId, profileRequest(userId, "avatar_url", profile.avatarUrl)),
        "avatar",
      );
    }
  });
}

/** `GET /rooms/{roomAlias}`: the room the application describes is created under the alias. */
export async function queryAlias(alias: string, deps: QueryDeps): Promise<boolean> {
  if (!deps.namespaces.matches("aliases", alias)) return false;
  const room = await deps.application.onAliasQuery?.(alias, { log: deps.log });
  if (!room) return false;
  const localpart = alias.slice(1, alias.indexOf(":"));
  return createOnce(claimKeys.aliasQuery(alias), deps, async (call) => {
    // M_ROOM_IN_USE: the alias exists already, which is what the homeserver asked for.
    await expectOk(
      call(deps.botUserId, createRoomRequest({ ...room, alias: localpart })),
      "createRoom",
      "M_ROOM_IN_USE",
    );
  });
}
