import middy from "@middy/core";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { findRoute, type Route, routeTable } from "../appservice/protocol/routes.ts";
import { unrecognized } from "../shared/errors.ts";
import type { Log } from "../shared/log.ts";
import { readConfig } from "../wiring/env.ts";
import { matrixErrors } from "./http.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";
import { createLogger } from "./shared/logger.ts";

/**
 * API Gateway's `$default` route: every request no route matched. 405 where the path is
 * served for another method, else 404, both `M_UNRECOGNIZED` as the spec asks.
 */
export const createFallbackHandler = (table: readonly Route[], log: Log) =>
  middy<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2>()
    .use(matrixErrors(log))
    .handler(async (event) => {
      const match = findRoute(event.requestContext.http.method, event.rawPath, table);
      if (match.route) {
        // Routed by API Gateway to its own function; reaching here means a stale deployment.
        throw unrecognized(404, `No handler deployed for ${event.rawPath}`);
      }
      throw match.status === 405
        ? unrecognized(405, `Method ${event.requestContext.http.method} is not allowed here`)
        : unrecognized(404, "Unrecognized request");
    });

// The application's routes by method and path only (set by the stack): this function stays
// small, without the application's code.
export const handler = lambdaHandler(
  async () => ({
    table: routeTable(readConfig("fallback", process.env).appRoutes),
    log: createLogger(),
  }),
  ({ table, log }) => createFallbackHandler(table, log),
);
