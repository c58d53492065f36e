import type { Actions, CreateRoomOptions } from "../matrix/actions.ts";
import type { HomeserverCalls } from "../matrix/homeserver-calls.ts";
import type { Log } from "../shared/log.ts";
import type { AppDataStore } from "../store/app-data.ts";
import type { DeliveryOutcome } from "../store/delivery-outcomes.ts";
import type { LinkMap } from "../store/links.ts";
import type {
  ClientEvent,
  DeviceData,
  EphemeralEvent,
  ToDeviceMessage,
} from "./protocol/transaction.ts";

/** What every handler of the application is given to act with. */
export interface ServiceContext {
  log: Log;
  /**
   * Calls on the homeserver, queued and performed by the outbox. For an event, their IDs derive
   * from it, so a handler that runs again asks for the same calls, which are deduplicated.
   */
  actions: Actions;
  /**
   * Calls made at once, for answers the handler needs before it goes on: rooms created once
   * under a key, media uploaded once per content, members, aliases, events, profiles, state,
   * puppets made ready, power levels. Bounded in time; they throw when they cannot succeed.
   */
  homeserver: HomeserverCalls;
  /** The application's own data, kept in the appservice's table. */
  data: AppDataStore;
  /** Portals, in `data`: remote channel IDs ↔ room IDs, one to one. */
  portals: LinkMap;
  /** Puppets, in `data`: remote user IDs ↔ Matrix user IDs, one to one. */
  puppets: LinkMap;
  /**
   * A portal's message map, in `data`: remote message IDs ↔ the event IDs of the Matrix events
   * they became, one to one. The outbox links each send queued with a `remoteId` once sent.
   */
  messages(roomId: string): MessageMap;
  /** Where the application's HTTP routes are reached from outside (no trailing slash). */
  publicBaseUrl: string;
  /**
   * A secret for `label` (256 bits, base64url), derived from the as_token: unguessable, and the
   * same whenever the label is, so a handler run again hands out the same secret.
   */
  deriveSecret(label: string): string;
  /**
   * Whether the user is the appservice's own (the registration's user namespaces: the bot's
   * virtual users, its puppets), so that what they write is never sent back out.
   */
  ownsUser(userId: string): boolean;
  /**
   * Why `actions.deliver` to `url` would be refused (its shape, or an address the operator's
   * policy refuses, the name resolved now); undefined when it would go out.
   */
  deliveryTargetProblem(url: string): Promise<string | undefined>;
  /** How the last attempt of a delivery queued with this `outcomeKey` went, as recorded. */
  deliveryOutcome(key: string): Promise<DeliveryOutcome | undefined>;
  /**
   * The event IDs of sends asked for with `actions.recordingEventIds()` (the IDs the sends
   * returned), once the homeserver has taken them all; undefined past `timeoutMs`, when they
   * still go.
   */
  sentEventIds(sendIds: string[], timeoutMs: number): Promise<string[] | undefined>;
  /**
   * Whether the remote service signed `request` (Standard Webhooks' `webhook-*` headers, or
   * until 0.3.0 `X-Relay-*`, over its raw bytes, within 5 minutes) with the secret shared with it; false when there is none.
   * The secret itself stays out of the application's reach.
   */
  remoteSignatureValid(request: Pick<AppRequest, "headers" | "bytes">): boolean;
}

/** One portal's messages (`ServiceContext.messages`): `matrixId` is an event ID. */
export interface MessageMap extends LinkMap {
  /**
   * The event ID of the remote message's send, once the outbox has linked it: read again for up
   * to `timeoutMs` (0, the default: read once), as a send queued just before is in the room's
   * queue ahead of what comes after. Undefined when still none.
   */
  eventIdOf(remoteId: string, timeoutMs?: number): Promise<string | undefined>;
}

export interface ApplicationContext extends ServiceContext {
  /** The homeserver transaction that delivered the item. */
  txnId: string;
}

/** A request to one of the application's HTTP routes. */
export interface AppRequest {
  method: string;
  /** The route's `{name}` parameters, percent-decoded. */
  pathParameters: Record<string, string>;
  query: Record<string, string>;
  /** Lower-case names. */
  headers: Record<string, string>;
  /** The body as text (UTF-8). */
  body: string;
  /** The body's bytes as sent: a file's intact, where `body` would have mangled them. */
  bytes: Uint8Array;
}

