// zod/mini: tree-shakeable, so the transactions bundle stays small (full zod adds ~440 KB).
import * as z from "zod/mini";
import { badJson } from "../../shared/errors.ts";

const json = z.record(z.string(), z.unknown());

/** A ClientEvent as the homeserver pushes it; only what the pipeline relies on is checked. */
const clientEvent = z.looseObject({
  event_id: z.string().check(z.minLength(1)),
  room_id: z.string().check(z.minLength(1)),
  type: z.string(),
  sender: z.string(),
  content: json,
  state_key: z.optional(z.string()),
  origin_server_ts: z.optional(z.number()),
});
/** `m.presence`, `m.typing`, `m.receipt`: typing and receipts carry a `room_id`. */
const ephemeralEvent = z.looseObject({
  type: z.string(),
  content: json,
  room_id: z.optional(z.string()),
  sender: z.optional(z.string()),
});
const toDeviceMessage = z.looseObject({
  type: z.string(),
  sender: z.string(),
  to_user_id: z.string(),
  to_device_id: z.string(),
  content: json,
});
const deviceLists = z.looseObject({
  changed: z.optional(z.array(z.string())),
  left: z.optional(z.array(z.string())),
});
const oneTimeKeysCount = z.record(
  z.string(),
  z.record(z.string(), z.record(z.string(), z.number())),
);
const fallbackKeyTypes = z.record(z.string(), z.record(z.string(), z.array(z.string())));

const transactionBody = z.looseObject({
  events: z.array(clientEvent),
  ephemeral: z.optional(z.array(ephemeralEvent)),
  "de.sorunome.msc2409.ephemeral": z.optional(z.array(ephemeralEvent)),
  to_device: z.optional(z.array(toDeviceMessage)),
  "de.sorunome.msc2409.to_device": z.optional(z.array(toDeviceMessage)),
  device_lists: z.optional(deviceLists),
  "org.matrix.msc3202.device_lists": z.optional(deviceLists),
  device_one_time_keys_count: z.optional(oneTimeKeysCount),
  "org.matrix.msc3202.device_one_time_keys_count": z.optional(oneTimeKeysCount),
  // Synapse also sends this misspelling of the MSC3202 name.
  "org.matrix.msc3202.device_one_time_key_counts": z.optional(oneTimeKeysCount),
  device_unused_fallback_key_types: z.optional(fallbackKeyTypes),
  "org.matrix.msc3202.device_unused_fallback_key_types": z.optional(fallbackKeyTypes),
});

export type ClientEvent = z.infer<typeof clientEvent>;

/** Whether `event` invites `userId` (the bot, typically) into its room. */
export const isInviteOf = (event: ClientEvent, userId: string) =>
  event.type === "m.room.member" &&
  event.state_key === userId &&
  event.content.membership === "invite";
export type EphemeralEvent = z.infer<typeof ephemeralEvent>;
export type ToDeviceMessage = z.infer<typeof toDeviceMessage>;

/** Device list changes and key counts (MSC3202), passed on together. */
export interface DeviceData {
  deviceLists?: z.infer<typeof deviceLists>;
  oneTimeKeysCount?: z.infer<typeof oneTimeKeysCount>;
  unusedFallbackKeyTypes?: z.infer<typeof fallbackKeyTypes>;
}

/** A transaction with the unstable field names folded into the stable ones. */
export interface Transaction {
  events: ClientEvent[];
  ephemeral: EphemeralEvent[];
  toDevice: ToDeviceMessage[];
  devices?: DeviceData;
}

const describeIssues = (error: z.core.$ZodError) =>
  error.issues
    .slice(0, 5)
    .map((issue) => `${issue.path.join(".") || "body"}: ${issue.message}`)
    .join("; ");

const withoutUndefined = <T extends object>(value: T): T =>
  Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;

/** Validates a parsed transaction body. Where both the stable and unstable keys arrive, the stable one wins. */
export function parseTransaction(body: unknown): Transaction {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw badJson("The transaction body must be a JSON object");
  }
  if (!Array.isArray((body as { events?: unknown }).events)) {
    throw badJson("'events' is required and must be an array");
  }
  const parsed = transactionBody.safeParse(body);
  if (!parsed.success) throw badJson(`Invalid transaction: ${describeIssues(parsed.error)}`);
  const b = parsed.data;
  const devices: DeviceData = withoutUndefined({
    deviceLists: b.device_lists ?? b["org.matrix.msc3202.device_lists"],
    oneTimeKeysCount:
      b.device_one_time_keys_count ??
      b["org.matrix.msc3202.device_one_time_keys_count"] ??
      b["org.matrix.msc3202.device_one_time_key_counts"],
    unusedFallbackKeyTypes:
      b.device_unused_fallback_key_types ??
      b["org.matrix.msc3202.device_unused_fallback_key_types"],
  });
  return {
    events: b.events,
    ephemeral: b.ephemeral ?? b["de.sorunome.msc2409.ephemeral"] ?? [],
    toDevice: b.to_device ?? b["de.sorunome.msc2409.to_device"] ?? [],
    ...(Object.keys(devices).length > 0 && { devices }),
  };
}
