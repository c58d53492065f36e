import type { Application } from "../../appservice/api.ts";
import { application as events } from "./events.ts";
import { application as operator } from "./operator.ts";
import { application as queries } from "./queries.ts";
import { application as routes } from "./routes.ts";
import { WEBHOOK_USER_PREFIX } from "./webhooks/user.ts";

/**
 * The default application: incoming webhooks into rooms (`!webhook help`), and a bot that joins
 * the rooms it is invited to and answers `!ping` with a `pong` notice. Each Lambda function runs
 * its part (`events.ts`, `queries.ts`, `routes.ts`, `operator.ts`); local mode and the stack read the whole.
 * Replace this folder with your own application (README: "Write your own appservice").
 */
export const application: Application = {
  ...events,
  ...queries,
  ...routes,
  ...operator,
  userPrefixes: [WEBHOOK_USER_PREFIX],
};
