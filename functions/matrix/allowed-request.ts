import { queuedProblem, quoted } from "../queue/outbound.ts";

/**
 * What the appservice may ask of the homeserver with its as_token. The outbox performs what it
 * finds on its queue, so it checks each action here first (and the HTTP client each request):
 * whatever put something else there, it is dead-lettered, never sent.
 */

const METHODS = new Set(["GET", "PUT", "POST", "DELETE"]);
/** The APIs an appservice acts through: client-server and media. */
const API_PREFIXES = ["/_matrix/client/", "/_matrix/media/"];
// What literal paths and `encodeURIComponent` write: unreserved characters, sub-delimiters,
// `:`, `@`, `/` and %XX escapes. No `?`, `#`, `\`, spaces or raw non-ASCII, which a URL parser
// would move into the query, drop, turn into `/` or encode.
const PATH_CHARACTERS = /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$/;
// `.` or `..` as a URL parser reads them (`%2e` is a dot), also under one more layer of escapes.
const DOT_SEGMENT = /^(?:\.|%2e){1,2}$/i;
/** Set by the HTTP client only: who acts, and the token (which goes in the header). */
const RESERVED_QUERY = new Set(["user_id", "access_token"]);
/** Where bytes go instead of JSON: the media uploads (`POST` a new one, `PUT` a created one). */
const UPLOAD_PATH = /^\/_matrix\/media\/v3\/upload(?:\/[^/]+\/[^/]+)?$/;
/** What is read as bytes: media downloads, authenticated (Matrix 1.11) or not. */
const DOWNLOAD_PATH = /^\/_matrix\/(?:client\/v1\/media|media\/v3)\/download\/[^/]+\/[^/]+$/;

/** A segment that is a dot segment, or holds one once percent-decoded (`..%2F`, `%252e`). */
const hidesDotSegment = (decoded: string) =>
  decoded.split(/[/\\]/).some((piece) => DOT_SEGMENT.test(piece));

/** Why the homeserver must not be sent `request`; undefined when it may. */
export function requestProblem(request: unknown): string | undefined {
  if (typeof request !== "object" || request === null) return "the request is not an object";
  const { method, path, query, body, content, maxResponseBytes } = request as Record<
    string,
    unknown
  >;
  if (typeof method !== "string" || !METHODS.has(method)) {
    return `method ${quoted(method)} is not GET, PUT, POST or DELETE`;
  }
  if (typeof path !== "string") return "the path is not a string";
  if (!API_PREFIXES.some((prefix) => path.startsWith(prefix))) {
    return "the path is outside /_matrix/client/ and /_matrix/media/";
  }
  if (!PATH_CHARACTERS.test(path)) {
    return "the path has a character a path must escape (?, #, \\, space, non-ASCII) or a bad escape";
  }
  // An empty last segment is an empty state key; one inside is `//`.
  if (path.includes("//")) return "the path has an empty segment (//)";
  for (const segment of path.split("/")) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return "the path has an escape that is not UTF-8";
    }
    if (hidesDotSegment(decoded)) return "the path has a dot segment (. or .., maybe escaped)";
  }
  if (content !== undefined) {
    const { bytes, type } = content as { bytes?: unknown; type?: unknown };
    if (!(bytes instanceof Uint8Array) || typeof type !== "string") {
      return "the content is not bytes with a content type";
    }
    if (body !== undefined) return "the request has both a JSON body and bytes";
    if (!UPLOAD_PATH.test(path)) return "bytes go only to a media upload";
  }
  if (maxResponseBytes !== undefined) {
    if (!(Number.isSafeInteger(maxResponseBytes) && (maxResponseBytes as number) > 0)) {
      return "maxResponseBytes is not a positive integer";
    }
    if (!DOWNLOAD_PATH.test(path)) return "only a media download is read as bytes";
  }
  if (query !== undefined) {
    if (typeof query !== "object" || query === null) return "the query is not an object";
    for (const [name, value] of Object.entries(query)) {
      if (RESERVED_QUERY.has(name)) return `the query sets ${name}, which only the client may`;
      if (typeof value !== "string") return `the query parameter ${quoted(name)} is not a string`;
    }
  }
  return undefined;
}

/**
 * Why `action` (a message of the outbound queue) must not be performed; undefined when it may.
 * `mayActAs`: the bot and the users of the registration's namespaces.
 */
export function actionProblem(
  action: unknown,
  mayActAs: (userId: string) => boolean,
): string | undefined {
  if (typeof action !== "object" || action === null) return "the action is not an object";
  const { id, kind, userId, roomId, maxServerErrors, remoteId, request } = action as Record<
    string,
    unknown
  >;
  const queued = queuedProblem(id, maxServerErrors);
  if (queued) return queued;
  if (typeof kind !== "string") return "the action's kind is not a string";
  if (roomId !== undefined && typeof roomId !== "string") return "the roomId is not a string";
  if (remoteId !== undefined && !(typeof remoteId === "string" && roomId !== undefined)) {
    return "the remoteId is not a string, or the action has no room to map it in";
  }
  if (typeof userId !== "string") return "the userId is not a string";
  if (!mayActAs(userId)) {
    return `acting as ${quoted(userId)}, outside the registration's user namespaces`;
  }
  return requestProblem(request);
}
