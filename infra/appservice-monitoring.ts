import { Duration } from "aws-cdk-lib";
import {
  type Alarm,
  ComparisonOperator,
  MathExpression,
  Metric,
  TreatMissingData,
} from "aws-cdk-lib/aws-cloudwatch";
import { SnsAction } from "aws-cdk-lib/aws-cloudwatch-actions";
import { FilterPattern, type ILogGroup } from "aws-cdk-lib/aws-logs";
import { Topic } from "aws-cdk-lib/aws-sns";
import { EmailSubscription } from "aws-cdk-lib/aws-sns-subscriptions";
import type { Queue } from "aws-cdk-lib/aws-sqs";
import type { Construct } from "constructs";
import type { Route } from "../functions/appservice/protocol/routes.ts";
import { NEAR_TIMEOUT_SHARE } from "../functions/handlers/shared/lambda-handler.ts";
import { DEAD_LETTER_SWEEP_MINUTES } from "../functions/operator/console.ts";
import { OUTCOME_LOG_MESSAGES } from "../functions/outbox/decide.ts";
import { DEFAULT_BACKOFF, retriesCovering } from "../functions/shared/backoff.ts";
import type { AppserviceFunctionName } from "./appservice-functions.ts";

/** The oldest message of either queue older than this: a consumer is stuck or a room blocked. */
export const QUEUE_AGE_ALARM = Duration.minutes(15);
/**
 * An outbound call's attempt (0 the first) from which each retry counts as a problem: the retries
 * expected to fill the queue age threshold, so that a call held up as long as a queue's oldest
 * message alarms as that message would.
 */
export const OUTBOX_RETRIES_BEFORE_ALARM = retriesCovering(
  QUEUE_AGE_ALARM.toSeconds(),
  DEFAULT_BACKOFF,
);
/**
 * 5-minute periods the alarm waits clear before it returns to OK: longer than the outbox's
 * longest wait between two retries (the backoff's cap), so a retried call keeps it firing.
 */
export const ALARM_CLEAR_PERIODS = 3;
/**
 * Lambda's own lines for a failed invocation: a timeout as the runtime wrote it ("Task timed
 * out") and as the REPORT line now says it ("Status: timeout"), an uncaught error, a crash.
 */
export const RUNTIME_FAILURES_PATTERN =
  '?"Task timed out" ?"Status: timeout" ?"Invoke Error" ?"Uncaught Exception" ?"Runtime.ExitError"';

/** The alarm's SNS topic: `topicArn`, `email`, or both. */
export interface AlarmAction {
  topicArn?: string;
  email?: string;
}

export interface AppserviceMonitoringProps {
  /** The metrics' namespace (`MatrixAppservice/<the appservice's path>`). */
  namespace: string;
  /** Every function whose log lines count, by name (`outbox` for its retries too). */
  functions: Record<AppserviceFunctionName, { logGroup: ILogGroup }>;
  /** The API's access log and its routes (the transactions routes answer 200 or alarm). */
  accessLogs: ILogGroup;
  routes: Route[];
  inboundQueue: Queue;
  outboundQueue: Queue;
  action?: AlarmAction;
}

/**
 * One alarm, over three metrics ($0.30 a month: CloudWatch bills each metric an alarm reads):
 * - problems: one metric that free log metric filters feed: every ERROR log line of every
 *   function (unexpected errors, an application's failures, each failed attempt of an inbound
 *   item and its dead-lettering, dead-lettered calls, an invocation close to its timeout, the
 *   sweep's "dead letters waiting" every 5 minutes until the operator replays or discards), the
 *   runtime's own failures (timeouts, in both of the forms Lambda writes, and crashes), an
 *   outbound call still failing after `OUTBOX_RETRIES_BEFORE_ALARM` attempts, 5xx answers and
 *   integration errors of the API (a function failed or throttled), and every answer but 200 on
 *   a transactions route (the homeserver marks the appservice down on any of them);
 * - the age of the oldest message of each queue (consumers throttled, failing or stuck).
 * It fires at one breaching 5-minute period and clears after `ALARM_CLEAR_PERIODS` clear ones:
 * an outbound call retried at the backoff's cap (5 minutes, jittered) keeps it firing.
 * Sent to `action`'s topic (when it fires and when it clears) when there is one.
 *
 * Made in the appservice's own scope, not a construct of its own: see `MatrixAppservice`. (The
 * metric filters belong to the log groups they read.)
 */
export class AppserviceMonitoring {
  readonly alarm: Alarm;

