// What each handler takes, built by deps.ts and admin-deps.ts. Here rather than beside the
// handlers so that the wiring, which the handlers import, never imports a handler.
import type { ApplicationEvents, ApplicationRoutes } from "../appservice/application.ts";
import type { InboundCrypto, InboundRetryPolicy } from "../appservice/pipeline/process-inbound.ts";
import type { QueryDeps } from "../appservice/pipeline/queries.ts";
import type { HsTokens } from "../appservice/protocol/auth.ts";
import type { ServiceDeps } from "../appservice/service-context.ts";
import type { OperatorApi } from "../operator/api.ts";
import type { OutboundDeps } from "../outbox/decide.ts";
import type { FifoQueue, ReceivedMessageControl } from "../queue/queue.ts";
import type { Log } from "../shared/log.ts";
import type { Metrics } from "../shared/metrics.ts";
import type { AppDataStore } from "../store/app-data.ts";
import type { IntentMemory } from "../store/intent-memory.ts";
import type { ClaimStore, SetAsideItems, TransactionStore } from "../store/store.ts";

export interface AdminHandlerDeps {
  api: OperatorApi;
  /** The dead letters taken off their queues, and those waiting counted (`OperatorConsole.sweep`). */
  sweep: () => Promise<unknown>;
  log: Log;
}

export interface AppHandlerDeps extends ServiceDeps {
  application: ApplicationRoutes;
}

export interface EventsDeps extends ServiceDeps {
  claims: ClaimStore;
  /** The items queued by reference, too large for a message. */
  setAsideItems: Pick<SetAsideItems, "get">;
  application: ApplicationEvents;
  /** Lease on an item being processed; must run out before the message is visible again. */
  leaseMs: number;
  metrics: Metrics;
  /** The inbound queue: a failed message's next attempt, and its dead-letter queue. */
  control: ReceivedMessageControl;
  retry: InboundRetryPolicy;
  recordBudgetMs: number;
  /** The bot device's crypto, where encrypted rooms are read (`wiring/crypto.ts`). */
  crypto?: InboundCrypto;
  /** How long an encrypted event waits for its room key. */
  keyWait?: InboundRetryPolicy;
  /** With `crypto`: the events delivered without their room key, kept until it comes. */
  undecryptable?: AppDataStore;
  /** The Intent's memory: forgets our users' memberships the homeserver says are over. */
  intentMemory: Pick<IntentMemory, "markLeft">;
}

export interface OutboxHandlerDeps extends OutboundDeps {
  control: ReceivedMessageControl;
  metrics: Metrics;
  /** `actionBudgetMs` of the homeserver's timeout. */
  recordBudgetMs: number;
}

export interface QueriesDeps extends Omit<QueryDeps, "owner"> {
  /** The hs_tokens accepted (the previous one too, during a rotation). */
  hsTokens: HsTokens;
}

export interface TransactionsDeps {
  /** The hs_tokens accepted (the previous one too, during a rotation). */
  hsTokens: HsTokens;
  metrics: Metrics;
  transactions: TransactionStore;
  inboundQueue: FifoQueue;
  setAsideItems: SetAsideItems;
  log: Log;
}
