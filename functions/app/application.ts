import type { Log } from "../appservice/log.ts";
import type {
  ClientEvent,
  DeviceData,
  EphemeralEvent,
  ToDeviceMessage,
} from "../appservice/transaction.ts";
import type { Actions } from "../matrix/actions.ts";

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
}