  constructor(scope: Construct, props: AppserviceMonitoringProps) {
    const { namespace, functions, accessLogs } = props;
    const problems = new Metric({
      namespace,
      metricName: "Problems",
      statistic: "Sum",
      period: Duration.minutes(5),
    });
    const countProblems = (id: string, logGroup: ILogGroup, filterPattern: string) =>
      logGroup.addMetricFilter(id, {
        filterPattern: FilterPattern.literal(filterPattern),
        metricNamespace: namespace,
        metricName: "Problems",
        metricValue: "1",
      });
    for (const [name, fn] of Object.entries(functions)) {
      countProblems(`${name}ErrorLines`, fn.logGroup, '{ $.level = "ERROR" }');
      countProblems(`${name}RuntimeFailures`, fn.logGroup, RUNTIME_FAILURES_PATTERN);
    }
    // A retry logs WARN, and SQS's age metric stops counting a message received three times: an
    // unreachable target would stay unseen for the whole retry span.
    countProblems(
      "outboxRetriesPastThreshold",
      functions.outbox.logGroup,
      `{ $.level = "WARN" && $.message = "${OUTCOME_LOG_MESSAGES.retry}" && $.attempt >= ${OUTBOX_RETRIES_BEFORE_ALARM} }`,
    );
    // A failed invocation (a throttled function too) shows as an integration error, whatever
    // status API Gateway then answers.
    countProblems("ApiFailures", accessLogs, '{ $.status >= 500 || $.integrationError != "-" }');
    const transactionRoutes = props.routes
      .filter((route) => route.handler === "transactions")
      .map((route) => `$.routeKey = "${route.method} ${route.path}"`);
    countProblems(
      "TransactionsNotAccepted",
      accessLogs,
      `{ $.status != 200 && (${transactionRoutes.join(" || ")}) }`,
    );
    const age = (queue: Queue) =>
      queue.metricApproximateAgeOfOldestMessage({
        period: Duration.minutes(5),
        statistic: "Maximum",
      });
    const ageThreshold = QUEUE_AGE_ALARM.toSeconds();
    this.alarm = new MathExpression({
      // 1 or more: a problem counted, or a queue's oldest message past the threshold. Missing
      // data (nothing logged, an idle queue) counts as 0. One expression per metric, then
      // their maximum: each step a form the metric math docs show.
      expression: "MAX([problemsCount, inboundAgeShare, outboundAgeShare])",
      usingMetrics: {
        problemsCount: new MathExpression({
          expression: "FILL(problems, 0)",
          usingMetrics: { problems },
          period: Duration.minutes(5),
        }),
        inboundAgeShare: new MathExpression({
          expression: `FILL(inboundAge, 0) / ${ageThreshold}`,
          usingMetrics: { inboundAge: age(props.inboundQueue) },
          period: Duration.minutes(5),
        }),
        outboundAgeShare: new MathExpression({
          expression: `FILL(outboundAge, 0) / ${ageThreshold}`,
          usingMetrics: { outboundAge: age(props.outboundQueue) },
          period: Duration.minutes(5),
        }),
      },
      label: "Problems counted, or the oldest message's age over its threshold",
      period: Duration.minutes(5),
    }).createAlarm(scope, "Alarm", {
      alarmDescription: `Errors logged by a function (failed items and dead letters included; every ${DEAD_LETTER_SWEEP_MINUTES} minutes while dead letters wait for the operator), timeouts and crashes, invocations within ${NEAR_TIMEOUT_SHARE * 100}% of their timeout, an outbound call failing ${OUTBOX_RETRIES_BEFORE_ALARM} times, API 5xx or integration errors, or an answer but 200 on a transactions route (see the logs); or a queue's oldest message over ${QUEUE_AGE_ALARM.toMinutes()} minutes old (its consumer throttled, failing or held up; the homeserver down?)`,
      threshold: 1,
      evaluationPeriods: ALARM_CLEAR_PERIODS,
      datapointsToAlarm: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    const { action } = props;
    if (action) {
      const topic = action.topicArn
        ? Topic.fromTopicArn(scope, "AlarmTopic", action.topicArn)
        : new Topic(scope, "AlarmTopic", {
            displayName: "Matrix appservice alarm",
            // cdk-nag AwsSolutions-SNS3: publishers must use TLS.
            enforceSSL: true,
          });
      if (action.email) topic.addSubscription(new EmailSubscription(action.email));
      // Told when it fires and when it clears.
      this.alarm.addAlarmAction(new SnsAction(topic));
      this.alarm.addOkAction(new SnsAction(topic));
    }
  }
}
