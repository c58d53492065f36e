import { type FifoMessage, MAX_MESSAGE_BYTES, queueJson } from "../../queue/queue.ts";
import { tooLarge } from "../../shared/errors.ts";
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

/** The body of one inbound queue message: items of one ordering group, in stream order. */
export interface InboundMessage {
  txnId: string;
  items: InboundItem[];
}

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

/**
 * Packs the transaction's items into FIFO messages: one per group where they fit,
 * several in order where they don't. The deduplication ID hashes the item IDs carried.
 */
export function inboundMessages(txnId: string, transaction: Transaction): FifoMessage[] {
  const groups = new Map<string, InboundItem[]>();
  for (const { groupId, item } of inboundItems(txnId, transaction)) {
    const items = groups.get(groupId);
    if (items) items.push(item);
    else groups.set(groupId, [item]);
  }
  // The body is `queueJson({ txnId, items })`, assembled from each item's JSON so that every
  // item is serialized once, for its size and for the body alike.
  const envelope = (itemsJson: string) => `{"txnId":${queueJson(txnId)},"items":[${itemsJson}]}`;
  const envelopeBytes = Buffer.byteLength(envelope(""));
  const messages: FifoMessage[] = [];
  for (const [groupId, items] of groups) {
    let chunk: { item: InboundItem; json: string }[] = [];
    let chunkBytes = envelopeBytes;
    const flush = () => {
      if (chunk.length === 0) return;
      messages.push({
        groupId,
        deduplicationId: sha256(chunk.map(({ item }) => `${item.kind}:${item.id}`).join("\n")),
        body: envelope(chunk.map(({ json }) => json).join(",")),
      });
      chunk = [];
      chunkBytes = envelopeBytes;
    };
    for (const item of items) {
      const json = queueJson(item);
      const itemBytes = Buffer.byteLength(json) + 1;
      if (envelopeBytes + itemBytes > MAX_MESSAGE_BYTES) {
        throw tooLarge(`A ${item.kind} item (${item.id}) is over ${MAX_MESSAGE_BYTES} bytes`);
      }
      if (chunkBytes + itemBytes > MAX_MESSAGE_BYTES) flush();
      chunk.push({ item, json });
      chunkBytes += itemBytes;
    }
    flush();
  }
  return messages;
}
