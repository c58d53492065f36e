import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyStructuredResultV2,
  Context,
} from "aws-lambda";
import { authenticateHomeserver } from "../appservice/protocol/auth.ts";
import type { Route } from "../appservice/protocol/routes.ts";
import { findRoute } from "../appservice/protocol/routes.ts";
import { MAX_BODY_BYTES } from "../handlers/http.ts";
import { MatrixError, tooLarge, unavailable } from "../shared/errors.ts";

export type HttpHandler = (
  event: APIGatewayProxyEventV2,
  context: Context,
) => Promise<APIGatewayProxyStructuredResultV2>;

export interface GatewayOptions {
  /** The appservice's routes and the application's (`routeTable`). */
  routes: readonly Route[];
  /** The handler serving each route's `handler` name; undefined while starting up. */
  handlers: () => Record<Route["handler"], HttpHandler> | undefined;
  /** The `hs_token` the appservice's routes require; undefined while starting up. */
  hsToken: () => string | undefined;
  /** API Gateway's `$default` route. */
  fallback: HttpHandler;
  /** Connections served at once; more are closed unanswered. @default MAX_CONNECTIONS */
  maxConnections?: number;
}

/** Connections served at once: far more than a homeserver and webhook senders need. */
export const MAX_CONNECTIONS = 256;
/** How long a client may take to send its headers, and its whole request. */
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;
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

/**
 * Leaves what is left of the body unread, however large or slow: the connection closes once
 * the answer is sent.
 */
const leaveBodyUnread = (req: IncomingMessage, res: ServerResponse) => {
  if (req.complete) return;
  res.setHeader("connection", "close");
  res.on("finish", () => req.destroy());
};

/**
 * Reads the body up to `limit` bytes; `undefined` as soon as it is over, the rest left unread
 * (not with `for await`, whose early exit would destroy the socket before the answer).
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off("data", onData);
        req.pause();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => resolve(Buffer.concat(chunks)));
    // After `end` this changes nothing: a promise settles once.
    req.once("close", () => reject(new Error("The request closed before its end")));
  });
}

/**
 * Whether API Gateway's HTTP API hands a body of this `Content-Type` over as text; any other
 * (a multipart form, an image, none) arrives base64-encoded, `isBase64Encoded` true.
 */
const isTextBody = (contentType: string | undefined) =>
  /^\s*(text\/|application\/([\w.+-]*\+)?(json|xml|javascript|x-www-form-urlencoded)\s*(;|$))/i.test(
    contentType ?? "",
  );

/** Builds the payload-format-2.0 event API Gateway's HTTP API would send. */
function toEvent(
  req: IncomingMessage,
  url: URL,
  rawPath: string,
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
    body: "",
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
 *
 * It reads a body only once the request is routed, within the route's size limit and, on the
 * appservice's routes, authenticated (the handlers check the token again, as in AWS); anything
 * else is refused unread.
 */
export function createGateway(options: GatewayOptions): Server {
  const { routes, handlers, hsToken, fallback } = options;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    try {
      // Not `new URL(path, base)`: a path such as `//x` would be read as a host.
      const url = new URL(`http://127.0.0.1${req.url ?? "/"}`);
      const rawPath = (req.url ?? "/").split("?")[0] as string;
      if (rawPath === "/health" && req.method === "GET") {
        if (handlers()) send(res, 200, { status: "ok" });
        else send(res, 503, { errcode: "M_UNKNOWN", error: "Starting" });
        return;
      }
      const match = findRoute(req.method ?? "GET", rawPath, routes);
      const ready = handlers();
      let result: APIGatewayProxyStructuredResultV2;
      if (!match.route) {
        // The `$default` route answers 404 or 405 from the method and path alone.
        const event = toEvent(req, url, rawPath, "$default", undefined);
        result = await fallback(event, context("fallback"));
        leaveBodyUnread(req, res);
      } else {
        const { route, pathParameters } = match;
        const token = hsToken();
        if (!ready || token === undefined) throw unavailable("Starting; retry shortly");
        const event = toEvent(req, url, rawPath, `${route.method} ${route.path}`, pathParameters);
        // The application's routes are public; the console's check the admin token themselves.
        if (route.handler !== "app" && route.handler !== "admin") {
          authenticateHomeserver(
            event.headers.authorization,
            event.queryStringParameters?.access_token,
            token,
          );
        }
        const limit = route.maxBodyBytes ?? MAX_BODY_BYTES;
        // Built only when thrown: an error captures a stack, too dear for every request.
        const tooLong = () => tooLarge(`The request body is over ${limit} bytes`);
        if (Number(req.headers["content-length"] ?? 0) > limit) throw tooLong();
        // Asked to wait for a go-ahead (`Expect: 100-continue`): only now is the body wanted.
        if (/100-continue/i.test(req.headers.expect ?? "")) res.writeContinue();
        const body = await readBody(req, limit);
        if (body === undefined) throw tooLong();
        const text = isTextBody(req.headers["content-type"]);
        result = await ready[route.handler](
          {
            ...event,
            body: body.toString(text ? "utf8" : "base64"),
            isBase64Encoded: !text,
          },
          context(route.handler),
        );
      }
      res.writeHead(result.statusCode ?? 200, result.headers as Record<string, string>);
      res.end(result.body ?? "");
    } catch (error) {
      if (res.headersSent) res.destroy();
      else if (error instanceof MatrixError) {
        leaveBodyUnread(req, res);
        send(res, error.status, error.body);
      } else send(res, 500, { errcode: "M_UNKNOWN", error: "Internal server error" });
    }
  };
  const server = createServer(
    {
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      // How often those timeouts are checked (30 s by default).
      connectionsCheckingInterval: 1_000,
    },
    handle,
  );
  // Without this listener Node would send `100 Continue` before the request is checked.
  server.on("checkContinue", handle);
  server.maxConnections = options.maxConnections ?? MAX_CONNECTIONS;
  return server;
}

/** How long the requests being answered at a stop may take before they are cut off. */
const REQUESTS_STOP_WAIT_MS = 2000;

/** Closes the gateway: requests being answered get their answers, for a while; idle connections go. */
export const closeGracefully = (server: Server) =>
  new Promise<void>((resolve) => {
    const idle = setInterval(() => server.closeIdleConnections(), 50);
    const cutOff = setTimeout(() => server.closeAllConnections(), REQUESTS_STOP_WAIT_MS);
    server.close(() => {
      clearInterval(idle);
      clearTimeout(cutOff);
      resolve();
    });
  });
