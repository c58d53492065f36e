import type { InboundItem, InboundMessage, ItemReference } from "../appservice/pipeline/inbound.ts";
import { claimKey } from "../appservice/pipeline/process-inbound.ts";
import { isObject } from "../matrix/request.ts";
import { isQueuedAction as isAction, type QueuedAction } from "../outbox/decide.ts";
import type { FailureReason } from "../queue/outbound.ts";
import { type FifoMessage, queueJson } from "../queue/queue.ts";
import { sha256 } from "../shared/hash.ts";
import type { Direction, StoredDeadLetter } from "../store/dead-letters.ts";

/** A dead letter as the operator sees it: never the content of what failed. */
export interface DeadLetterView {
  id: string;
  direction: Direction;
  /** The room it concerns, where it has one. */
  roomId?: string;
  /** Its FIFO group: the room, else the user. */
  group: string;
  /** `send`, `join`, … (outbound); `event`, `ephemeral`, … (inbound); `message` (several items). */
  kind: string;
  reason: FailureReason;
  attempts?: number;
  /** ISO 8601. */
  failedAt: string;
  ageSeconds: number;
  txnId?: string;
  /** The outbound action's ID (its idempotency key), or the inbound item's. */
  key?: string;
}

/** Set aside by SQS's own redrive (its receive limit), not by a consumer's decision. */
const REDRIVEN = "set aside by the queue after its receive limit (never decided on)";

type Parsed =
  | { shape: "action"; action: QueuedAction; reason: FailureReason; attempts?: number }
  | {
      shape: "item";
      txnId: string;
      item: InboundItem | ItemReference;
      reason: FailureReason;
      attempts?: number;
    }
  | { shape: "message"; message: InboundMessage }
  /** An outbound message that was no action, set aside as `{body, reason, …}`: not replayable. */
  | { shape: "body"; reason: FailureReason; attempts?: number }
  | { shape: "unreadable" };

const isItem = (value: unknown): value is InboundItem | ItemReference =>
  isObject(value) && typeof value.kind === "string" && typeof value.id === "string";
const reasonOf = (value: unknown): FailureReason =>
  isObject(value) && typeof value.error === "string"
    ? {
        ...(typeof value.status === "number" && { status: value.status }),
        ...(typeof value.errcode === "string" && { errcode: value.errcode }),
        error: value.error,
      }
    : { error: "no reason recorded" };
const attemptsOf = (value: unknown) => (typeof value === "number" ? { attempts: value } : {});

/** The shapes the consumers and SQS's redrive write (docs/reliability.md). */
function parse(letter: StoredDeadLetter): Parsed {
  let body: unknown;
  try {
    body = JSON.parse(letter.body);
  } catch {
    return { shape: "unreadable" };
  }
  if (!isObject(body)) return { shape: "unreadable" };
  if (letter.direction === "outbound") {
    if (isAction(body.action)) {
      return {
        shape: "action",
        action: body.action,
        reason: reasonOf(body.reason),
        ...attemptsOf(body.attempts),
      };
    }
    if (isAction(body)) return { shape: "action", action: body, reason: { error: REDRIVEN } };
    if (typeof body.body === "string" && isObject(body.reason)) {
      return { shape: "body", reason: reasonOf(body.reason), ...attemptsOf(body.attempts) };
    }
    return { shape: "unreadable" };
  }
  if (typeof body.txnId !== "string") return { shape: "unreadable" };
  if (isItem(body.item)) {
    return {
      shape: "item",
      txnId: body.txnId,
      item: body.item,
      reason: reasonOf(body.reason),
      ...attemptsOf(body.attempts),
    };
  }
  if (Array.isArray(body.items) && body.items.every(isItem)) {
    return { shape: "message", message: { txnId: body.txnId, items: body.items } };
  }
  return { shape: "unreadable" };
}

const roomOfItem = (item: InboundItem | ItemReference): string | undefined =>
  item.kind === "reference"
    ? item.roomId
    : item.kind === "event" || item.kind === "ephemeral"
      ? item.event.room_id
      : undefined;

