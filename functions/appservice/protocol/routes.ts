/** A route the appservice serves: the same table drives the API Gateway routes and local mode. */
export interface Route {
  method: "GET" | "PUT" | "POST" | "DELETE";
  /** API Gateway syntax: `{name}` is one path segment. */
  path: string;
  /** The Lambda handler (`functions/handlers/<handler>.ts`) that serves it. */
  handler: "transactions" | "queries" | "app" | "admin";
  /** The largest body it takes, when below `MAX_BODY_BYTES` (the local gateway refuses more unread). */
  maxBodyBytes?: number;
}

const thirdPartyPaths = [
  "/thirdparty/protocol/{protocol}",
  "/thirdparty/user/{protocol}",
  "/thirdparty/location/{protocol}",
  "/thirdparty/user",
  "/thirdparty/location",
];

export const routes: readonly Route[] = [
  { method: "PUT", path: "/_matrix/app/v1/transactions/{txnId}", handler: "transactions" },
  { method: "GET", path: "/_matrix/app/v1/users/{userId}", handler: "queries" },
  { method: "GET", path: "/_matrix/app/v1/rooms/{roomAlias}", handler: "queries" },
  { method: "POST", path: "/_matrix/app/v1/ping", handler: "queries" },
  ...thirdPartyPaths.map((path) => ({
    method: "GET" as const,
    path: `/_matrix/app/v1${path}`,
    handler: "queries" as const,
  })),
  // Legacy paths (r0.1.x homeservers, which fall back to them).
  { method: "PUT", path: "/transactions/{txnId}", handler: "transactions" },
  { method: "GET", path: "/users/{userId}", handler: "queries" },
  { method: "GET", path: "/rooms/{roomAlias}", handler: "queries" },
  ...thirdPartyPaths.map((path) => ({
    method: "GET" as const,
    path: `/_matrix/app/unstable${path}`,
    handler: "queries" as const,
  })),
];

/** The operator console: its page, and its API (which checks the admin token itself). */
export const OPERATOR_PATH = "/admin";
export const operatorRoutes: readonly Route[] = [
  { method: "GET", path: OPERATOR_PATH, handler: "admin" },
  ...["status", "traffic", "dead-letters", "sections", "sections/{id}"].map((name) => ({
    method: "GET" as const,
    path: `${OPERATOR_PATH}/api/${name}`,
    handler: "admin" as const,
  })),
  ...["replay", "discard"].map((name) => ({
    method: "POST" as const,
    path: `${OPERATOR_PATH}/api/dead-letters/${name}`,
    handler: "admin" as const,
    maxBodyBytes: 64 * 1024,
  })),
];

const template = (path: string) => path.replace(/\{\w+\}/g, "{}");

/**
 * The appservice's routes and the application's own, served by the `app` handler. An
 * application path that the appservice serves, or under `/_matrix/`, fails here (at synth and
 * at start) rather than shadow the homeserver's API.
 */
export function routeTable(
  appRoutes: readonly Pick<Route, "method" | "path" | "maxBodyBytes">[],
): Route[] {
  const table: Route[] = [...routes, ...operatorRoutes];
  for (const { method, path, maxBodyBytes } of appRoutes) {
    const clash = table.find((route) => template(route.path) === template(path));
    const operators = path === OPERATOR_PATH || path.startsWith(`${OPERATOR_PATH}/`);
    if (!/^\/[^/]/.test(path) || path.startsWith("/_matrix/") || path === "/health" || operators) {
      throw new Error(
        `The application route ${method} ${path} is not allowed: it must start with "/", not be "/health" and not be under /_matrix/ or ${OPERATOR_PATH}`,
      );
    }
    if (clash && (clash.handler !== "app" || clash.method === method)) {
      throw new Error(
        `The application route ${method} ${path} clashes with ${clash.method} ${clash.path}`,
      );
    }
    table.push({
      method,
      path,
      handler: "app",
      ...(maxBodyBytes !== undefined && { maxBodyBytes }),
    });
  }
  return table;
}

/** A route's path without its version prefix: `/users/{userId}`, `/thirdparty/user`, … */
export const unversionedPath = (path: string) => path.replace(/^\/_matrix\/app\/(v1|unstable)/, "");

/** Matches a raw (still percent-encoded) path against a template; parameters come back decoded. */
function matchPath(template: string, rawPath: string): Record<string, string> | undefined {
  const want = template.split("/");
  const got = rawPath.split("/");
  if (want.length !== got.length) return undefined;
  const parameters: Record<string, string> = {};
  for (const [i, part] of want.entries()) {
    const segment = got[i] as string;
    const name = /^\{(\w+)\}$/.exec(part)?.[1];
    if (name === undefined) {
      if (part !== segment) return undefined;
      continue;
    }
    if (segment === "") return undefined;
    try {
      parameters[name] = decodeURIComponent(segment);
    } catch {
      return undefined;
    }
  }
  return parameters;
}

export type RouteMatch =
  | { route: Route; pathParameters: Record<string, string> }
  | { route: undefined; status: 404 | 405 };

/** Finds the route for a request; 405 when the path exists for another method only. */
export function findRoute(
  method: string,
  rawPath: string,
  table: readonly Route[] = routes,
): RouteMatch {
  let pathExists = false;
  for (const route of table) {
    const pathParameters = matchPath(route.path, rawPath);
    if (!pathParameters) continue;
    if (route.method === method.toUpperCase()) return { route, pathParameters };
    pathExists = true;
  }
  return { route: undefined, status: pathExists ? 405 : 404 };
}
