import type { ServiceContext, WebhookView } from "../../../appservice/api.ts";
import { outboundViews } from "./outbound.ts";
import { lastTokenTaken } from "./rate-limit.ts";
import { allWebhooks } from "./store.ts";
import { webhookUserId } from "./user.ts";

/**
 * The webhooks the operator console lists: each room's, when made and last used (its rate
 * limit's last token). How its last message went, the console reads from the outbox's traffic
 * as the webhook's user. The outbound ones say how their last delivery went, as the outbox
 * recorded it.
 */
export async function webhookViews(context: ServiceContext): Promise<WebhookView[]> {
  const [webhooks, outbound] = await Promise.all([
    allWebhooks(context.data),
    outboundViews(context),
  ]);
  const inbound = await Promise.all(
    webhooks.map(async ({ idHash, webhook }) => {
      const lastUsed = await lastTokenTaken(context.data, idHash);
      return {
        roomId: webhook.roomId,
        direction: "inbound" as const,
        name: webhook.name,
        createdAt: new Date(webhook.createdAt).toISOString(),
        ...(lastUsed !== undefined && { lastUsedAt: new Date(lastUsed).toISOString() }),
        postsAs: webhook.userId ?? webhookUserId(context, webhook.roomId, webhook.name),
      };
    }),
  );
  return [...inbound, ...outbound];
}
