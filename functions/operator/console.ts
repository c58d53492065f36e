import type {
  ConsoleColumn,
  ConsoleRow,
  ConsoleSection,
  ServiceContext,
} from "../appservice/application.ts";
import type { HomeserverHealth } from "../matrix/homeserver-health.ts";
import type { DeadLetterQueue, FifoQueue, QueueDepth } from "../queue/queue.ts";
import type { Log } from "../shared/log.ts";
import type { DeadLetterStore, Direction, ReplayReset } from "../store/dead-letters.ts";
import { type DeadLetterView, replayPlan, viewDeadLetter } from "./dead-letters.ts";
import {
  type FunctionError,
  functionError,
  type LogSource,
  type OutboundTraffic,
  outboundTraffic,
  type TransactionTraffic,
  transactionTraffic,
} from "./traffic.ts";

export type QueueName = Direction | `${Direction}DeadLetters`;

/** What the queues say about themselves. */
export interface QueueMonitor {
  depth(queue: QueueName): Promise<QueueDepth>;
  /** The age of the oldest message, where the platform tells it. */
  oldestAgeSeconds(queue: Direction): Promise<number | undefined>;
}

export interface OperatorDeps {
  /** Where dead letters are set aside, by the consumers or by SQS's redrive. */
  deadLetterQueues: Record<Direction, DeadLetterQueue>;
  /** Where the console keeps them once taken off those queues. */
  deadLetters: DeadLetterStore;
  replayReset: ReplayReset;
  /** Where a replay puts them back. */
  queues: Record<Direction, FifoQueue>;
  monitor: QueueMonitor;
  logs: LogSource;
  homeserver: () => Promise<HomeserverHealth>;
  /** The tables the application shows the operator. */
  sections: readonly ConsoleSection[];
  /** The application's context, for the sections' loaders. */
  applicationContext: () => ServiceContext;
  version: string;
  log: Log;
  now?: () => number;
}

/** Who asked for a replay or a discard: logged with it. */
export interface Operator {
  /** The name the operator gave, if any. */
  name?: string;
  sourceIp: string;
  userAgent?: string;
}

/** Dead letters of one queue: those named, those of one room (FIFO group), or all. */
export type Selection = { direction: Direction } & (
  | { ids: string[] }
  | { room: string }
  | { all: true }
);

export interface OperationResult {
  /** The dead letters acted on. */
  done: string[];
  /** Those selected but no longer there (acted on already), or not replayable. */
  skipped: { id: string; why: string }[];
}

/** Dead letters taken off a queue per request at most: the rest on the next. */
const MAX_COLLECTED = 1000;
/**
 * Per queue and scheduled sweep: within the admin function's time (each is two writes), the rest
 * five minutes later.
 */
const MAX_SWEPT = 300;

/** How often the stack (EventBridge) and local mode (a timer) run `OperatorConsole.sweep`. */
export const DEAD_LETTER_SWEEP_MINUTES = 5;

/** Dead letters waiting for the operator, by queue. */
export type Waiting = Record<Direction, number>;
const RECENT_TRAFFIC = 50;
const RECENT_ERRORS = 20;
const DIRECTIONS: Direction[] = ["inbound", "outbound"];

/** A section's ID: a path segment of the API (`/admin/api/sections/{id}`) and the page's. */
const SECTION_ID = /^[a-z0-9-]{1,64}$/;

/** Why `id` cannot be a section's, given the IDs of the sections before it; undefined if it can. */
export function sectionIdProblem(id: string, taken: ReadonlySet<string>): string | undefined {
  if (!SECTION_ID.test(id)) return "has an ID that is not 1 to 64 of a-z, 0-9 and -";
  if (taken.has(id)) return "is declared twice: section IDs are unique";
  return undefined;
}

/**
 * The operator console's core: health, recent traffic, dead letters (listed, replayed,
 * discarded) and the sections the application declares. Knows nothing of HTTP or Lambda.
 */
export class OperatorConsole {
  private readonly now: () => number;

