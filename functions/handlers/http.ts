import type { MiddlewareObj } from "@middy/core";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { badJson, MatrixError, parseJson, tooLarge } from "../shared/errors.ts";
import type { Log } from "../shared/log.ts";

/**
 * Lambda's limit on a synchronous invocation's request: the whole event as JSON, in which the
 * body is escaped (every `"` of a JSON body becomes `\"`). API Gateway cannot deliver a larger
 * request to the function at all: a full Synapse transaction (100 events of up to 64 KiB, 6.5 MB)
 * may not fit (docs/reliability.md, "Size").
 */
export const LAMBDA_EVENT_MAX_BYTES = 6_291_556;

/** The largest request body read: no body over Lambda's limit could reach a function. */
export const MAX_BODY_BYTES = LAMBDA_EVENT_MAX_BYTES;

export const jsonResponse = (
  statusCode: number,
  body: unknown,
): APIGatewayProxyStructuredResultV2 => ({
  statusCode,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

/**
 * The deepest nesting accepted. Far beyond any real event, and far below what would overflow the
 * stack of the recursive JSON.stringify and zod that handle the body next.
 */
export const MAX_JSON_DEPTH = 128;

/** The most bytes JSON escaping makes of one byte of a string: a control character's `\u001f`. */
const MAX_ESCAPED_BYTES_PER_BYTE = 6;

/**
 * Whether the event as Lambda's invocation would hold it (the body escaped) is over Lambda's
 * limit. Serializing the whole event copies the body: only a body that could reach the limit
 * once escaped (about a megabyte) is measured so; the rest of the event is small.
 */
export function overLambdaLimit(event: APIGatewayProxyEventV2, bodyBytes: number): boolean {
  const rest = Buffer.byteLength(JSON.stringify({ ...event, body: "" }));
  if (rest + bodyBytes * MAX_ESCAPED_BYTES_PER_BYTE <= LAMBDA_EVENT_MAX_BYTES) return false;
  return Buffer.byteLength(JSON.stringify(event)) > LAMBDA_EVENT_MAX_BYTES;
}

/** The deepest nesting of arrays and objects in JSON text, found without recursion. */
function nestingDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) deepest = Math.max(deepest, ++depth);
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return deepest;
}

/**
 * The request body parsed as JSON: 413 `M_TOO_LARGE` past the size limit or where the event
 * could not have reached a Lambda function (so that local mode refuses what AWS cannot deliver),
 * 400 `M_NOT_JSON` if not JSON, 400 `M_BAD_JSON` if nested deeper than `MAX_JSON_DEPTH`.
 */
export function jsonBody(event: APIGatewayProxyEventV2): unknown {
  const raw = event.body ?? "";
  const text = event.isBase64Encoded ? Buffer.from(raw, "base64").toString("utf8") : raw;
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_BODY_BYTES) {
    throw tooLarge(`The request body is over ${MAX_BODY_BYTES} bytes`);
  }
  if (overLambdaLimit(event, event.isBase64Encoded ? raw.length : bytes)) {
    throw tooLarge(
      `The request, its body escaped, is over Lambda's ${LAMBDA_EVENT_MAX_BYTES}-byte limit`,
    );
  }
  if (nestingDepth(text) > MAX_JSON_DEPTH) {
    throw badJson(`The request body is nested deeper than ${MAX_JSON_DEPTH} levels`);
  }
  return parseJson(text, "The request body is not valid JSON");
}

/**
 * A request as log lines and metrics name it: its route's template (`POST /webhook/{id}`), never
 * the path's values nor the query. A path parameter may be a bearer secret (an application's URL)
 * and a query an `access_token`; the route says which code ran, which is what a log needs.
 * Unrouted (`$default`), only the method: the path could be a secret URL mistyped.
 */
export const routeForLog = (event: APIGatewayProxyEventV2): string =>
  event.routeKey && event.routeKey !== "$default"
    ? event.routeKey
    : `${event.requestContext?.http?.method ?? "?"} (no route)`;

/** Turns errors into Matrix error responses; anything unexpected is logged and becomes a 500. */
export const matrixErrors = (
  log: Log,
): MiddlewareObj<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2> => ({
  onError: (request) => {
    const { error } = request;
    const route = routeForLog(request.event);
    if (error instanceof MatrixError) {
      if (error.status >= 500) log.error("request failed", { route, error });
      request.response = jsonResponse(error.status, error.body);
      return;
    }
    log.error("unexpected error", { route, error });
    request.response = jsonResponse(500, { errcode: "M_UNKNOWN", error: "Internal server error" });
  },
});
