import type { Decryption } from "../../crypto/device-crypto.ts";
import type { HomeserverCalls } from "../../matrix/homeserver-calls.ts";
import { HomeserverRefused } from "../../matrix/request.ts";
import { queueJson, type ReceivedMessageControl, RetryLater } from "../../queue/queue.ts";
import { type BackoffPolicy, backoffSeconds, retriesCovering } from "../../shared/backoff.ts";
import { sha256 } from "../../shared/hash.ts";
import type { Log } from "../../shared/log.ts";
import type { AppDataStore } from "../../store/app-data.ts";
import { claimKeys } from "../../store/claim-keys.ts";
import type { CryptoOwner } from "../../store/crypto-state.ts";
import type { IntentMemory } from "../../store/intent-memory.ts";
import {
  ABANDONED_RUN_REASON,
  type ClaimStore,
  holdsClaim,
  type SetAsideItems,
} from "../../store/store.ts";
import type {
  ApplicationContext,
  ApplicationEvents,
  DeliveredEvent,
  ServiceContext,
} from "../application.ts";
import {
  type ClientEvent,
  type DeviceData,
  isInviteOf,
  type ToDeviceMessage,
} from "../protocol/transaction.ts";
import type { InboundItem, InboundMessage, ItemReference } from "./inbound.ts";

/** How an item the application fails on is retried, and when it is set aside. */
export interface InboundRetryPolicy {
  backoff: BackoffPolicy;
  /** Failed runs of one item before it goes to the dead-letter queue. */
  maxAttempts: number;
}

/** 1 s doubling to 15 minutes, with full jitter: a homeserver down for hours holds a room back
 * at most 15 minutes once it is back. */
export const INBOUND_BACKOFF: BackoffPolicy = { baseSeconds: 1, capSeconds: 900 };

/** About a day of retries (202 runs at `INBOUND_BACKOFF`) before an item is set aside. */
export const INBOUND_RETRY: InboundRetryPolicy = {
  backoff: INBOUND_BACKOFF,
  maxAttempts: 1 + retriesCovering(24 * 3600, INBOUND_BACKOFF),
};

/**
 * Receives of an inbound message before SQS's own redrive sets it aside (SQS's maximum): only a
 * last resort. The messages behind a failing one in its group are received with it on each of its
 * attempts, so their receive counts climb with its attempts: this leaves room for several
 * failing items in a row.
 */
export const INBOUND_MAX_RECEIVE_COUNT = 1000;

/**
 * An encrypted event whose room key has not arrived waits, its room held back, 1 s doubling to
 * a minute, for about 10 minutes (the key usually comes in the same transaction or the one
 * before, not always); then it reaches the application marked undecryptable.
 */
export const KEY_WAIT: InboundRetryPolicy = {
  backoff: { baseSeconds: 1, capSeconds: 60 },
  maxAttempts: 1 + retriesCovering(600, { baseSeconds: 1, capSeconds: 60 }),
};

/** The bot device's crypto, as the events consumer uses it (`crypto/device-crypto.ts`). */
export interface InboundCrypto {
  readonly owner: CryptoOwner;
  /** Makes the device if it never was, so that people's clients can encrypt for it. */
  ensureDevice(): Promise<void>;
  /** Resolves once the state holding what they carried is saved. */
  receive(transaction: { toDevice: ToDeviceMessage[]; devices?: DeviceData }): Promise<void>;
  decrypt(event: ClientEvent): Promise<Decryption>;
  /** Tracks these users' devices (queried if new to it); saves only if one was new. */
  track(userIds: string[]): Promise<void>;
  /** Queries every tracked user's devices again, and saves. */
  markAllTrackedUsersAsDirty(): Promise<void>;
}

