import type { ApplicationRoutes } from "../../appservice/api.ts";
import { webhookRoute } from "./webhooks/post.ts";

/** What the app function runs: `POST /webhook/{id}`, the one function that renders. */
export const application: ApplicationRoutes = { routes: [webhookRoute] };
