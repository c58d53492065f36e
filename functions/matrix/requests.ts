import type { ClientServerRequest } from "./request.ts";

// The client-server requests the appservice makes, each built here and only here: every path
// parameter percent-encoded, bodies as the spec names their fields.

const CS = "/_matrix/client/v3";
const e = encodeURIComponent;

/** `?ts=` (timestamp massaging): the `origin_server_ts` an appservice may give its event. */
const timestamped = (ts: number | undefined) =>
  ts !== undefined ? { query: { ts: String(ts) } } : {};
const withReason = (reason: string | undefined) => (reason !== undefined ? { reason } : {});

export const sendRequest = (
  roomId: string,
  type: string,
  txnId: string,
  content: Record<string, unknown>,
  ts?: number,
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/rooms/${e(roomId)}/send/${e(type)}/${e(txnId)}`,
  body: content,
  ...timestamped(ts),
});

export const stateRequest = (
  roomId: string,
  type: string,
  stateKey: string,
  content: Record<string, unknown>,
  ts?: number,
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/rooms/${e(roomId)}/state/${e(type)}/${e(stateKey)}`,
  body: content,
  ...timestamped(ts),
});

/** A state event's content, or with `format: "event"` the whole event (sender included). */
export const roomStateRequest = (
  roomId: string,
  type: string,
  stateKey: string,
  format: "content" | "event" = "content",
): ClientServerRequest => ({
  method: "GET",
  path: `${CS}/rooms/${e(roomId)}/state/${e(type)}/${e(stateKey)}`,
  ...(format === "event" && { query: { format } }),
});

export const redactRequest = (
  roomId: string,
  eventId: string,
  txnId: string,
  reason?: string,
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/rooms/${e(roomId)}/redact/${e(eventId)}/${e(txnId)}`,
  body: withReason(reason),
});

export const joinRequest = (roomIdOrAlias: string): ClientServerRequest => ({
  method: "POST",
  path: `${CS}/join/${e(roomIdOrAlias)}`,
  body: {},
});

export const leaveRequest = (roomId: string, reason?: string): ClientServerRequest => ({
  method: "POST",
  path: `${CS}/rooms/${e(roomId)}/leave`,
  body: withReason(reason),
});

/** Invite, kick or ban `userId`. */
export const membershipRequest = (
  kind: "invite" | "kick" | "ban",
  roomId: string,
  userId: string,
  reason?: string,
): ClientServerRequest => ({
  method: "POST",
  path: `${CS}/rooms/${e(roomId)}/${kind}`,
  body: { user_id: userId, ...withReason(reason) },
});

export const inviteRequest = (roomId: string, userId: string): ClientServerRequest =>
  membershipRequest("invite", roomId, userId);

export type ProfileField = "displayname" | "avatar_url";
/** Every profile field, in the order they are set. */
export const PROFILE_FIELDS: readonly ProfileField[] = ["displayname", "avatar_url"];

export const profileRequest = (
  userId: string,
  field: ProfileField,
  value: string,
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/profile/${e(userId)}/${field}`,
  body: { [field]: value },
});

export interface CreateRoomFields {
  /** The alias localpart: `foo` for `#foo:server`. */
  alias?: string;
  name?: string;
  topic?: string;
  invite?: string[];
  initialState?: { type: string; state_key?: string; content: Record<string, unknown> }[];
  preset?: "private_chat" | "public_chat" | "trusted_private_chat";
  visibility?: "public" | "private";
  isDirect?: boolean;
  /** The room version (`"11"`); the homeserver's default when absent. */
  roomVersion?: string;
  /** Merged into the room's initial `m.room.power_levels` (`power_level_content_override`). */
  powerLevels?: Record<string, unknown>;
  /** Room version 12 and later: users with the creator's infinite power (`creation_content`). */
  additionalCreators?: string[];
}

export const createRoomRequest = (options: CreateRoomFields): ClientServerRequest => ({
  method: "POST",
  path: `${CS}/createRoom`,
  body: {
    ...(options.alias !== undefined && { room_alias_name: options.alias }),
    ...(options.name !== undefined && { name: options.name }),
    ...(options.topic !== undefined && { topic: options.topic }),
    ...(options.invite && { invite: options.invite }),
    ...(options.initialState && { initial_state: options.initialState }),
    ...(options.preset && { preset: options.preset }),
    ...(options.visibility && { visibility: options.visibility }),
    ...(options.isDirect !== undefined && { is_direct: options.isDirect }),
    ...(options.roomVersion !== undefined && { room_version: options.roomVersion }),
    ...(options.powerLevels && { power_level_content_override: options.powerLevels }),
    ...(options.additionalCreators && {
      creation_content: { additional_creators: options.additionalCreators },
    }),
  },
});

/** What the homeserver supports: `m.room_versions.default` is the version of a new room. */
export const capabilitiesRequest = (): ClientServerRequest => ({
  method: "GET",
  path: `${CS}/capabilities`,
});