export interface ProcessInboundDeps {
  claims: ClaimStore;
  application: ApplicationEvents;
  log: Log;
  /** How long a claim keeps others off; shorter than the queue's visibility timeout. */
  leaseMs: number;
  /** The handler's context for the item with this claim key. */
  contextFor(origin: string): ServiceContext;
  retry: InboundRetryPolicy;
  /** Where the items queued by reference are kept. */
  setAsideItems: Pick<SetAsideItems, "get">;
  /** Where an item that failed its every attempt is set aside, with the reason. */
  deadLetters: Pick<ReceivedMessageControl, "deadLetter">;
  /**
   * The bot device's crypto, where encrypted rooms are read: what it is sent reaches its machine
   * before the item is done, and encrypted events are decrypted before the application sees them.
   */
  crypto?: InboundCrypto;
  /** How long an encrypted event waits for its room key. @default `KEY_WAIT` */
  keyWait?: InboundRetryPolicy;
  /**
   * With `crypto`: where an event delivered `undecryptable` for want of its room key is kept
   * (its ciphertext, `UNDECRYPTABLE`), to be delivered again decrypted once its key comes.
   */
  undecryptable?: AppDataStore;
  /**
   * The Intent's memory (`matrix/intent.ts`): a leave, kick or ban of one of our users the
   * homeserver pushes is forgotten there, so that the next send lets the user in again.
   */
  intentMemory?: Pick<IntentMemory, "markLeft">;
  /** Whether a user is ours (the registration's namespaces); with `intentMemory`. */
  ownsUser?: (userId: string) => boolean;
  /** Ours too, outside the namespaces; with `intentMemory`. */
  botUserId?: string;
  /**
   * The run's time left, and the least an item may start with: an item that finds less left
   * is not started, and it and the message's rest come back at once, for the next run. A run
   * past the function's timeout would otherwise go on handling items the next run takes over
   * (local mode does not stop it as Lambda does): handled twice.
   */
  time?: { leftMs(): number; itemBudgetMs: number };
}

/** The run's time is spent: the message's items not yet started come back at once, uncounted. */
class TimeSpent extends Error {}

/** Which delivery of which queue message this is. */
export interface InboundDelivery {
  /** The lease owner: a redelivery is a new owner. */
  owner: string;
  /** The message's FIFO group: the dead-letter queue keeps the same order. */
  groupId: string;
}

export interface ProcessOutcome {
  handled: number;
  duplicates: number;
  deadLettered: number;
}

/** Thrown out of an item's run to hold its room back until its room key may have come. */
class KeyWait extends Error {
  constructor(readonly seconds: number) {
    super("waiting for the room key");
  }
}

export const claimKey = (item: InboundItem | ItemReference) =>
  (item.kind === "reference" ? item.of : item.kind) === "event"
    ? claimKeys.event(item.id)
    : claimKeys.item(item.id);

/** The item a reference stands for, read back from where the ack path set it aside. */
async function readSetAside(reference: ItemReference, store: Pick<SetAsideItems, "get">) {
  const json = await store.get(reference.sha256);
  if (json === undefined || sha256(json) !== reference.sha256) {
    throw new Error(`the ${reference.of} ${reference.id} set aside is missing or incomplete`);
  }
  return JSON.parse(json) as InboundItem;
}

function deliver(item: InboundItem, application: ApplicationEvents, context: ApplicationContext) {
  switch (item.kind) {
    case "event":
      return application.onEvent?.(item.event, context);
    case "ephemeral":
      return application.onEphemeral?.(item.event, context);
    case "to_device":
      return application.onToDevice?.(item.message, context);
    case "devices":
      return application.onDeviceData?.(item.devices, context);
  }
}

/** `m.room.encryption` set in a room: from then on its members encrypt. */
const turnsOnEncryption = (event: ClientEvent) =>
  event.type === "m.room.encryption" && event.state_key === "";

/** The reason a claim record keeps while an encrypted event waits for its room key. */
const KEY_WAIT_REASON = "waiting for the room key";

/** A to-device message for the bot's device (room keys come in them). */
const isForDevice = (
  item: InboundItem,
  owner: CryptoOwner,
): item is Extract<InboundItem, { kind: "to_device" }> =>
  item.kind === "to_device" &&
  item.message.to_user_id === owner.userId &&
  item.message.to_device_id === owner.deviceId;

