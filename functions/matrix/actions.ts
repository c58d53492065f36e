import { type FifoQueue, MAX_MESSAGE_BYTES, queueJson } from "../queue/queue.ts";
import { deliveryProblem, type OutboundDelivery } from "../remote/outbound-delivery.ts";
import type { RemoteRequest } from "../remote/remote-http.ts";
import { sha256 } from "../shared/hash.ts";
import {
  editContent,
  type InReplyTo,
  type MessageContent,
  messageContent,
  reactionContent,
  replyContent,
} from "./relations.ts";
import type { ClientServerRequest, OutboundAction } from "./request.ts";
import {
  type CreateRoomFields,
  createRoomRequest,
  directoryVisibilityRequest,
  joinRequest,
  leaveRequest,
  membershipRequest,
  type Presence,
  type ProfileField,
  presenceRequest,
  profileRequest,
  receiptRequest,
  redactRequest,
  registerRequest,
  sendRequest,
  stateRequest,
  type ToDeviceMessages,
  toDeviceRequest,
  typingRequest,
} from "./requests.ts";

export interface As {
  /** The user to act as; the bot (`sender_localpart`) when absent. */
  as?: string;
}
export interface Timestamped extends As {
  /** `origin_server_ts` to give the event (timestamp massaging, `?ts=`). */
  ts?: number;
}
/** A send that stands for a message of the remote network. */
export interface MessageOptions extends Timestamped {
  /**
   * The remote message's ID: once the homeserver gives the event its ID, the outbox links the
   * two in the room's message map (`ServiceContext.messages`), where later handlers find it.
   */
  remoteId?: string;
}
export interface Reason extends As {
  reason?: string;
}
export interface Profile extends As {
  /** A room whose order to queue the change in, so that what is sent there next comes after it. */
  orderedWith?: string;
}

export interface CreateRoomOptions extends As, CreateRoomFields {}

export interface DeliveryOptions {
  /**
   * A room whose deliveries to the same origin this one is ordered with (a portal's, for
   * messages written there); deliveries without one are ordered per target origin.
   */
  orderedWith?: string;
  /**
   * Orders this delivery apart from the other deliveries of `orderedWith` to the same origin that
   * have another key (an outbound webhook's own: one target that is down holds back no other).
   */
  orderKey?: string;
  /**
   * Retried for at most this long after it was queued (a replay starts again), then
   * dead-lettered with the last failure as the reason. As long as the queue keeps it when absent.
   */
  retryForMs?: number;
  /**
   * Where the outbox records how each attempt went (the last one wins), read with
   * `deliveryOutcome(key)`: e.g. one key per webhook, for its last delivery's status.
   */
  outcomeKey?: string;
  /**
   * Signed by the outbox at each attempt with the secret shared with the remote service
   * (the manifest's `remoteSecret`): Standard Webhooks' `webhook-id` (the action's ID),
   * `webhook-timestamp` and `webhook-signature` (`signatureHeaders`), made when sent, so that a
   * retry hours later is still fresh. Dead-lettered when the outbox has no secret.
   */
  signed?: boolean;
}

/**
 * Room a queued delivery leaves in an SQS message for its dead letter's reason and timestamp:
 * a delivery whose queued form is larger is refused when asked for.
 */
const DEAD_LETTER_ROOM_BYTES = 4096;
/** The largest queued delivery (its body, base64 or text, counts in full). */
export const MAX_DELIVERY_BYTES = MAX_MESSAGE_BYTES - DEAD_LETTER_ROOM_BYTES;

/**
 * What the application may ask of the homeserver. Each call puts one message on the outbound
 * FIFO queue (grouped by room, or by user where there is no room) and returns: the outbox
 * performs it, retrying until it succeeds or fails for good. Sends return their client txnId.
 */