/** The room an alias names: `{room_id, servers}`, or 404 `M_NOT_FOUND`. */
export const resolveAliasRequest = (alias: string): ClientServerRequest => ({
  method: "GET",
  path: `${CS}/directory/room/${e(alias)}`,
});

/** `{joined: {userId: {display_name, avatar_url}}}`. */
export const joinedMembersRequest = (roomId: string): ClientServerRequest => ({
  method: "GET",
  path: `${CS}/rooms/${e(roomId)}/joined_members`,
});

/** The room's member events (`membership` of each: join, invite, leave, ban, knock). */
export const membersRequest = (roomId: string): ClientServerRequest => ({
  method: "GET",
  path: `${CS}/rooms/${e(roomId)}/members`,
});

export const eventRequest = (roomId: string, eventId: string): ClientServerRequest => ({
  method: "GET",
  path: `${CS}/rooms/${e(roomId)}/event/${e(eventId)}`,
});

/** A user's global profile: `{displayname?, avatar_url?}`. */
export const readProfileRequest = (userId: string): ClientServerRequest => ({
  method: "GET",
  path: `${CS}/profile/${e(userId)}`,
});

/**
 * The media repository's limits (`m.upload.size`): authenticated since Matrix 1.11, under
 * `/_matrix/media/v3` before.
 */
export const mediaConfigRequest = (authenticated: boolean): ClientServerRequest => ({
  method: "GET",
  path: authenticated ? "/_matrix/client/v1/media/config" : "/_matrix/media/v3/config",
});

/** An `mxc://` URI to upload to later (Matrix 1.7): `{content_uri, unused_expires_at?}`. */
export const createMediaRequest = (): ClientServerRequest => ({
  method: "POST",
  path: "/_matrix/media/v1/create",
  body: {},
});

const fileNameQuery = (fileName: string | undefined) =>
  fileName !== undefined ? { query: { filename: fileName } } : {};

/** Uploads to a URI `createMediaRequest` gave, or without one (a new URI, `{content_uri}`). */
export const uploadMediaRequest = (
  content: { bytes: Uint8Array; type: string },
  fileName?: string,
  to?: { serverName: string; mediaId: string },
): ClientServerRequest => ({
  method: to ? "PUT" : "POST",
  path: to
    ? `/_matrix/media/v3/upload/${e(to.serverName)}/${e(to.mediaId)}`
    : "/_matrix/media/v3/upload",
  content,
  ...fileNameQuery(fileName),
});

/** A media's bytes, read up to `maxBytes`: authenticated since Matrix 1.11, under v3 before. */
export const downloadMediaRequest = (
  serverName: string,
  mediaId: string,
  maxBytes: number,
  authenticated: boolean,
): ClientServerRequest => ({
  method: "GET",
  path: `${authenticated ? "/_matrix/client/v1/media" : "/_matrix/media/v3"}/download/${e(serverName)}/${e(mediaId)}`,
  maxResponseBytes: maxBytes,
});

/** The room's visibility in the directory of the appservice's network `networkId`. */
export const directoryVisibilityRequest = (
  networkId: string,
  roomId: string,
  visibility: "public" | "private",
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/directory/list/appservice/${e(networkId)}/${e(roomId)}`,
  body: { visibility },
});

/** `timeoutMs` only while typing, as the spec asks. */
export const typingRequest = (
  roomId: string,
  userId: string,
  typing: boolean,
  timeoutMs: number,
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/rooms/${e(roomId)}/typing/${e(userId)}`,
  body: { typing, ...(typing && { timeout: timeoutMs }) },
});

export const receiptRequest = (
  roomId: string,
  eventId: string,
  type: "m.read" | "m.read.private",
): ClientServerRequest => ({
  method: "POST",
  path: `${CS}/rooms/${e(roomId)}/receipt/${e(type)}/${e(eventId)}`,
  body: {},
});

/** To-device messages: by user ID, then device ID (`*`: all the user's devices), each's content. */
export type ToDeviceMessages = Record<string, Record<string, Record<string, unknown>>>;

export const toDeviceRequest = (
  type: string,
  txnId: string,
  messages: ToDeviceMessages,
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/sendToDevice/${e(type)}/${e(txnId)}`,
  body: { messages },
});

export type Presence = "online" | "offline" | "unavailable";

export const presenceRequest = (
  userId: string,
  presence: Presence,
  statusMessage?: string,
): ClientServerRequest => ({
  method: "PUT",
  path: `${CS}/presence/${e(userId)}/status`,
  body: { presence, ...(statusMessage !== undefined && { status_msg: statusMessage }) },
});

/** Registers an appservice user; `inhibit_login` because we never need its access token. */
export const registerRequest = (userId: string): ClientServerRequest => ({
  method: "POST",
  path: `${CS}/register`,
  body: {
    type: "m.login.application_service",
    username: userId.slice(1, userId.indexOf(":")),
    inhibit_login: true,
  },
});
