import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyStructuredResultV2,
  Context,
} from "aws-lambda";
import type { Route } from "../appservice/routes.ts";
import { findRoute } from "../appservice/routes.ts";
import { MAX_BODY_BYTES } from "../handlers/http.ts";

export type HttpHandler = (
  event: APIGatewayProxyEventV2,
  context: Context,
) => Promise<APIGatewayProxyStructuredResultV2>;

export interface GatewayOptions {
  /** The appservice's routes and the application's (`routeTable`). */
  routes: readonly Route[];
  /** The handler serving each route's `handler` name; undefined while starting up. */
  handlers: () => Record<Route["handler"], HttpHandler> | undefined;
  /** API Gateway's `$default` route. */
  fallback: HttpHandler;
}

const send = (res: ServerResponse, status: number, body: unknown, headers = {}) => {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(typeof body === "string" ? body : JSON.stringify(body));
};

const safeDecode = (text: string) => {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
};

/** Reads the body up to the limit; `undefined` when it is over it. */
async function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  if (Number(req.headers["content-length"] ?? 0) > MAX_BODY_BYTES) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) return undefined;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Builds the payload-format-2.0 event API Gateway's HTTP API would send. */
function toEvent(
  req: IncomingMessage,
  url: URL,
  rawPath: string,
  body: Buffer,
  routeKey: string,
  pathParameters: Record<string, string> | undefined,
): APIGatewayProxyEventV2 {
  // API Gateway joins repeated headers with commas; Node would keep only the first
  // Authorization, so the raw list is read.
  const headers: Record<string, string> = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = (req.rawHeaders[i] as string).toLowerCase();
    const value = req.rawHeaders[i + 1] as string;
    headers[name] = name in headers ? `${headers[name]},${value}` : value;
  }
  const query: Record<string, string> = {};
  for (const [name, value] of url.searchParams) {
    query[name] = name in query ? `${query[name]},${value}` : value;
  }
  const method = req.method ?? "GET";
  const now = new Date();
  return {
    version: "2.0",
    routeKey,
    // API Gateway's HTTP API hands over the path percent-decoded.
    rawPath: safeDecode(rawPath),
    rawQueryString: url.search.slice(1),
    headers,
    ...(Object.keys(query).length > 0 && { queryStringParameters: query }),
    ...(pathParameters && { pathParameters }),
    requestContext: {
      accountId: "000000000000",
      apiId: "local",
      domainName: url.host,
      domainPrefix: "local",
      http: {
        method,
        path: safeDecode(rawPath),
        protocol: `HTTP/${req.httpVersion}`,
        sourceIp: req.socket.remoteAddress ?? "127.0.0.1",
        userAgent: req.headers["user-agent"] ?? "",
      },
      requestId: randomUUID(),
      routeKey,
      stage: "$default",
      time: now.toISOString(),
      timeEpoch: now.getTime(),
    },
    body: body.toString("utf8"),
    isBase64Encoded: false,
  };
}

const context = (functionName: string) =>
  ({
    functionName,
    awsRequestId: randomUUID(),
    getRemainingTimeInMillis: () => 30_000,
  }) as Context;

/**
 * An HTTP server that does what API Gateway does in AWS: matches the route table, turns the
 * request into an HTTP API event and the handler's result back into a response.
 * `GET /health` answers here only (local mode), 200 once the handlers are ready.
 */
export function createGateway({ routes, handlers, fallback }: GatewayOptions): Server {
  return createServer(async (req, res) => {
    try {
      // Not `new URL(path, base)`: a path such as `//x` would be read as a host.
      const url = new URL(`http://127.0.0.1${req.url ?? "/"}`);
      const rawPath = (req.url ?? "/").split("?")[0] as string;
      if (rawPath === "/health" && req.method === "GET") {
        if (handlers()) send(res, 200, { status: "ok" });
        else send(res, 503, { errcode: "M_UNKNOWN", error: "Starting" });
        return;
      }
      const body = await readBody(req);
      if (body === undefined) {
        send(
          res,
          413,
          { errcode: "M_TOO_LARGE", error: `The request body is over ${MAX_BODY_BYTES} bytes` },
          { connection: "close" },
        );
        res.on("finish", () => req.destroy());
        return;
      }
      const match = findRoute(req.method ?? "GET", rawPath, routes);
      const ready = handlers();
      if (match.route && !ready) {
        send(res, 503, { errcode: "M_UNKNOWN", error: "Starting; retry shortly" });
        return;
      }
      const routeKey = match.route ? `${match.route.method} ${match.route.path}` : "$default";
      const event = toEvent(req, url, rawPath, body, routeKey, match.route && match.pathParameters);
      const handler = match.route && ready ? ready[match.route.handler] : fallback;
      const result = await handler(event, context(match.route?.handler ?? "fallback"));
      res.writeHead(result.statusCode ?? 200, result.headers as Record<string, string>);
      res.end(result.body ?? "");
    } catch {
      if (!res.headersSent)
        send(res, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
      else res.destroy();
    }
  });
}