export interface Actions {
  readonly botUserId: string;
  sendEvent(
    roomId: string,
    type: string,
    content: Record<string, unknown>,
    options?: MessageOptions,
  ): Promise<string>;
  sendMessage(
    roomId: string,
    text: string,
    options?: MessageOptions & { html?: string },
  ): Promise<string>;
  sendNotice(roomId: string, text: string, options?: MessageOptions): Promise<string>;
  /**
   * Replaces `eventId`'s content with `content` (text: an `m.text`): an `m.replace` event, whose
   * `m.new_content` clients show in its place, and the new text starred for those without edits.
   */
  edit(
    roomId: string,
    eventId: string,
    content: string | MessageContent,
    options?: MessageOptions,
  ): Promise<string>;
  /** Sends `content` (text: an `m.text`) as a reply to `to`, mentioning its sender. */
  reply(
    roomId: string,
    to: InReplyTo,
    content: string | MessageContent,
    options?: MessageOptions,
  ): Promise<string>;
  sendState(
    roomId: string,
    type: string,
    stateKey: string,
    content: Record<string, unknown>,
    options?: Timestamped,
  ): Promise<void>;
  redact(roomId: string, eventId: string, options?: Reason): Promise<string>;
  /** An `m.annotation` of `eventId` with `key`; link it (`remoteId`) to take it back later. */
  react(roomId: string, eventId: string, key: string, options?: MessageOptions): Promise<string>;
  /** Takes a reaction back: redacts the reaction's event, as its sender (`as`). */
  unreact(roomId: string, reactionEventId: string, options?: Reason): Promise<string>;
  join(roomIdOrAlias: string, options?: As): Promise<void>;
  leave(roomId: string, options?: Reason): Promise<void>;
  invite(roomId: string, userId: string, options?: Reason): Promise<void>;
  kick(roomId: string, userId: string, options?: Reason): Promise<void>;
  ban(roomId: string, userId: string, options?: Reason): Promise<void>;
  setDisplayName(displayName: string, options?: Profile): Promise<void>;
  setAvatarUrl(avatarUrl: string, options?: Profile): Promise<void>;
  createRoom(options: CreateRoomOptions): Promise<void>;
  setDirectoryVisibility(
    networkId: string,
    roomId: string,
    visibility: "public" | "private",
  ): Promise<void>;
  setTyping(roomId: string, typing: boolean, options?: As & { timeoutMs?: number }): Promise<void>;
  sendReceipt(
    roomId: string,
    eventId: string,
    options?: As & { type?: "m.read" | "m.read.private" },
  ): Promise<void>;
  /**
   * Sends to-device messages of `type` as `as` (`PUT /sendToDevice/{type}/{txnId}`, the action's
   * ID its txnId, the same on every retry, which the homeserver deduplicates), queued in a group
   * of the sender's to-device messages, so that each device gets them in order. Sent as given:
   * not Olm-encrypted (the room keys the outbox encrypts with go out with their room send).
   */
  sendToDevice(type: string, messages: ToDeviceMessages, options?: As): Promise<string>;
  /** `as`'s presence (`status_msg`: `statusMessage`), queued with its other profile changes. */
  setPresence(presence: Presence, options?: As & { statusMessage?: string }): Promise<void>;
  /** Registers `@localpart:server` (done on demand anyway when a call needs it). */
  register(userId: string): Promise<void>;
  /**
   * An HTTP request to a service other than the homeserver (a bridge's remote network, an
   * outbound webhook), queued like the calls above and sent by the outbox with an
   * `Idempotency-Key` header: the ID returned, the same on every attempt. Retried as homeserver
   * calls are (429 with `Retry-After`, 5xx, timeouts, refused connections), in order with the
   * deliveries of `orderedWith`, in a queue group of their own: a remote service that is down
   * holds back its deliveries, never the room's Matrix calls. Dead-lettered, never sent, when its
   * target is an address the operator did not allow (loopback, private, link-local, metadata…).
   * Throws a `RangeError` for a request of the wrong shape or over `MAX_DELIVERY_BYTES` queued.
   */
  deliver(request: RemoteRequest, options?: DeliveryOptions): Promise<string>;
  /**
   * The same actions, each dead-lettered at its `limit`-th server error (5xx, or no answer in
   * time) instead of retried for as long as the queue keeps it: for calls made on untrusted
   * input (a webhook's request), which the homeserver may refuse for ever while their room
   * waits. 429s do not count (the server's own instruction to wait), nor refused connections.
   */
  withServerErrorLimit(limit: number): Actions;
  /**
   * The same actions under an origin of the application's choosing (a remote message's ID),
   * for a route whose requests may repeat: a repeat asks for the same IDs, which the queue and
   * the homeserver (sends' client txnIds) deduplicate.
   */
  withOrigin(key: string): Actions;
  /**
   * The same actions, whose sends have the outbox record the event ID the homeserver gives, for
   * a request that answers once its message is in the room (`ServiceContext.sentEventIds`).
   */
  recordingEventIds(): Actions;
}

