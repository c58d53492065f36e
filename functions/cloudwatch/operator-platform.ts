import { CloudWatchClient, GetMetricDataCommand } from "@aws-sdk/client-cloudwatch";
import { CloudWatchLogsClient, FilterLogEventsCommand } from "@aws-sdk/client-cloudwatch-logs";
import { TRANSACTION_LOG_MESSAGE } from "../appservice/pipeline/accept-transaction.ts";
import type { LogKind, LogRecord, LogSource } from "../operator/traffic.ts";

/** What the console reads in AWS that local mode keeps in memory. */
export interface OperatorPlatform {
  logs: LogSource;
  /** The age of the oldest message of the queue at this URL, where known. */
  queueAge(queueUrl: string): Promise<number | undefined>;
}

/** How far back the console looks in the logs. */
const LOG_WINDOW_MS = 3600_000;
/** Pages read from one log group at most: the newest lines of a busy hour may be left out. */
const MAX_PAGES = 10;

// CloudWatch Logs' JSON filter patterns (the lines are Powertools' JSON).
const PATTERNS: Record<LogKind, string> = {
  transactions: `{ $.message = "${TRANSACTION_LOG_MESSAGE}" }`,
  outbound: '{ $.message = "outbound call*" }',
  errors: '{ $.level = "ERROR" }',
};

/** The function whose log group holds each kind (errors: every function's). */
const SOURCES: Record<Exclude<LogKind, "errors">, string> = {
  transactions: "transactions",
  outbound: "outbox",
};

/**
 * The functions' log lines in CloudWatch Logs (`FilterLogEvents`, no charge per query): the
 * newest of the last hour, per kind.
 */
export class CloudWatchLogSource implements LogSource {
  constructor(
    private readonly client: Pick<CloudWatchLogsClient, "send">,
    /** Log group names by function name. */
    private readonly logGroups: Record<string, string>,
    private readonly now: () => number = Date.now,
  ) {}

  async recent(kind: LogKind, limit: number): Promise<LogRecord[]> {
    const functions =
      kind === "errors" ? Object.keys(this.logGroups) : [SOURCES[kind]].filter(Boolean);
    const lists = await Promise.all(functions.map((fn) => this.read(fn, kind)));
    return lists
      .flat()
      .sort((a, b) => b.at - a.at)
      .slice(0, limit);
  }

  private async read(fn: string, kind: LogKind): Promise<LogRecord[]> {
    const logGroupName = this.logGroups[fn];
    if (!logGroupName) return [];
    const records: LogRecord[] = [];
    let nextToken: string | undefined;
    for (let page = 0; page < MAX_PAGES; page++) {
      const result = await this.client.send(
        new FilterLogEventsCommand({
          logGroupName,
          filterPattern: PATTERNS[kind],
          startTime: this.now() - LOG_WINDOW_MS,
          ...(nextToken && { nextToken }),
        }),
      );
      for (const event of result.events ?? []) {
        const record = parseLine(event.message ?? "", event.timestamp ?? 0, fn);
        if (record) records.push(record);
      }
      nextToken = result.nextToken;
      if (!nextToken) break;
    }
    return records;
  }
}

/** A Powertools JSON line as a record; undefined for anything else (the runtime's own lines). */
export function parseLine(line: string, timestamp: number, source: string): LogRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line.slice(line.indexOf("{")));
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { level, message, timestamp: written, ...attributes } = value as Record<string, unknown>;
  if (typeof message !== "string") return undefined;
  const at = typeof written === "string" ? Date.parse(written) : Number.NaN;
  return {
    at: Number.isNaN(at) ? timestamp : at,
    level: typeof level === "string" ? level : "INFO",
    message,
    attributes,
    source,
  };
}

/** A queue's `ApproximateAgeOfOldestMessage`, its latest minute (CloudWatch's SQS metrics). */
export async function oldestMessageAge(
  client: Pick<CloudWatchClient, "send">,
  queueUrl: string,
  now: () => number = Date.now,
): Promise<number | undefined> {
  const queueName = queueUrl.slice(queueUrl.lastIndexOf("/") + 1);
  const { MetricDataResults = [] } = await client.send(
    new GetMetricDataCommand({
      StartTime: new Date(now() - 10 * 60_000),
      EndTime: new Date(now()),
      ScanBy: "TimestampDescending",
      MetricDataQueries: [
        {
          Id: "age",
          MetricStat: {
            Metric: {
              Namespace: "AWS/SQS",
              MetricName: "ApproximateAgeOfOldestMessage",
              Dimensions: [{ Name: "QueueName", Value: queueName }],
            },
            Period: 60,
            Stat: "Maximum",
          },
        },
      ],
    }),
  );
  return MetricDataResults[0]?.Values?.[0];
}

export const cloudWatchOperatorPlatform = (config: {
  logGroups: Record<string, string>;
}): OperatorPlatform => {
  const metrics = new CloudWatchClient({});
  return {
    logs: new CloudWatchLogSource(new CloudWatchLogsClient({}), config.logGroups),
    queueAge: (queueUrl) => oldestMessageAge(metrics, queueUrl),
  };
};
