import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyStructuredResultV2,
  ScheduledEvent,
} from "aws-lambda";
import { cloudWatchOperatorPlatform } from "../cloudwatch/operator-platform.ts";
import { adminDeps } from "../wiring/admin-deps.ts";
import { operatorPart } from "../wiring/application.ts";
import type { AdminHandlerDeps } from "../wiring/handler-deps.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";

/** The operator console (`/admin` and its API): the request mapped to the console's API and back. */
export const createAdminHandler =
  ({ api }: AdminHandlerDeps) =>
  async (event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> => {
    const body = event.body ?? "";
    const response = await api({
      method: event.requestContext.http.method,
      path: event.rawPath,
      query: (event.queryStringParameters ?? {}) as Record<string, string>,
      headers: event.headers as Record<string, string>,
      body: event.isBase64Encoded ? Buffer.from(body, "base64").toString("utf8") : body,
      sourceIp: event.requestContext.http.sourceIp,
    });
    return { statusCode: response.status, headers: response.headers, body: response.body };
  };

export const handler = lambdaHandler(
  () =>
    lambdaDeps("admin", async (config, platform) =>
      adminDeps(config, platform, await operatorPart(), cloudWatchOperatorPlatform(config)),
    ),
  (deps) => {
    const http = createAdminHandler(deps);
    // The stack's schedule (EventBridge, every 5 minutes) runs the dead-letter sweep here: the
    // function that already holds the dead-letter queues and the dead letters' items.
    return async (event: APIGatewayProxyEventV2 | ScheduledEvent) =>
      "detail-type" in event ? void (await deps.sweep()) : http(event);
  },
);
