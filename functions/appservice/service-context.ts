import { createActions } from "../matrix/actions.ts";
import type { HomeserverCalls } from "../matrix/homeserver-calls.ts";
import type { FifoQueue } from "../queue/queue.ts";
import type { AddressPolicy } from "../remote/address-policy.ts";
import { deliveryTargetProblem } from "../remote/outbound-delivery.ts";
import { signatureValid } from "../remote/signature.ts";
import { deriveSecret } from "../shared/hash.ts";
import type { Log } from "../shared/log.ts";
import type { AppDataStore } from "../store/app-data.ts";
import type { DeliveryOutcomeStore } from "../store/delivery-outcomes.ts";
import { linkMap } from "../store/links.ts";
import { messageMap } from "../store/messages.ts";
import type { SentEventReader } from "../store/sent-events.ts";
import type { ServiceContext } from "./application.ts";
import { waitForEventId, waitForSentEvents } from "./sent-events.ts";

/** What the application's handlers act with, before it is tied to one origin. */
export interface ServiceDeps {
  log: Log;
  outboundQueue: FifoQueue;
  botUserId: string;
  homeserver: HomeserverCalls;
  data: AppDataStore;
  publicBaseUrl: string;
  /** The key of `deriveSecret`: the as_token. */
  secretKey: string;
  /** Whether the registration's user namespaces cover a user. */
  ownsUser: (userId: string) => boolean;
  /** Where the outbox may deliver (`DELIVERY_ALLOWED_ADDRESSES`). */
  deliveryPolicy: AddressPolicy;
  /** What the outbox recorded of deliveries with an `outcomeKey`. */
  deliveryOutcomes: DeliveryOutcomeStore;
  /** The event IDs the outbox recorded for the sends that asked. */
  sentEvents: SentEventReader;
  /** The secret shared with the remote service (the manifest's `remoteSecret`), if the application has one. */
  remoteSecret?: string;
}

/** The context for a handler run; `origin` seeds the IDs of the actions it asks for. */
export const serviceContext = (deps: ServiceDeps, origin: string): ServiceContext => ({
  log: deps.log,
  actions: createActions({ botUserId: deps.botUserId, outboundQueue: deps.outboundQueue, origin }),
  homeserver: deps.homeserver,
  data: deps.data,
  portals: linkMap(deps.data, "portals"),
  puppets: linkMap(deps.data, "puppets"),
  messages: (roomId) => {
    const map = messageMap(deps.data, roomId);
    return {
      ...map,
      eventIdOf: (remoteId, timeoutMs = 0) => waitForEventId(map, remoteId, timeoutMs),
    };
  },
  publicBaseUrl: deps.publicBaseUrl,
  deriveSecret: (label) => deriveSecret(deps.secretKey, label),
  ownsUser: deps.ownsUser,
  deliveryTargetProblem: (url) => deliveryTargetProblem(url, deps.deliveryPolicy),
  deliveryOutcome: (key) => deps.deliveryOutcomes.last(key),
  sentEventIds: (sendIds, timeoutMs) => waitForSentEvents(deps.sentEvents, sendIds, timeoutMs),
  remoteSignatureValid: (request) =>
    signatureValid(deps.remoteSecret, request.headers, request.bytes),
});