export interface AppResponse {
  status: number;
  /** Sent as JSON. */
  body?: unknown;
  /** Lower-case names (`retry-after`); `content-type` is JSON's. */
  headers?: Record<string, string>;
}

/** An HTTP route of the application's own, served beside the appservice API. */
export interface AppRoute {
  method: "GET" | "PUT" | "POST" | "DELETE";
  /** API Gateway syntax (`/webhook/{id}`); it must not be one of the appservice's paths. */
  path: string;
  /** Requests per second API Gateway lets through (twice that in a burst). @default 20 */
  rateLimit?: number;
  /**
   * The largest body `handle` takes. Local mode refuses a larger one (413) before reading it;
   * `handle` must still check, as API Gateway passes up to Lambda's 6 MB. @default 6 MB
   */
  maxBodyBytes?: number;
  /**
   * Handles one request. Each request's actions are new ones: a client that repeats its request
   * asks for the calls again.
   */
  handle(request: AppRequest, context: ServiceContext): Promise<AppResponse> | AppResponse;
}

/** A virtual user to create when the homeserver asks about it. */
export interface UserProfile {
  displayName?: string;
  /** An `mxc://` URI. */
  avatarUrl?: string;
}

/** The room to create, as the bot, when the homeserver asks about an alias. */
export type AliasRoom = Omit<CreateRoomOptions, "alias" | "as">;

/** Third-party network shapes, as the spec defines them (`protocols.yaml`). */
export interface ThirdPartyProtocol {
  user_fields: string[];
  location_fields: string[];
  icon: string;
  field_types: Record<string, { regexp: string; placeholder: string }>;
  instances: { desc: string; icon?: string; fields: Record<string, string>; network_id: string }[];
}
export interface ThirdPartyUser {
  userid: string;
  protocol: string;
  fields: Record<string, string>;
}
export interface ThirdPartyLocation {
  alias: string;
  protocol: string;
  fields: Record<string, string>;
}

/** Lookups the homeserver forwards for clients; every one optional. */
export interface ThirdParty {
  protocols?: Record<string, ThirdPartyProtocol>;
  users?(
    protocol: string,
    fields: Record<string, string>,
  ): Promise<ThirdPartyUser[]> | ThirdPartyUser[];
  locations?(
    protocol: string,
    fields: Record<string, string>,
  ): Promise<ThirdPartyLocation[]> | ThirdPartyLocation[];
  /** `GET /thirdparty/user?userid=`: the remote users a Matrix user ID stands for. */
  usersByUserId?(userId: string): Promise<ThirdPartyUser[]> | ThirdPartyUser[];
  /** `GET /thirdparty/location?alias=`: the remote locations a room alias stands for. */
  locationsByAlias?(alias: string): Promise<ThirdPartyLocation[]> | ThirdPartyLocation[];
}

export interface QueryContext {
  log: Log;
}

/**
 * How an `m.room.encrypted` event reached the application: decrypted (its `type` and `content`
 * are then the clear event's), or not, with the reason (its `content` is then the ciphertext).
 * Decrypted only from devices their owner cross-signed (Element's strict policy): a message from
 * any other device is `undecryptable` (`UnsignedSenderDevice`, `UnknownSenderDevice`). One whose
 * room key never came is held back a while, then `undecryptable` (`MissingRoomKey`).
 */
export type EventDecryption =
  | {
      status: "decrypted";
      senderTrust: "cross-signed";
      senderDevice?: string;
      /**
       * Delivered again, decrypted, after it reached `onEvent` `undecryptable` (`MissingRoomKey`):
       * its room key came after the wait. Once, outside its room's order.
       */
      late?: true;
    }
  | { status: "undecryptable"; reason: string };

/** An event as `onEvent` gets it: marked when it came encrypted. */
export type DeliveredEvent = ClientEvent & { decryption?: EventDecryption };

/**
 * What an appservice application implements. Each callback runs exactly once per item
 * (per event ID for events), in stream order within a room; a callback that throws is
 * retried later, and so is everything after it in the same room.
 */
