import type {
  ConsoleContext,
  ConsoleSection,
  RecentCall,
  ServiceContext,
} from "../../../appservice/api.ts";
import { outboundViews } from "./outbound.ts";
import { lastTokenTaken } from "./rate-limit.ts";
import { allWebhooks } from "./store.ts";
import { webhookUserId } from "./user.ts";
import type { WebhookView } from "./webhook-view.ts";

/**
 * The webhooks the operator console lists: each room's, when made and last used (its rate
 * limit's last token). The outbound ones say how their last delivery went, as the outbox
 * recorded it; an inbound one, how its user's last call in its room went, in the recent traffic.
 */
async function webhookViews(context: ServiceContext): Promise<WebhookView[]> {
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

/** A webhook without a status of its own gets its user's last call in its room, if any. */
function withLastCall(webhook: WebhookView, calls: RecentCall[]): WebhookView {
  if (webhook.lastStatus || !webhook.postsAs) return webhook;
  const last = calls.find(
    (call) => call.userId === webhook.postsAs && call.roomId === webhook.roomId,
  );
  if (!last) return webhook;
  const status = [last.outcome, last.status].filter((part) => part !== undefined).join(" ");
  return { ...webhook, lastStatus: status, lastStatusAt: last.at };
}

/** The console's Webhooks section. */
export const webhooksSection: ConsoleSection = {
  id: "webhooks",
  title: "Webhooks",
  columns: [
    { key: "roomId", label: "room" },
    { key: "direction", label: "direction" },
    { key: "name", label: "name" },
    { key: "lastUsedAt", label: "last used", time: true },
    { key: "lastStatus", label: "last delivery" },
    { key: "lastStatusAt", label: "delivered at", time: true },
  ],
  async rows(context: ConsoleContext) {
    const [webhooks, calls] = await Promise.all([webhookViews(context), context.recentCalls()]);
    return webhooks.map((webhook) => withLastCall(webhook, calls));
  },
};