export function viewDeadLetter(letter: StoredDeadLetter, now: number): DeadLetterView {
  const parsed = parse(letter);
  const base = {
    id: letter.id,
    direction: letter.direction,
    group: letter.groupId,
    ageSeconds: Math.max(0, Math.round((now - letter.sentAt) / 1000)),
  };
  const failedAtOf = (value: unknown) => {
    const recorded = isObject(value) && typeof value.failedAt === "string" ? value.failedAt : "";
    return Number.isNaN(Date.parse(recorded)) ? new Date(letter.sentAt).toISOString() : recorded;
  };
  const failedAt = failedAtOf(parsed.shape === "unreadable" ? {} : JSON.parse(letter.body));
  switch (parsed.shape) {
    case "action":
      return {
        ...base,
        kind: parsed.action.kind,
        ...(parsed.action.roomId && { roomId: parsed.action.roomId }),
        reason: parsed.reason,
        ...(parsed.attempts !== undefined && { attempts: parsed.attempts }),
        failedAt,
        key: parsed.action.id,
      };
    case "item": {
      const roomId = roomOfItem(parsed.item);
      return {
        ...base,
        kind: parsed.item.kind === "reference" ? parsed.item.of : parsed.item.kind,
        ...(roomId && { roomId }),
        reason: parsed.reason,
        ...(parsed.attempts !== undefined && { attempts: parsed.attempts }),
        failedAt,
        txnId: parsed.txnId,
        key: parsed.item.id,
      };
    }
    case "message": {
      const roomId = parsed.message.items.map(roomOfItem).find((room) => room !== undefined);
      return {
        ...base,
        kind: "message",
        ...(roomId && { roomId }),
        reason: { error: `${REDRIVEN}: ${parsed.message.items.length} items` },
        failedAt,
        txnId: parsed.message.txnId,
      };
    }
    case "body":
      return {
        ...base,
        kind: "unknown",
        reason: parsed.reason,
        ...(parsed.attempts !== undefined && { attempts: parsed.attempts }),
        failedAt,
      };
    case "unreadable":
      return { ...base, kind: "unknown", reason: { error: "unreadable dead letter" }, failedAt };
  }
}

/** What replaying a dead letter takes: what to reset first, and the message to queue again. */
export interface ReplayPlan {
  direction: Direction;
  message: FifoMessage;
  /** An inbound item set aside as done: made claimable again first. */
  reopen?: { key: string; attempts: number };
  /** An outbound action with a server error limit: its count forgotten first. */
  forgetServerErrorsOf?: string;
}

/**
 * How to put a dead letter back on its queue, in its group (its room's order), carrying its
 * idempotency key: the outbound action its ID (the send's txnId), the inbound item its ID (its
 * claim), so that a replay after a partial success does nothing twice. Undefined for what cannot
 * be replayed (an unreadable body).
 */
export function replayPlan(letter: StoredDeadLetter): ReplayPlan | undefined {
  const parsed = parse(letter);
  // A new deduplication ID (the original may be within SQS's five minutes), the same for a
  // repeated replay of this dead letter.
  const deduplicationId = sha256(`replay\n${letter.direction}\n${letter.id}`);
  const message = (body: string): FifoMessage => ({
    groupId: letter.groupId,
    deduplicationId,
    body,
  });
  switch (parsed.shape) {
    case "action":
      return {
        direction: "outbound",
        message: message(queueJson(parsed.action)),
        ...(parsed.action.maxServerErrors !== undefined && {
          forgetServerErrorsOf: parsed.action.id,
        }),
      };
    case "item":
      return {
        direction: "inbound",
        message: message(queueJson({ txnId: parsed.txnId, items: [parsed.item] })),
        // Without a count the item was not set aside by the consumer: its claim is left as is.
        ...(parsed.attempts !== undefined && {
          reopen: { key: claimKey(parsed.item), attempts: parsed.attempts },
        }),
      };
    case "message":
      // Items done before are skipped by their claims; the others run.
      return { direction: "inbound", message: message(letter.body) };
    case "body":
    case "unreadable":
      return undefined;
  }
}