export interface Application {
  /** An event; an encrypted one decrypted where the bot could, and marked (`decryption`). */
  onEvent?(event: DeliveredEvent, context: ApplicationContext): Promise<void> | void;
  /** `m.typing`, `m.receipt` (with `room_id`) and `m.presence`; needs `receive_ephemeral`. */
  onEphemeral?(event: EphemeralEvent, context: ApplicationContext): Promise<void> | void;
  onToDevice?(message: ToDeviceMessage, context: ApplicationContext): Promise<void> | void;
  /** Device list changes and one-time/fallback key counts (MSC3202). */
  onDeviceData?(data: DeviceData, context: ApplicationContext): Promise<void> | void;
  /**
   * The homeserver asks whether a user of our namespace exists: return a profile to have it
   * created (registered, profile set) before the homeserver gets its answer, or nothing for 404.
   */
  onUserQuery?(
    userId: string,
    context: QueryContext,
  ): Promise<UserProfile | undefined> | UserProfile | undefined;
  /** The same for a room alias of our namespace: return the room to create under it. */
  onAliasQuery?(
    alias: string,
    context: QueryContext,
  ): Promise<AliasRoom | undefined> | AliasRoom | undefined;
  thirdParty?: ThirdParty;
  /** HTTP routes of its own (webhooks, OAuth callbacks, …), deployed and served locally alike. */
  routes?: AppRoute[];
  /**
   * Localpart prefixes of the virtual users it acts as (`_webhook_` for `@_webhook_ci:server`):
   * generated registrations claim them as exclusive user namespaces.
   */
  userPrefixes?: string[];
  /**
   * Localpart prefixes of the room aliases it creates (`_relay_` for `#_relay_general:server`),
   * beside the registration's own prefix: generated registrations claim them as exclusive alias
   * namespaces. `homeserver.createRoom` refuses an alias outside the namespaces.
   */
  aliasPrefixes?: string[];
  /**
   * Tables the operator console shows of the application (`/admin`), each loaded when the
   * operator looks: from its data, never acting.
   */
  consoleSections?: ConsoleSection[];
}

/** A column of a console section: `key` is the rows' field it shows, as text. */
export interface ConsoleColumn {
  key: string;
  label: string;
  /** The field is an ISO 8601 time: the page shows it in the reader's local time (the ISO in its title). */
  time?: true;
}

/** A console section's row: its fields by column key (more may be there, for API clients). */
export type ConsoleRow = Record<string, string | number | boolean | null | undefined>;

/** An outbound call of the console's recent traffic (the outbox's log lines). */
export interface RecentCall {
  /** ISO 8601. */
  at: string;
  roomId?: string;
  userId?: string;
  status?: number;
  outcome: "done" | "retry" | "dead";
}

/** What a section's loader reads with: the application's context, and the console's own. */
export interface ConsoleContext extends ServiceContext {
  /** The recent outbound calls, newest first. */
  recentCalls(): Promise<RecentCall[]>;
}

/** A table of the operator console, declared by the application (the page renders any). */
export interface ConsoleSection {
  /**
   * In the API's path (`/admin/api/sections/{id}`): 1 to 64 of a-z, 0-9 and `-`, unique (the
   * console refuses others when it is built).
   */
  id: string;
  title: string;
  columns: ConsoleColumn[];
  rows(context: ConsoleContext): Promise<ConsoleRow[]>;
}

/**
 * The parts of an application each Lambda function runs. The application's folder exports each
 * from a module of its own (`events.ts`, `queries.ts`, `routes.ts`, `operator.ts`), so that a function bundles
 * only the code, and the npm packages, of its part.
 */
/** The `events` function's part: the items of transactions. */
export type ApplicationEvents = Pick<
  Application,
  "onEvent" | "onEphemeral" | "onToDevice" | "onDeviceData"
>;
/** The `queries` function's part: the homeserver's user, alias and third-party queries. */
export type ApplicationQueries = Pick<Application, "onUserQuery" | "onAliasQuery" | "thirdParty">;
/** The `app` function's part: the application's own HTTP routes. */
export type ApplicationRoutes = Pick<Application, "routes">;
/** The `admin` function's part: what the operator console shows of it. */
export type ApplicationOperator = Pick<Application, "consoleSections">;
