import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
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
  /** Of those, the homeserver's share (see `shareConnections`). @default RESERVED_CONNECTIONS */
  reservedConnections?: number;
  /** The rest's, from one client address. @default MAX_CONNECTIONS_PER_ADDRESS */
  maxConnectionsPerAddress?: number;
  /** How long a client may take to send its headers. @default HEADERS_TIMEOUT_MS */
  headersTimeoutMs?: number;
}

/** Connections served at once: far more than a homeserver and webhook senders need. */
export const MAX_CONNECTIONS = 256;
/** Of those, kept for the homeserver's routes and `/health`. */
export const RESERVED_CONNECTIONS = 64;
/** Connections from one address outside the homeserver's share. */
export const MAX_CONNECTIONS_PER_ADDRESS = 128;
/** How long a client may take to send its headers, and its whole request. */
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;
/** A request line longer than this (the homeserver's are short) is not the homeserver's. */
const REQUEST_LINE_BYTES = 4096;
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

/** The routes the homeserver calls, with the `hs_token`: all but the application's and the console's. */
const isHomeserverRoute = (route: Route | undefined) =>
  route !== undefined && route.handler !== "app" && route.handler !== "admin";

/**
 * Shares the connections between the homeserver and everyone else: as every local client
 * (homeserver, tests, a tunnel) arrives from 127.0.0.1, a cap per address alone would let one
 * flood starve the homeserver.
 *
 * A connection counts against the public share (and its address's cap) until its request
 * line, which comes first, names a homeserver route or `/health`: it then moves to the
 * reserved share if there is room. One arriving with the public share or its address full
 * waits in the reserved share for its request line, the longest waiting closed to make room
 * (the homeserver writes its line at once); a public line closes it unanswered. Half-sent
 * headers thus hold only public slots, until the headers timeout.
 */
function shareConnections(
  server: Server,
  routes: readonly Route[],
  limits: { max: number; reserved: number; perAddress: number },
) {
  const publicShare = limits.max - limits.reserved;
  let publicCount = 0;
  let reservedCount = 0;
  const perAddress = new Map<string, number>();
  // Insertion-ordered: the first is the longest waiting. Each maps to how it leaves.
  const waiting = new Map<Socket, () => void>();

  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress ?? "";
    let share: "public" | "reserved" | "waiting" | undefined;
    const count = (delta: 1 | -1) => {
      if (share === "public") {
        publicCount += delta;
        const left = (perAddress.get(address) ?? 0) + delta;
        if (left === 0) perAddress.delete(address);
        else perAddress.set(address, left);
      } else if (share === "reserved") reservedCount += delta;
      else if (share === "waiting") {
        if (delta === 1) waiting.set(socket, close);
        else waiting.delete(socket);
      }
    };
    const move = (to: typeof share) => {
      count(-1);
      share = to;
      if (to) count(1);
    };
    // Counted out at once: its `close` event comes later, after the connections it made room for.
    const close = () => {
      move(undefined);
      socket.destroy();
    };
    socket.once("close", () => move(undefined));

    if (publicCount < publicShare && (perAddress.get(address) ?? 0) < limits.perAddress) {
      move("public");
    } else {
      if (reservedCount + waiting.size >= limits.reserved) {
        const longest = waiting.values().next().value;
        if (!longest) return socket.destroy();
        longest();
      }
      move("waiting");
    }

    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\n");
      if (end === -1 && head.length < REQUEST_LINE_BYTES) return;
      socket.off("data", onData);
      const [method = "", target = ""] = (end === -1 ? "" : head.slice(0, end)).trim().split(" ");
      const path = target.split("?")[0] as string;
      const homeserver =
        path === "/health"
          ? method === "GET"
          : isHomeserverRoute(findRoute(method, path, routes).route);
      if (homeserver && share === "waiting") move("reserved");
      else if (homeserver && reservedCount + waiting.size < limits.reserved) move("reserved");
      else if (share === "waiting") close();
    };
    if (share) socket.on("data", onData);
  });
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
        if (isHomeserverRoute(route)) {
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
      headersTimeout: options.headersTimeoutMs ?? HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
      // How often those timeouts are checked (30 s by default).
      connectionsCheckingInterval: 1_000,
    },
    handle,
  );
  // Without this listener Node would send `100 Continue` before the request is checked.
  server.on("checkContinue", handle);
  const max = options.maxConnections ?? MAX_CONNECTIONS;
  shareConnections(server, routes, {
    max,
    reserved: options.reservedConnections ?? RESERVED_CONNECTIONS,
    perAddress: options.maxConnectionsPerAddress ?? MAX_CONNECTIONS_PER_ADDRESS,
  });
  // A backstop only: the sockets closed to make room count here until their `close` event.
  server.maxConnections = 2 * max;
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
