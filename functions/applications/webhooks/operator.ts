import type { ApplicationOperator } from "../../appservice/api.ts";
import { webhooksSection } from "./webhooks/operator-view.ts";

/** The operator console's part: the webhooks it lists. */
export const application: ApplicationOperator = { consoleSections: [webhooksSection] };
