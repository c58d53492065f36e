import middy from "@middy/core";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { queryAlias, queryUser } from "../appservice/pipeline/queries.ts";
import { thirdPartyLookup } from "../appservice/pipeline/third-party.ts";
import { unversionedPath } from "../appservice/protocol/routes.ts";
import { MatrixError } from "../shared/errors.ts";
// The application's part this function runs, and only that part's code and packages.
import { queriesPart } from "../wiring/application.ts";
import { queriesDeps } from "../wiring/deps.ts";
import type { QueriesDeps } from "../wiring/handler-deps.ts";
import { jsonBody, jsonResponse, matrixErrors } from "./http.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";

const exists = (found: boolean, what: string) => {
  if (!found) throw new MatrixError(404, "M_NOT_FOUND", `No such ${what}`);
  return jsonResponse(200, {});
};

/**
 * The homeserver's synchronous questions: `GET /users/{userId}`, `GET /rooms/{roomAlias}`, the
 * third-party lookups and `POST /ping`, on the v1, legacy and unstable paths.
 */
export const createQueriesHandler = (deps: QueriesDeps) =>
  middy<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2>()
    .use(matrixErrors(deps.log))
    .handler(async (event) => {
      const query = event.queryStringParameters ?? {};
      await deps.hsTokens.authenticate(event.headers.authorization, query.access_token);
      const path = unversionedPath(event.routeKey.split(" ")[1] as string);
      const params = event.pathParameters ?? {};
      const queryDeps = { ...deps, owner: event.requestContext.requestId };
      const { access_token: _, ...fields } = query as Record<string, string>;
      const thirdParty = deps.application.thirdParty;
      switch (path) {
        case "/users/{userId}":
          return exists(await queryUser(params.userId as string, queryDeps), "user");
        case "/rooms/{roomAlias}":
          return exists(await queryAlias(params.roomAlias as string, queryDeps), "room alias");
        case "/ping":
          // The body is `{"transaction_id"?}` (Synapse sends null): checked only for being JSON.
          jsonBody(event);
          return jsonResponse(200, {});
        case "/thirdparty/protocol/{protocol}":
          return jsonResponse(
            200,
            await thirdPartyLookup(
              { kind: "protocol", protocol: params.protocol as string },
              thirdParty,
            ),
          );
        case "/thirdparty/user/{protocol}":
        case "/thirdparty/location/{protocol}":
          return jsonResponse(
            200,
            await thirdPartyLookup(
              {
                kind: path.startsWith("/thirdparty/user") ? "user" : "location",
                protocol: params.protocol as string,
                fields,
              },
              thirdParty,
            ),
          );
        case "/thirdparty/user":
          return jsonResponse(
            200,
            await thirdPartyLookup({ kind: "userById", userId: query.userid }, thirdParty),
          );
        case "/thirdparty/location":
          return jsonResponse(
            200,
            await thirdPartyLookup({ kind: "locationByAlias", alias: query.alias }, thirdParty),
          );
        default:
          throw new MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request");
      }
    });

export const handler = lambdaHandler(
  () =>
    lambdaDeps("queries", async (config, platform) =>
      queriesDeps(config, platform, await queriesPart()),
    ),
  createQueriesHandler,
);