/**
 * Whose devices the bot's device starts tracking for a room event: Synapse announces a new member
 * of an encrypted room in no `device_lists.changed`, so an invited or joined member is tracked
 * at its membership, and every joined member when the bot joins or the room turns encrypted.
 * Only in encrypted rooms, as the bot reads their state (one read per membership event); a 403
 * (the bot is not in the room) is none of its device's business.
 */
async function usersToTrack(
  event: ClientEvent,
  botUserId: string,
  homeserver: Pick<HomeserverCalls, "roomState" | "joinedMembers">,
): Promise<string[]> {
  if (event.state_key === undefined) return [];
  const membership = event.type === "m.room.member" ? event.content.membership : undefined;
  const entering = membership === "invite" || membership === "join";
  if (event.type !== "m.room.encryption" && !entering) return [];
  const wholeRoom = event.type === "m.room.encryption" || event.state_key === botUserId;
  // The bot's own invite: it is not in the room yet, and its device is made instead.
  if (event.state_key === botUserId && membership === "invite") return [];
  try {
    if (
      event.type !== "m.room.encryption" &&
      (await homeserver.roomState(event.room_id, "m.room.encryption")) === undefined
    ) {
      return [];
    }
    return wholeRoom
      ? Object.keys(await homeserver.joinedMembers(event.room_id))
      : [event.state_key];
  } catch (error) {
    if (error instanceof HomeserverRefused && error.status === 403) return [];
    throw error;
  }
}

/**
 * What the bot device's machine takes from an item before it is done: the to-device messages
 * for the device and the device data (the item is done only once the state holding their keys
 * is saved), an invite of the bot or encryption turned on in a room it is in (a room it made,
 * a bridge's portal, has no invite): its device made then, so that people's clients encrypt for
 * it (a failure there holds no event back: the next crypto work makes it); and the members of
 * encrypted rooms to track (`usersToTrack`), in their room's order.
 */
async function cryptoReceives(
  item: InboundItem,
  crypto: InboundCrypto,
  homeserver: Pick<HomeserverCalls, "roomState" | "joinedMembers">,
  log: Log,
) {
  if (isForDevice(item, crypto.owner)) {
    await crypto.receive({ toDevice: [item.message] });
  } else if (item.kind === "devices") {
    await crypto.receive({ toDevice: [], devices: item.devices });
  } else if (item.kind === "event") {
    if (isInviteOf(item.event, crypto.owner.userId) || turnsOnEncryption(item.event)) {
      try {
        await crypto.ensureDevice();
      } catch (error) {
        log.warn("the bot's device could not be made: tried again at the next crypto work", {
          roomId: item.event.room_id,
          error,
        });
        return;
      }
    }
    const users = await usersToTrack(item.event, crypto.owner.userId, homeserver);
    if (users.length > 0) await crypto.track(users);
  }
}

/** A membership that takes a user out of its room. */
const isLeaving = (event: ClientEvent) =>
  event.type === "m.room.member" &&
  (event.content.membership === "leave" || event.content.membership === "ban");

/**
 * One of our users out of a room (left, kicked or banned), as the homeserver pushed it: the
 * Intent's memory forgets the membership, so that the next send into the room lets the user in
 * first instead of being refused. A leave we made ourselves is forgotten again, harmlessly; one
 * pushed after we joined again only costs the next send an invite and a join.
 */
async function forgetMembership(
  item: InboundItem,
  {
    intentMemory,
    ownsUser,
    botUserId,
  }: Pick<ProcessInboundDeps, "intentMemory" | "ownsUser" | "botUserId">,
) {
  if (item.kind !== "event" || !intentMemory || !ownsUser) return;
  const { event } = item;
  const userId = event.state_key;
  if (userId !== undefined && isLeaving(event) && (userId === botUserId || ownsUser(userId))) {
    await intentMemory.markLeft(event.room_id, userId);
  }
}