  /** Throws, naming it, on a section whose ID is refused (`sectionIdProblem`). */
  constructor(private readonly deps: OperatorDeps) {
    this.now = deps.now ?? Date.now;
    const seen = new Set<string>();
    for (const { id } of deps.sections) {
      const problem = sectionIdProblem(id, seen);
      if (problem) throw new Error(`The console section ${JSON.stringify(id)} ${problem}`);
      seen.add(id);
    }
  }

  async status() {
    const { monitor, logs } = this.deps;
    const [homeserver, lastTransactions, queues, deadLetters, errors] = await Promise.all([
      this.deps.homeserver(),
      logs.recent("transactions", 1),
      Promise.all(
        DIRECTIONS.map(async (direction) => ({
          ...(await monitor.depth(direction)),
          oldestAgeSeconds: (await monitor.oldestAgeSeconds(direction)) ?? null,
        })),
      ),
      Promise.all(DIRECTIONS.map((direction) => this.deadLetterCount(direction))),
      logs.recent("errors", RECENT_ERRORS),
    ]);
    const last = lastTransactions[0] && transactionTraffic(lastTransactions[0]);
    return {
      version: this.deps.version,
      homeserver,
      lastTransaction: last ? { txnId: last.txnId, at: last.at } : null,
      queues: { inbound: queues[0], outbound: queues[1] },
      deadLetters: { inbound: deadLetters[0], outbound: deadLetters[1] },
      recentErrors: errors.map(functionError) satisfies FunctionError[],
    };
  }

  async traffic(): Promise<{ transactions: TransactionTraffic[]; outbound: OutboundTraffic[] }> {
    const [transactions, outbound] = await Promise.all([
      this.deps.logs.recent("transactions", RECENT_TRAFFIC),
      this.deps.logs.recent("outbound", RECENT_TRAFFIC),
    ]);
    return {
      transactions: transactions.map(transactionTraffic),
      outbound: outbound.map(outboundTraffic),
    };
  }

  /** Those still in the dead-letter queue, and those the console took off it. */
  private async deadLetterCount(direction: Direction): Promise<number> {
    const [queued, kept] = await Promise.all([
      this.deps.monitor.depth(`${direction}DeadLetters`),
      this.deps.deadLetters.count(direction),
    ]);
    return queued.waiting + queued.inFlight + queued.delayed + kept;
  }

  /**
   * The scheduled sweep (every 5 minutes): takes the dead letters off their queues into the store,
   * where they stay until replayed or discarded (a queue would delete them after 14 days), and,
   * while any wait, logs an ERROR line that the alarm counts, so that it stays in ALARM until the
   * operator has dealt with them all.
   */
  async sweep(): Promise<Waiting> {
    const [inbound, outbound] = await Promise.all(
      DIRECTIONS.map(async (direction) => {
        await this.collect(direction, MAX_SWEPT);
        return this.deadLetterCount(direction);
      }),
    );
    const waiting = { inbound: inbound ?? 0, outbound: outbound ?? 0 };
    if (waiting.inbound + waiting.outbound > 0) {
      this.deps.log.error("dead letters waiting", { deadLetters: waiting });
    } else {
      this.deps.log.debug("no dead letters waiting");
    }
    return waiting;
  }

  /**
   * Takes what waits in a dead-letter queue into the store: each message kept before it is
   * deleted, so a failure in between keeps it twice at most under the same ID (once).
   */
  private async collect(direction: Direction, limit = MAX_COLLECTED): Promise<void> {
    const queue = this.deps.deadLetterQueues[direction];
    for (let taken = 0; taken < limit; ) {
      const messages = await queue.receive();
      if (messages.length === 0) return;
      for (const message of messages) {
        await this.deps.deadLetters.put({
          direction,
          id: message.id,
          groupId: message.groupId,
          sequenceNumber: message.sequenceNumber,
          sentAt: message.sentAt,
          body: message.body,
        });
        await queue.delete(message.receiptHandle);
      }
      taken += messages.length;
    }
  }

