import { z } from "zod";
import { badJson } from "./errors.ts";

const json = z.record(z.string(), z.unknown());

/** A ClientEvent as the homeserver pushes it; only what the pipeline relies on is checked. */
const clientEvent = z.looseObject({
  event_id: z.string().min(1),
  room_id: z.string().min(1),
  type: z.string(),
  sender: z.string(),
  content: json,
  state_key: z.string().optional(),
  origin_server_ts: z.number().optional(),
});
/** `m.presence`, `m.typing`, `m.receipt`: typing and receipts carry a `room_id`. */
const ephemeralEvent = z.looseObject({
  type: z.string(),
  content: json,
  room_id: z.string().optional(),
  sender: z.string().optional(),
});
const toDeviceMessage = z.looseObject({
  type: z.string(),
  sender: z.string(),
  to_user_id: z.string(),
  to_device_id: z.string(),
  content: json,
});
const deviceLists = z.looseObject({
  changed: z.array(z.string()).optional(),
  left: z.array(z.string()).optional(),
});
const oneTimeKeysCount = z.record(
  z.string(),
  z.record(z.string(), z.record(z.string(), z.number())),
);
const fallbackKeyTypes = z.record(z.string(), z.record(z.string(), z.array(z.string())));

const transactionBody = z.looseObject({
  events: z.array(clientEvent),
  ephemeral: z.array(ephemeralEvent).optional(),
  "de.sorunome.msc2409.ephemeral": z.array(ephemeralEvent).optional(),
  to_device: z.array(toDeviceMessage).optional(),
  "de.sorunome.msc2409.to_device": z.array(toDeviceMessage).optional(),
  device_lists: deviceLists.optional(),
  "org.matrix.msc3202.device_lists": deviceLists.optional(),
  device_one_time_keys_count: oneTimeKeysCount.optional(),
  "org.matrix.msc3202.device_one_time_keys_count": oneTimeKeysCount.optional(),
  // Synapse also sends this misspelling of the MSC3202 name.
  "org.matrix.msc3202.device_one_time_key_counts": oneTimeKeysCount.optional(),
  device_unused_fallback_key_types: fallbackKeyTypes.optional(),
  "org.matrix.msc3202.device_unused_fallback_key_types": fallbackKeyTypes.optional(),
});

export type ClientEvent = z.infer<typeof clientEvent>;
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

const describeIssues = (error: z.ZodError) =>
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