/** The event as the application gets it, from what the machine made of it. */
const decryptedEvent = (
  event: ClientEvent,
  decryption: Decryption,
  late = false,
): DeliveredEvent =>
  decryption.status === "decrypted"
    ? {
        ...event,
        type: decryption.type,
        content: decryption.content,
        decryption: {
          status: "decrypted",
          senderTrust: "cross-signed",
          ...(decryption.senderDevice !== undefined && { senderDevice: decryption.senderDevice }),
          ...(late && { late: true }),
        },
      }
    : {
        ...event,
        decryption: {
          status: "undecryptable",
          reason: decryption.status === "missing-key" ? "MissingRoomKey" : decryption.reason,
        },
      };

const isEncrypted = (item: InboundItem): item is Extract<InboundItem, { kind: "event" }> =>
  item.kind === "event" &&
  item.event.type === "m.room.encrypted" &&
  item.event.state_key === undefined;

/** The collection of `undecryptable` where the events delivered without their key are kept. */
export const UNDECRYPTABLE = "undecryptable";

/** How long an event delivered without its room key waits for the key to come after all. */
const LATE_KEY_MS = 7 * 24 * 3600 * 1000;

/** Keeps an event about to be delivered `MissingRoomKey` (its ciphertext) for `deliverLate`. */
const keepUndecryptable = (store: AppDataStore, event: ClientEvent) =>
  store.write([
    {
      collection: UNDECRYPTABLE,
      key: event.event_id,
      value: { event },
      expiresAt: Date.now() + LATE_KEY_MS,
    },
  ]);

/**
 * After room keys came to the bot's device (a to-device item, in the bot's one queue group, so
 * one run at a time): each event kept by `keepUndecryptable` is decrypted again, and those that
 * now decrypt reach `onEvent` once more, marked `late`, exactly once (a claim of their own); the
 * record goes once it is delivered or can never be. One read of the store per to-device item.
 */
async function deliverLate(
  { crypto, undecryptable, claims, leaseMs, application, contextFor, log }: ProcessInboundDeps,
  owner: string,
  txnId: string,
) {
  if (!crypto || !undecryptable) return;
  for (const { key, value } of await undecryptable.list(UNDECRYPTABLE)) {
    const event = value.event as ClientEvent;
    const about = { roomId: event.room_id, eventId: event.event_id };
    // One kept event's failure is its own: it stays kept, tried again at the next keys, and
    // never holds back the to-device item that brings every room's keys.
    try {
      const decryption = await crypto.decrypt(event);
      if (decryption.status === "missing-key") continue;
      if (decryption.status === "decrypted") {
        const lateKey = claimKeys.item(`late:${event.event_id}`);
        const claim = (await claims.claim([lateKey], owner, leaseMs)).get(lateKey);
        // Another run delivers it (`busy`), or did (`done`).
        if (!holdsClaim(claim)) continue;
        try {
          await application.onEvent?.(decryptedEvent(event, decryption, true), {
            ...contextFor(lateKey),
            txnId,
          });
        } catch (error) {
          await claims.release(lateKey, owner);
          throw error;
        }
        await claims.complete(lateKey);
        log.info("an event delivered undecryptable was decrypted late and delivered again", about);
      }
      await undecryptable.write([{ collection: UNDECRYPTABLE, key, delete: true }]);
    } catch (error) {
      log.error("an event decrypted late could not be delivered: kept for the next keys", {
        ...about,
        error,
      });
    }
  }
}

/** What a log line or a dead letter says about an item: never its content. */
const describeItem = (item: InboundItem | ItemReference) => ({
  kind: item.kind === "reference" ? item.of : item.kind,
  id: item.id,
  ...(item.kind === "reference" && item.roomId && { roomId: item.roomId }),
  ...(item.kind === "event" && { roomId: item.event.room_id }),
  ...(item.kind === "ephemeral" && item.event.room_id && { roomId: item.event.room_id }),
});

const reasonOf = (error: unknown) =>
  error instanceof Error ? `${error.name}: ${error.message}` : String(error);

