import type { ServiceContext } from "../../../appservice/api.ts";

/** The virtual users webhooks post as: `@_webhook_<room tag>_<name>:<server>`. */
export const WEBHOOK_USER_PREFIX = "_webhook_";

/**
 * The user a room's webhook posts as, that room's alone: its tag is a hash of the room ID keyed
 * with the as_token, so no two rooms share a webhook user, and nobody can make a room (room IDs
 * are hashes in v12) whose tag is another's.
 */
export function webhookUserId(context: ServiceContext, roomId: string, name: string): string {
  const { botUserId } = context.actions;
  const server = botUserId.slice(botUserId.indexOf(":") + 1);
  const keyed = context.deriveSecret(`webhook-user\n${roomId}`);
  const tag = Buffer.from(keyed, "base64url").toString("hex").slice(0, 12);
  return `@${WEBHOOK_USER_PREFIX}${tag}_${name}:${server}`;
}
