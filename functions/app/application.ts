import type { Log } from "../appservice/log.ts";
import type {
  ClientEvent,
  DeviceData,
  EphemeralEvent,
  ToDeviceMessage,
} from "../appservice/transaction.ts";
import type { Actions, CreateRoomOptions } from "../matrix/actions.ts";

export interface ApplicationContext {
  /** The homeserver transaction that delivered the item. */
  txnId: string;
  log: Log;
  /**
   * Calls on the homeserver, queued and performed by the outbox. Their IDs derive from the item
   * being handled, so a handler that runs again asks for the same calls, which are deduplicated.
   */
  actions: Actions;
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
 * What an appservice application implements. Each callback runs exactly once per item
 * (per event ID for events), in stream order within a room; a callback that throws is
 * retried later, and so is everything after it in the same room.
 */
export interface Application {
  onEvent?(event: ClientEvent, context: ApplicationContext): Promise<void> | void;
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
}