/**
 * Hands each item of a queue message to the application exactly once, in order. The items are
 * claimed together, each with a lease; those already done are skipped. Each success is marked
 * done at once (without waiting for it before the next item).
 *
 * A run that ended unanswered (a timeout or a crash: its leases ran out) is counted as a failed
 * run of the first item it had not finished; at `maxAttempts` that item is set aside without
 * running again, and the items after it go on.
 *
 * When the application throws, the error is logged and counted on that item's claim record. Short
 * of `maxAttempts`, the claims not yet done are released and a `RetryLater` asks for the message
 * again after a backoff (the items before the failed one are then skipped as done). At
 * `maxAttempts`, the item alone is set aside in the dead-letter queue with the reason, and the
 * items after it go on at once.
 */
export async function processInboundMessage(
  message: InboundMessage,
  { owner, groupId }: InboundDelivery,
  deps: ProcessInboundDeps,
): Promise<ProcessOutcome> {
  const {
    claims,
    application,
    log,
    leaseMs,
    contextFor,
    retry,
    deadLetters,
    setAsideItems,
    crypto,
    keyWait = KEY_WAIT,
    time,
  } = deps;
  const keys = [...new Set(message.items.map(claimKey))];
  const claimed = await claims.claim(keys, owner, leaseMs);
  // A run that timed out or died ended on the first item it had not finished: only that one's
  // run is counted as failed; the items after it never started.
  const abandonedKey = keys.find((key) => claimed.get(key) === "taken over");
  const outcome: ProcessOutcome = { handled: 0, duplicates: 0, deadLettered: 0 };
  const completions: Promise<void>[] = [];
  // Keys this run finished with: a repeat within the message is a duplicate too.
  const finished = new Set<string>();
  // A failed item's claim, given up by counting the failure.
  let failedKey: string | undefined;
  // Whether this run had the bot's device query its tracked users again (`extensionsLost`).
  let dirtyMarked = false;

  /** Counts a failed run on its claim; logs it once, whether or not the count could be kept. */
  const recordFailure = async (item: InboundItem | ItemReference, key: string, error: unknown) => {
    let attempt: number | undefined;
    try {
      attempt = await claims.fail(key, owner, reasonOf(error));
      failedKey = key;
    } finally {
      const last = attempt !== undefined && attempt >= retry.maxAttempts;
      log.error(
        last
          ? "the application failed on an item for the last time: it goes to the dead-letter queue"
          : "the application failed on an item: it will be retried",
        {
          txnId: message.txnId,
          ...describeItem(item),
          attempt,
          maxAttempts: retry.maxAttempts,
          error,
        },
      );
    }
    return attempt;
  };

  /** Sets the item alone aside in the dead-letter queue, with the reason. */
  // A reference stays one in the dead letter: the item itself may be over a message's size.
  const setAside = async (
    item: InboundItem | ItemReference,
    key: string,
    reason: string,
    attempts: number,
  ) => {
    await deadLetters.deadLetter({
      groupId,
      deduplicationId: sha256(key),
      body: queueJson({
        txnId: message.txnId,
        item,
        reason: { error: reason },
        attempts,
        failedAt: new Date().toISOString(),
      }),
    });
    outcome.deadLettered++;
  };

  try {
    for (const item of message.items) {
      const key = claimKey(item);
      const claim = claimed.get(key);
      if (claim === "done" || finished.has(key)) {
        outcome.duplicates++;
        log.debug("duplicate skipped", { txnId: message.txnId, kind: item.kind, id: item.id });
        continue;
      }
      if (claim === "busy") {
        // Not a failure of the item: try again once the other lease has run out.
        throw new RetryLater(
          Math.ceil(leaseMs / 1000),
          `${item.kind} ${item.id} is being processed elsewhere`,
        );
      }
      if (time && time.leftMs() < time.itemBudgetMs) throw new TimeSpent();
      let abandonedRuns: number | undefined;
      if (key === abandonedKey) {
        abandonedRuns = await claims.countAbandonedRun(key, owner);
        // Logged here: the run that timed out or died could not log its own end.
        log.error(
          abandonedRuns >= retry.maxAttempts
            ? "an item's run ended without an answer (a timeout or a crash) for the last time: it goes to the dead-letter queue"
            : "an item's run ended without an answer (a timeout or a crash): it runs again",
          {
            txnId: message.txnId,
            ...describeItem(item),
            attempt: abandonedRuns,
            maxAttempts: retry.maxAttempts,
          },
        );
      }
      if (abandonedRuns !== undefined && abandonedRuns >= retry.maxAttempts) {
        await setAside(item, key, ABANDONED_RUN_REASON, abandonedRuns);
      } else {
        try {
          let whole = item.kind === "reference" ? await readSetAside(item, setAsideItems) : item;
          let keepLate: ClientEvent | undefined;
          const context = { ...contextFor(key), txnId: message.txnId };
          if (crypto && message.extensionsLost && !dirtyMarked) {
            // Once per run of the message (again on its retry: harmless).
            await crypto.markAllTrackedUsersAsDirty();
            dirtyMarked = true;
          }
          if (crypto) await cryptoReceives(whole, crypto, context.homeserver, log);
          if (crypto && isForDevice(whole, crypto.owner)) {
            await deliverLate(deps, owner, message.txnId);
          }
          await forgetMembership(whole, deps);
          if (crypto && isEncrypted(whole)) {
            const decryption = await crypto.decrypt(whole.event);
            if (decryption.status === "missing-key") {
              const attempts = await claims.fail(key, owner, KEY_WAIT_REASON);
              failedKey = key;
              if (attempts < keyWait.maxAttempts) {
                // Expected (the key comes in another transaction): not an ERROR.
                log.info("an encrypted event waits for its room key: its room is held back", {
                  txnId: message.txnId,
                  ...describeItem(whole),
                  attempt: attempts,
                });
                throw new KeyWait(backoffSeconds(Math.max(0, attempts - 1), keyWait.backoff));
              }
            }
            // Kept once delivered: a delivery that failed is retried as it is, not late too.
            if (decryption.status === "missing-key" && deps.undecryptable) {
              keepLate = whole.event;
            }
            whole = { ...whole, event: decryptedEvent(whole.event, decryption) };
          }
          await deliver(whole, application, context);
          if (keepLate && deps.undecryptable) await keepUndecryptable(deps.undecryptable, keepLate);
          outcome.handled++;
        } catch (error) {
          if (error instanceof KeyWait) {
            throw new RetryLater(error.seconds, `${item.kind} ${item.id} waits for its room key`);
          }
          const attempts = await recordFailure(item, key, error);
          if (attempts < retry.maxAttempts) {
            throw new RetryLater(
              backoffSeconds(Math.max(0, attempts - 1), retry.backoff),
              `${item.kind} ${item.id} failed (attempt ${attempts} of ${retry.maxAttempts})`,
              { cause: error },
            );
          }
          await setAside(item, key, reasonOf(error), attempts);
        }
      }
      finished.add(key);
      const completion = claims.complete(key);
      // Awaited below; observed now so that an early failure is not an unhandled rejection.
      completion.catch(() => undefined);
      completions.push(completion);
    }
  } catch (error) {
    const unfinished = keys.filter(
      (key) => holdsClaim(claimed.get(key)) && !finished.has(key) && key !== failedKey,
    );
    await Promise.all(
      unfinished.map((key) =>
        claims.release(key, owner).catch((releaseError: unknown) =>
          log.warn("releasing a claim failed; it expires with its lease", {
            key,
            error: releaseError,
          }),
        ),
      ),
    );
    await Promise.allSettled(completions);
    if (error instanceof TimeSpent) {
      log.info("the run's time is spent: the message's items not started come back at once", {
        txnId: message.txnId,
        handled: outcome.handled,
      });
      throw new RetryLater(0, "the run's time is spent");
    }
    throw error;
  }
  await Promise.all(completions);
  return outcome;
}
