import { TRANSACTION_LOG_MESSAGE } from "../appservice/pipeline/accept-transaction.ts";
import { OUTCOME_LOG_MESSAGES } from "../outbox/decide.ts";
import type { Log } from "../shared/log.ts";

/**
 * Recent traffic is read back from the log lines the functions write anyway (one per
 * transaction, one per outbound call): nothing more is written on the ack path. In AWS they are
 * CloudWatch Logs, kept as long as the log groups keep them; locally, the last lines in memory.
 */
export type LogKind = "transactions" | "outbound" | "errors";

/** One structured log line. */
export interface LogRecord {
  /** Epoch milliseconds. */
  at: number;
  level: string;
  message: string;
  attributes: Record<string, unknown>;
  /** The function that wrote it, where known. */
  source?: string;
}

/** The newest log lines of a kind, newest first. */
export interface LogSource {
  recent(kind: LogKind, limit: number): Promise<LogRecord[]>;
}

const outboundMessages: ReadonlySet<string> = new Set(Object.values(OUTCOME_LOG_MESSAGES));

/** Which kinds a log line is of (an outbound call that failed is an error as well). */
export const kindsOf = (level: string, message: string): LogKind[] => [
  ...(message === TRANSACTION_LOG_MESSAGE ? (["transactions"] as const) : []),
  ...(outboundMessages.has(message) ? (["outbound"] as const) : []),
  ...(level.toUpperCase() === "ERROR" ? (["errors"] as const) : []),
];

/** A log line as it crosses from one of local mode's threads to another: plain data. */
export interface LogLine {
  level: string;
  message: string;
  attributes: Record<string, unknown>;
}

/** Errors kept readable through JSON, which would otherwise turn them into `{}`. */
const plain = (attributes: Record<string, unknown>): Record<string, unknown> =>
  JSON.parse(
    JSON.stringify(attributes, (_key, value) =>
      value instanceof Error ? { name: value.name, message: value.message } : value,
    ),
  );

/** Wraps `log`: each line of a kind also goes to `send`, as plain data. */
export function forwardTrafficLines(log: Log, send: (line: LogLine) => void): Log {
  const method =
    (level: keyof Log) =>
    (message: string, ...attributes: Record<string, unknown>[]) => {
      log[level](message, ...attributes);
      if (kindsOf(level, message).length === 0) return;
      send({ level, message, attributes: plain(Object.assign({}, ...attributes)) });
    };
  return {
    debug: method("debug"),
    info: method("info"),
    warn: method("warn"),
    error: method("error"),
  };
}

/** How many lines of each kind local mode keeps. */
export const RECENT_LINES_KEPT = 200;

/**
 * Local mode's log source: `tee` wraps the log every function writes to, and the last
 * `RECENT_LINES_KEPT` lines of each kind are kept in memory.
 */
export class RecentLogLines implements LogSource {
  private readonly lines: Record<LogKind, LogRecord[]> = {
    transactions: [],
    outbound: [],
    errors: [],
  };

  constructor(private readonly now: () => number = Date.now) {}

  tee(log: Log): Log {
    return forwardTrafficLines(log, (line) => this.add(line));
  }

  /** Keeps a line, written here or by another thread's function, if it is of a kind. */
  add({ level, message, attributes }: LogLine): void {
    const kinds = kindsOf(level, message);
    if (kinds.length === 0) return;
    const record: LogRecord = { at: this.now(), level: level.toUpperCase(), message, attributes };
    for (const kind of kinds) {
      const kept = this.lines[kind];
      kept.push(record);
      if (kept.length > RECENT_LINES_KEPT) kept.shift();
    }
  }

  async recent(kind: LogKind, limit: number): Promise<LogRecord[]> {
    return this.lines[kind].slice(-limit).reverse();
  }
}

export interface TransactionTraffic {
  at: string;
  txnId: string;
  events: number;
  /** `new`, `retry` (the same transaction again) or `reused` (a txnId reused with other events). */
  outcome: "new" | "retry" | "reused";
}

export interface OutboundTraffic {
  at: string;
  kind: string;
  roomId?: string;
  userId?: string;
  /** The homeserver's HTTP status, where it answered. */
  status?: number;
  /** Tries so far, this one included. */
  attempts: number;
  outcome: "done" | "retry" | "dead";
  /** Why it will be retried or was given up on. */
  reason?: string;
}

export interface FunctionError {
  at: string;
  source?: string;
  message: string;
  /** The error's own message, where the line carries one (never a stack). */
  error?: string;
}

const text = (value: unknown) => (typeof value === "string" ? value : undefined);
const number = (value: unknown) => (typeof value === "number" ? value : undefined);
const iso = (at: number) => new Date(at).toISOString();
const TRANSACTION_OUTCOMES = { accepted: "new", duplicate: "retry", reused: "reused" } as const;
const OUTBOUND_OUTCOMES = Object.fromEntries(
  Object.entries(OUTCOME_LOG_MESSAGES).map(([outcome, message]) => [message, outcome]),
) as Record<string, OutboundTraffic["outcome"]>;
const MAX_ERROR_CHARS = 300;

export function transactionTraffic(record: LogRecord): TransactionTraffic {
  const { txnId, events, outcome } = record.attributes;
  return {
    at: iso(record.at),
    txnId: text(txnId) ?? "",
    events: number(events) ?? 0,
    outcome: TRANSACTION_OUTCOMES[outcome as keyof typeof TRANSACTION_OUTCOMES] ?? "new",
  };
}

export function outboundTraffic(record: LogRecord): OutboundTraffic {
  const { kind, roomId, userId, status, attempt, reason } = record.attributes;
  const outcome = OUTBOUND_OUTCOMES[record.message] ?? "done";
  const reasonStatus = (reason as { status?: unknown } | undefined)?.status;
  const why = text(reason) ?? text((reason as { error?: unknown } | undefined)?.error) ?? undefined;
  return {
    at: iso(record.at),
    kind: text(kind) ?? "",
    ...(text(roomId) && { roomId: text(roomId) }),
    ...(text(userId) && { userId: text(userId) }),
    ...((number(status) ?? number(reasonStatus)) !== undefined && {
      status: number(status) ?? number(reasonStatus),
    }),
    attempts: (number(attempt) ?? 0) + 1,
    outcome,
    ...(why && { reason: why.slice(0, MAX_ERROR_CHARS) }),
  };
}

export function functionError(record: LogRecord): FunctionError {
  const error = record.attributes.error;
  const detail = text(error) ?? text((error as { message?: unknown } | undefined)?.message);
  return {
    at: iso(record.at),
    ...(record.source && { source: record.source }),
    message: record.message.slice(0, MAX_ERROR_CHARS),
    ...(detail && { error: detail.slice(0, MAX_ERROR_CHARS) }),
  };
}
