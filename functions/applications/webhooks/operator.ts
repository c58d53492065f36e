import type { ApplicationOperator } from "../../appservice/api.ts";
import { webhookViews } from "./webhooks/operator-view.ts";

/** The operator console's part: the webhooks it lists. */
export const application: ApplicationOperator = {
  async operatorView(context) {
    return { webhooks: await webhookViews(context) };
  },
};
