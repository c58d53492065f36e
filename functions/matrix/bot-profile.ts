import type { Log } from "../shared/log.ts";
import type { IntentMemory, ProfileFields } from "../store/intent-memory.ts";
import { type ClientServerRequest, type ClientServerResponse, matrixError } from "./request.ts";
import { PROFILE_FIELDS, profileRequest } from "./requests.ts";

/** The bot's profile as configured: `BOT_DISPLAY_NAME`/`BOT_AVATAR_URL`, or cdk.json's context. */
export type BotProfile = { displayname: string; avatar_url?: string };

/** The configured profile, checked (its display name defaults to the registration's `id`). */
export function botProfile(displayName: string, avatarUrl?: string): BotProfile {
  if (!displayName) throw new Error("The bot's display name must not be empty");
  if (avatarUrl && !avatarUrl.startsWith("mxc://")) {
    throw new Error(`The bot's avatar must be an mxc:// URI, not ${avatarUrl}`);
  }
  return { displayname: displayName, ...(avatarUrl && { avatar_url: avatarUrl }) };
}

/**
 * Gives the bot its configured profile before its first action: the fields that differ from
 * those last set (remembered in DynamoDB, so a restart or another instance sets nothing again)
 * are set once per process, and again whenever the configuration changes them.
 */
export class BotProfileKeeper {
  private settled: Promise<void> | undefined;

  constructor(
    private readonly botUserId: string,
    private readonly profile: BotProfile,
    private readonly memory: IntentMemory,
    private readonly log: Log,
  ) {}

  /**
   * `call` performs a request as the bot and throws when it should be retried: then the action
   * waiting on this is retried, and the profile with it.
   */
  ensure(call: (request: ClientServerRequest) => Promise<ClientServerResponse>): Promise<void> {
    this.settled ??= this.apply(call).catch((error) => {
      this.settled = undefined;
      throw error;
    });
    return this.settled;
  }

  private async apply(call: (request: ClientServerRequest) => Promise<ClientServerResponse>) {
    const last: ProfileFields = (await this.memory.user(this.botUserId)).profile;
    const set = { ...last };
    for (const field of PROFILE_FIELDS) {
      const value = this.profile[field];
      if (value === undefined || last[field] === value) continue;
      const response = await call(profileRequest(this.botUserId, field, value));
      if (response.status < 200 || response.status >= 300) {
        // A homeserver that refuses profile changes must not hold the bot's actions back.
        this.log.error("the homeserver refused the bot's profile: the bot acts without it", {
          field,
          status: response.status,
          ...matrixError(response.body),
        });
        continue;
      }
      set[field] = value;
    }
    if (PROFILE_FIELDS.some((field) => last[field] !== set[field])) {
      await this.memory.markProfileSet(this.botUserId, set);
      this.log.info("set the bot's profile", { userId: this.botUserId, ...set });
    }
  }
}
