import { type FifoMessage, MAX_MESSAGE_BYTES, queueJson } from "../../queue/queue.ts";
import { sha256 } from "../../shared/hash.ts";
import type {
  ClientEvent,
  DeviceData,
  EphemeralEvent,
  ToDeviceMessage,
  Transaction,
} from "../protocol/transaction.ts";

/** One thing the application is told about, with the ID its exactly-once claim is keyed on. */
export type InboundItem =
  | { kind: "event"; id: string; event: ClientEvent }
  | { kind: "ephemeral"; id: string; event: EphemeralEvent }
  | { kind: "to_device"; id: string; message: ToDeviceMessage }
  | { kind: "devices"; id: string; devices: DeviceData };

/**
 * An item too large for a queue message, queued by reference: its JSON is set aside in the store
 * under its hash (`SetAsideItem`), and read back by the consumer once it holds the item's claim.
 */
export interface ItemReference {
  kind: "reference";
  /** The item's kind and ID: its claim key, as if it were queued whole. */
  of: InboundItem["kind"];
  id: string;
  roomId?: string;
  sha256: string;
  bytes: number;
}

/** An item's JSON, kept in the store before the reference to it is queued. */
export interface SetAsideItem {
  sha256: string;
  json: string;
}

/** A transaction's items as queue messages, and the items set aside that they refer to. */
export interface InboundBatch {
  messages: FifoMessage[];
  setAside: SetAsideItem[];
}

/** The body of one inbound queue message: items of one ordering group, in stream order. */
export interface InboundMessage {
  txnId: string;
  items: (InboundItem | ItemReference)[];
  /**
   * On the first message of a transaction with room events but no one-time-key counts (MSC3202):
   * a copy the homeserver retried after a failed delivery. Synapse counts the appservice's
   * sender's keys in every transaction it sends, but retries a failed one (and sends those made
   * while it holds the appservice down) with its events alone: the to-device messages,
   * device-list changes and key counts of that time are lost, and the bot's device must query
   * every user it tracks again (`markAllTrackedUsersAsDirty`).
   */
  extensionsLost?: true;
}

/** Whether the transaction looks like a retried, events-only copy (`extensionsLost`). */
export const extensionsLost = (transaction: Transaction) =>
  transaction.events.length > 0 && transaction.devices?.oneTimeKeysCount === undefined;

/**
 * The hash that tells a retry from a reused txnId. Only `events` counts: Synapse's retries
 * carry the same events but omit ephemeral, to-device and device data.
 */
export const transactionHash = (transaction: Transaction): string =>
  sha256(JSON.stringify(transaction.events));

/**
 * Items in stream order with the queue group that keeps their order: the room for room
 * data, the user for presence and to-device messages. Events are keyed by event ID; the
 * rest, which has no ID, by a hash of the txnId, its position and its content, so that
 * a retry of the same transaction derives the same IDs.
 */
export function inboundItems(
  txnId: string,
  transaction: Transaction,
): { groupId: string; item: InboundItem }[] {
  const derivedId = (kind: string, index: number, value: unknown) =>
    sha256(`${txnId}\n${kind}\n${index}\n${JSON.stringify(value)}`);
  return [
    ...transaction.events.map((event) => ({
      groupId: event.room_id,
      item: { kind: "event", id: event.event_id, event } as const,
    })),
    ...transaction.ephemeral.map((event, i) => ({
      groupId: event.room_id ?? event.sender ?? "ephemeral",
      item: { kind: "ephemeral", id: derivedId("ephemeral", i, event), event } as const,
    })),
    ...transaction.toDevice.map((message, i) => ({
      groupId: message.to_user_id,
      item: { kind: "to_device", id: derivedId("to_device", i, message), message } as const,
    })),
    ...(transaction.devices
      ? [
          {
            groupId: "devices",
            item: {
              kind: "devices",
              id: derivedId("devices", 0, transaction.devices),
              devices: transaction.devices,
            } as const,
          },
        ]
      : []),
  ];
}

const referenceTo = (item: InboundItem, json: string): ItemReference => {
  const roomId =
    item.kind === "event" || item.kind === "ephemeral" ? item.event.room_id : undefined;
  return {
    kind: "reference",
    of: item.kind,
    id: item.id,
    ...(roomId && { roomId }),
    sha256: sha256(json),
    bytes: Buffer.byteLength(json),
  };
};

/**
 * Packs the transaction's items into FIFO messages: one per group where they fit,
 * several in order where they don't. The deduplication ID hashes the item IDs carried. An item
 * too large for a message on its own (an event's content and `unsigned` have no bound the
 * homeserver enforces for us) is set aside and queued by reference in its place: a transaction
 * is never refused for its size.
 */
export function inboundMessages(txnId: string, transaction: Transaction): InboundBatch {
  const groups = new Map<string, InboundItem[]>();
  for (const { groupId, item } of inboundItems(txnId, transaction)) {
    const items = groups.get(groupId);
    if (items) items.push(item);
    else groups.set(groupId, [item]);
  }
  // The body is `queueJson({ txnId, items })`, assembled from each item's JSON so that every
  // item is serialized once, for its size and for the body alike.
  const lost = extensionsLost(transaction);
  const envelope = (itemsJson: string, flagged: boolean) =>
    `{"txnId":${queueJson(txnId)},"items":[${itemsJson}]${flagged ? ',"extensionsLost":true' : ""}}`;
  const envelopeBytes = Buffer.byteLength(envelope("", lost));
  const messages: FifoMessage[] = [];
  const setAside: SetAsideItem[] = [];
  for (const [groupId, items] of groups) {
    let chunk: { item: InboundItem | ItemReference; json: string }[] = [];
    let chunkBytes = envelopeBytes;
    const flush = () => {
      if (chunk.length === 0) return;
      messages.push({
        groupId,
        deduplicationId: sha256(
          chunk.map(({ item }) => `${"of" in item ? item.of : item.kind}:${item.id}`).join("\n"),
        ),
        body: envelope(chunk.map(({ json }) => json).join(","), lost && messages.length === 0),
      });
      chunk = [];
      chunkBytes = envelopeBytes;
    };
    for (const whole of items) {
      let item: InboundItem | ItemReference = whole;
      let json = queueJson(whole);
      if (envelopeBytes + Buffer.byteLength(json) + 1 > MAX_MESSAGE_BYTES) {
        item = referenceTo(whole, json);
        setAside.push({ sha256: item.sha256, json });
        json = queueJson(item);
      }
      const itemBytes = Buffer.byteLength(json) + 1;
      if (chunkBytes + itemBytes > MAX_MESSAGE_BYTES) flush();
      chunk.push({ item, json });
      chunkBytes += itemBytes;
    }
    flush();
  }
  return { messages, setAside };
}
