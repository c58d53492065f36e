import middy from "@middy/core";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import type { AppRoute } from "../appservice/application.ts";
import { serviceContext } from "../appservice/service-context.ts";
import { tooLarge, unrecognized } from "../shared/errors.ts";
// The application's part this function runs, and only that part's code and packages.
import { routesPart } from "../wiring/application.ts";
import { appDeps } from "../wiring/deps.ts";
import type { AppHandlerDeps } from "../wiring/handler-deps.ts";
import { jsonResponse, LAMBDA_EVENT_MAX_BYTES, matrixErrors, overLambdaLimit } from "./http.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";

const routeKey = (route: Pick<AppRoute, "method" | "path">) => `${route.method} ${route.path}`;

/** The application's own HTTP routes (`Application.routes`), each request a new origin. */
export const createAppHandler = (deps: AppHandlerDeps) => {
  const byKey = new Map((deps.application.routes ?? []).map((route) => [routeKey(route), route]));
  return middy<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2>()
    .use(matrixErrors(deps.log))
    .handler(async (event) => {
      const route = byKey.get(event.routeKey);
      if (!route) throw unrecognized(404, "Unrecognized request");
      const raw = event.body ?? "";
      if (overLambdaLimit(event, raw.length)) {
        throw tooLarge(`The request is over Lambda's ${LAMBDA_EVENT_MAX_BYTES}-byte limit`);
      }
      // API Gateway hands over a body that is not text (a multipart form's files) in base64.
      const bytes = Buffer.from(raw, event.isBase64Encoded ? "base64" : "utf8");
      const response = await route.handle(
        {
          method: event.requestContext.http.method,
          pathParameters: (event.pathParameters ?? {}) as Record<string, string>,
          query: (event.queryStringParameters ?? {}) as Record<string, string>,
          headers: event.headers as Record<string, string>,
          body: event.isBase64Encoded ? bytes.toString("utf8") : raw,
          bytes,
        },
        serviceContext(deps, `http:${event.requestContext.requestId}`),
      );
      const json = jsonResponse(response.status, response.body ?? {});
      return { ...json, headers: { ...response.headers, ...json.headers } };
    });
};

export const handler = lambdaHandler(
  () =>
    lambdaDeps("app", async (config, platform) => appDeps(config, platform, await routesPart())),
  createAppHandler,
);