  async listDeadLetters(
    filter: { direction?: Direction; room?: string } = {},
  ): Promise<DeadLetterView[]> {
    const directions = filter.direction ? [filter.direction] : DIRECTIONS;
    const lists = await Promise.all(
      directions.map(async (direction) => {
        await this.collect(direction);
        return this.deps.deadLetters.list(direction);
      }),
    );
    const now = this.now();
    return lists
      .flat()
      .map((letter) => viewDeadLetter(letter, now))
      .filter((view) => !filter.room || view.roomId === filter.room || view.group === filter.room);
  }

  private async select(selection: Selection) {
    await this.collect(selection.direction);
    const letters = await this.deps.deadLetters.list(selection.direction);
    if ("all" in selection) return { letters, missing: [] };
    if ("room" in selection) {
      const now = this.now();
      return {
        letters: letters.filter((letter) => {
          const view = viewDeadLetter(letter, now);
          return view.roomId === selection.room || view.group === selection.room;
        }),
        missing: [],
      };
    }
    const wanted = new Set(selection.ids);
    return {
      letters: letters.filter((letter) => wanted.has(letter.id)),
      missing: selection.ids.filter((id) => !letters.some((letter) => letter.id === id)),
    };
  }

  /** What a replay or a discard acts on, and its result so far: the IDs no longer there skipped. */
  private async beginOperation(selection: Selection) {
    const { letters, missing } = await this.select(selection);
    const result: OperationResult = {
      done: [],
      skipped: missing.map((id) => ({ id, why: "not found (replayed or discarded already?)" })),
    };
    return { letters, result };
  }

  /**
   * Puts dead letters back on their queue, in their rooms' order, one at a time: each is reset
   * (claim reopened, server errors forgotten), queued, then no longer kept. A replay repeated
   * after a failure part-way queues the same message again under the same deduplication ID and
   * idempotency key, so nothing is done twice.
   */
  async replay(selection: Selection, operator: Operator): Promise<OperationResult> {
    const { letters, result } = await this.beginOperation(selection);
    for (const letter of letters) {
      const plan = replayPlan(letter);
      if (!plan) {
        result.skipped.push({ id: letter.id, why: "unreadable: it can only be discarded" });
        continue;
      }
      if (plan.reopen) {
        await this.deps.replayReset.reopenClaim(plan.reopen.key, plan.reopen.attempts);
      }
      if (plan.forgetServerErrorsOf) {
        await this.deps.replayReset.forgetServerErrors(plan.forgetServerErrorsOf);
      }
      await this.deps.queues[plan.direction].send([plan.message]);
      await this.deps.deadLetters.delete(letter.direction, letter.id);
      result.done.push(letter.id);
      this.deps.log.info("dead letter replayed", {
        ...this.about(letter.direction, letter.id, letter.groupId),
        operator,
      });
    }
    return result;
  }

  async discard(selection: Selection, operator: Operator): Promise<OperationResult> {
    const { letters, result } = await this.beginOperation(selection);
    for (const letter of letters) {
      if (await this.deps.deadLetters.delete(letter.direction, letter.id)) {
        result.done.push(letter.id);
        this.deps.log.info("dead letter discarded", {
          ...this.about(letter.direction, letter.id, letter.groupId),
          operator,
        });
      } else {
        result.skipped.push({ id: letter.id, why: "not found (discarded already?)" });
      }
    }
    return result;
  }

  private about(direction: Direction, id: string, group: string) {
    return { direction, deadLetterId: id, group };
  }

  /** The application's sections, as declared: what the page lays out. */
  sections(): { id: string; title: string; columns: ConsoleColumn[] }[] {
    return this.deps.sections.map(({ id, title, columns }) => ({ id, title, columns }));
  }

  /** One section's rows, undefined for a section the application has not. */
  async sectionRows(id: string): Promise<ConsoleRow[] | undefined> {
    const section = this.deps.sections.find((candidate) => candidate.id === id);
    if (!section) return undefined;
    return section.rows({
      ...this.deps.applicationContext(),
      // Wider than the page's table: a section may look further back for its rows' last calls.
      recentCalls: async () =>
        (await this.deps.logs.recent("outbound", RECENT_TRAFFIC * 4)).map(outboundTraffic),
    });
  }
}
