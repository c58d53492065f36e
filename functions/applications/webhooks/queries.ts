import type { ApplicationQueries } from "../../appservice/api.ts";

/** What the queries function runs: the webhooks answer no user, alias or third-party query. */
export const application: ApplicationQueries = {};