export interface ActionsOptions {
  botUserId: string;
  outboundQueue: FifoQueue;
  /**
   * What asked for the actions (an event's claim key): each action's ID hashes it with the
   * action's position, so a re-run handler asks for the same IDs, which the queue and the
   * homeserver deduplicate.
   */
  origin: string;
}

export function createActions(options: ActionsOptions): Actions {
  return actionsWith(options, { next: 0 }, {});
}

/** What every action of a view of the actions carries. */
interface ActionMarks {
  maxServerErrors?: number;
  recordEventId?: true;
}

/** The actions with their marks; `position` is shared by every view of one origin. */
function actionsWith(
  { botUserId, outboundQueue, origin }: ActionsOptions,
  position: { next: number },
  marks: ActionMarks,
): Actions {
  const { maxServerErrors } = marks;
  const nextId = () => sha256(`${origin}\n${position.next++}`);
  const put = async (
    action: OutboundAction | OutboundDelivery,
    groupId: string,
    body = queueJson(action),
  ) => {
    await outboundQueue.send([{ groupId, deduplicationId: action.id, body }]);
    return action.id;
  };
  const enqueue = (
    kind: string,
    as: string | undefined,
    roomId: string | undefined,
    build: (id: string) => ClientServerRequest,
    { groupId, remoteId }: { groupId?: string | undefined; remoteId?: string | undefined } = {},
  ): Promise<string> => {
    const id = nextId();
    const userId = as ?? botUserId;
    const action: OutboundAction = {
      id,
      kind,
      userId,
      ...(roomId && { roomId }),
      request: build(id),
      ...(maxServerErrors !== undefined && { maxServerErrors }),
      ...(marks.recordEventId && kind === "send" && { recordEventId: true }),
      ...(remoteId !== undefined && { remoteId }),
    };
    return put(action, groupId ?? roomId ?? userId);
  };
  const deliver = (request: RemoteRequest, options?: DeliveryOptions): Promise<string> => {
    const roomId = options?.orderedWith;
    const delivery: OutboundDelivery = {
      id: nextId(),
      kind: "delivery",
      ...(roomId && { roomId }),
      delivery: request,
      ...(maxServerErrors !== undefined && { maxServerErrors }),
      ...(options?.retryForMs !== undefined && { retryForMs: options.retryForMs }),
      ...(options?.outcomeKey !== undefined && { outcomeKey: options.outcomeKey }),
      ...(options?.signed && { signed: true as const }),
    };
    const problem = deliveryProblem(delivery);
    if (problem) throw new RangeError(`Cannot deliver this request: ${problem}`);
    const body = queueJson(delivery);
    const bytes = Buffer.byteLength(body);
    if (bytes > MAX_DELIVERY_BYTES) {
      throw new RangeError(
        `Cannot deliver this request: ${bytes} bytes queued, over ${MAX_DELIVERY_BYTES}`,
      );
    }
    // A target that is down holds back only the room's deliveries to it.
    const origin = new URL(request.url).origin;
    const group = roomId ? `delivery ${roomId} ${origin}` : `delivery ${origin}`;
    return put(delivery, options?.orderKey ? `${group} ${options.orderKey}` : group, body);
  };
  const send = (
    roomId: string,
    type: string,
    content: Record<string, unknown>,
    options?: MessageOptions,
  ) =>
    enqueue(
      "send",
      options?.as,
      roomId,
      (txnId) => sendRequest(roomId, type, txnId, content, options?.ts),
      { remoteId: options?.remoteId },
    );
  const membership =
    (kind: "invite" | "kick" | "ban") => (roomId: string, userId: string, options?: Reason) =>
      enqueue(kind, options?.as, roomId, () =>
        membershipRequest(kind, roomId, userId, options?.reason),
      ).then(() => undefined);
  const profile = (field: ProfileField) => (value: string, options?: Profile) => {
    const userId = options?.as ?? botUserId;
    return enqueue(field, userId, undefined, () => profileRequest(userId, field, value), {
      groupId: options?.orderedWith,
    }).then(() => undefined);
  };

  return {
    botUserId,
    sendEvent: send,
    sendMessage: (roomId, text, options) =>
      send(
        roomId,
        "m.room.message",
        {
          msgtype: "m.text",
          body: text,
          ...(options?.html !== undefined && {
            format: "org.matrix.custom.html",
            formatted_body: options.html,
          }),
        },
        options,
      ),
    sendNotice: (roomId, text, options) =>
      send(roomId, "m.room.message", { msgtype: "m.notice", body: text }, options),
    edit: (roomId, eventId, content, options) =>
      send(roomId, "m.room.message", editContent(eventId, messageContent(content)), options),
    reply: (roomId, to, content, options) =>
      send(roomId, "m.room.message", replyContent(to, messageContent(content)), options),
    sendState: (roomId, type, stateKey, content, options) =>
      enqueue("state", options?.as, roomId, () =>
        stateRequest(roomId, type, stateKey, content, options?.ts),
      ).then(() => undefined),
    redact: (roomId, eventId, options) =>
      enqueue("redact", options?.as, roomId, (txnId) =>
        redactRequest(roomId, eventId, txnId, options?.reason),
      ),
    react: (roomId, eventId, key, options) =>
      send(roomId, "m.reaction", reactionContent(eventId, key), options),
    unreact: (roomId, reactionEventId, options) =>
      enqueue("redact", options?.as, roomId, (txnId) =>
        redactRequest(roomId, reactionEventId, txnId, options?.reason),
      ),
    join: (roomIdOrAlias, options) =>
      enqueue("join", options?.as, roomIdOrAlias, () => joinRequest(roomIdOrAlias)).then(
        () => undefined,
      ),
    leave: (roomId, options) =>
      enqueue("leave", options?.as, roomId, () => leaveRequest(roomId, options?.reason)).then(
        () => undefined,
      ),
    invite: membership("invite"),
    kick: membership("kick"),
    ban: membership("ban"),
    setDisplayName: profile("displayname"),
    setAvatarUrl: profile("avatar_url"),
    createRoom: (options) =>
      enqueue("createRoom", options.as, undefined, () => createRoomRequest(options)).then(
        () => undefined,
      ),
    setDirectoryVisibility: (networkId, roomId, visibility) =>
      enqueue("directory", undefined, roomId, () =>
        directoryVisibilityRequest(networkId, roomId, visibility),
      ).then(() => undefined),
    setTyping: (roomId, typing, options) => {
      const userId = options?.as ?? botUserId;
      return enqueue("typing", userId, roomId, () =>
        typingRequest(roomId, userId, typing, options?.timeoutMs ?? 30_000),
      ).then(() => undefined);
    },
    sendReceipt: (roomId, eventId, options) =>
      enqueue("receipt", options?.as, roomId, () =>
        receiptRequest(roomId, eventId, options?.type ?? "m.read"),
      ).then(() => undefined),
    sendToDevice: (type, messages, options) => {
      const userId = options?.as ?? botUserId;
      return enqueue(
        "toDevice",
        userId,
        undefined,
        (txnId) => toDeviceRequest(type, txnId, messages),
        {
          groupId: `toDevice ${userId}`,
        },
      );
    },
    setPresence: (presence, options) => {
      const userId = options?.as ?? botUserId;
      return enqueue("presence", userId, undefined, () =>
        presenceRequest(userId, presence, options?.statusMessage),
      ).then(() => undefined);
    },
    // Registration is the appservice's own call (no user_id), grouped by the user it creates.
    register: (userId) =>
      enqueue("register", undefined, undefined, () => registerRequest(userId), {
        groupId: userId,
      }).then(() => undefined),
    deliver,
    withServerErrorLimit: (limit) => {
      if (!(Number.isSafeInteger(limit) && limit > 0)) {
        throw new RangeError(`A server error limit is a positive integer, not ${limit}`);
      }
      return actionsWith({ botUserId, outboundQueue, origin }, position, {
        ...marks,
        maxServerErrors: limit,
      });
    },
    recordingEventIds: () =>
      actionsWith({ botUserId, outboundQueue, origin }, position, {
        ...marks,
        recordEventId: true,
      }),
    // Apart from the origins the pipeline gives (events, requests), so that no key can match one.
    withOrigin: (key) =>
      actionsWith({ botUserId, outboundQueue, origin: `app-key:${key}` }, { next: 0 }, marks),
  };
}
