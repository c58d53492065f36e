import { RemovalPolicy } from "aws-cdk-lib";
import { AccessLogFormat } from "aws-cdk-lib/aws-apigateway";
import {
  type CfnStage,
  HttpApi,
  HttpMethod,
  type HttpRoute,
  HttpStage,
  LogGroupLogDestination,
} from "aws-cdk-lib/aws-apigatewayv2";
import { HttpLambdaIntegration } from "aws-cdk-lib/aws-apigatewayv2-integrations";
import type { IFunction } from "aws-cdk-lib/aws-lambda";
import { LogGroup, type RetentionDays } from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import type { AppRoute } from "../functions/appservice/application.ts";
import { type Route, routeTable } from "../functions/appservice/protocol/routes.ts";

/** Requests per second an application route takes when it does not say. */
export const DEFAULT_APP_ROUTE_RATE_LIMIT = 20;
/** Requests per second the operator console's routes take (twice that in a burst). */
export const OPERATOR_RATE_LIMIT = 5;

/**
 * The API's access log, one JSON object per request. `status` is a number, so that metric
 * filters compare it; the rest are strings (a variable API Gateway lacks is written "-").
 */
const ACCESS_LOG_FORMAT = `{${[
  '"requestId":"$context.requestId"',
  '"ip":"$context.identity.sourceIp"',
  '"time":"$context.requestTime"',
  '"routeKey":"$context.routeKey"',
  '"status":$context.status',
  '"latencyMs":"$context.responseLatency"',
  '"integrationLatencyMs":"$context.integrationLatency"',
  '"integrationStatus":"$context.integrationStatus"',
  '"integrationError":"$context.integrationErrorMessage"',
  '"error":"$context.error.message"',
  '"responseLength":"$context.responseLength"',
].join(",")}}`;

export interface AppserviceApiProps {
  /** The function that serves each handler of the route table, and the `$default` fallback. */
  handlers: Record<Route["handler"] | "fallback", IFunction>;
  /** The application's HTTP routes, each with its rate limit (`DEFAULT_APP_ROUTE_RATE_LIMIT`). */
  appRoutes: Pick<AppRoute, "method" | "path" | "rateLimit">[];
  /** The `$default` fallback's rate limit. @default 100 (burst 200) */
  apiRateLimit?: number;
  /** Each homeserver route's. @default 100 (burst 200) */
  homeserverRateLimit?: number;
  logRetention: RetentionDays;
}

/**
 * The HTTP API: the route table's routes (the homeserver's, the application's, the operator
 * console's), each to its function and with a throttle of its own, anything else to the fallback
 * function; its `$default` stage auto-deployed, with a JSON access log.
 *
 * Made in the appservice's own scope, not a construct of its own: see `MatrixAppservice`.
 */
export class AppserviceApi {
  readonly api: HttpApi;
  readonly stage: HttpStage;
  /** The access log (the alarm's metric filters read it). */
  readonly accessLogs: LogGroup;
  /** Every route of the route table. */
  readonly routes: Route[];

  constructor(scope: Construct, props: AppserviceApiProps) {
    const { handlers, appRoutes } = props;
    this.routes = routeTable(appRoutes);
    this.api = new HttpApi(scope, "Api", {
      description: "Matrix application service API",
      createDefaultStage: false,
      defaultIntegration: new HttpLambdaIntegration("Fallback", handlers.fallback),
    });
    this.accessLogs = new LogGroup(scope, "ApiAccessLogs", {
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const rateLimit = props.apiRateLimit ?? 100;
    this.stage = new HttpStage(scope, "DefaultStage", {
      httpApi: this.api,
      stageName: "$default",
      autoDeploy: true,
      throttle: { rateLimit, burstLimit: rateLimit * 2 },
      accessLogSettings: {
        destination: new LogGroupLogDestination(this.accessLogs),
        format: AccessLogFormat.custom(ACCESS_LOG_FORMAT),
      },
    });
    const integrations: Record<Route["handler"], HttpLambdaIntegration> = {
      transactions: new HttpLambdaIntegration("Transactions", handlers.transactions),
      queries: new HttpLambdaIntegration("Queries", handlers.queries),
      app: new HttpLambdaIntegration("App", handlers.app),
      admin: new HttpLambdaIntegration("Admin", handlers.admin),
    };
    for (const route of this.routes) {
      const [httpRoute] = this.api.addRoutes({
        path: route.path,
        methods: [HttpMethod[route.method]],
        integration: integrations[route.handler],
      });
      // The stage's route settings name the routes: they must exist first.
      this.stage.node.addDependency(httpRoute as HttpRoute);
    }
    // Each route has a throttle of its own: the homeserver's routes apart from the application's
    // public ones, so that a flood of the latter costs the homeserver nothing.
    // (A JSON property: CloudFormation's own casing.)
    const homeserverLimit = props.homeserverRateLimit ?? 100;
    const limitOf = (route: Route) =>
      route.handler === "admin"
        ? OPERATOR_RATE_LIMIT
        : route.handler === "app"
          ? (appRoutes.find((r) => r.method === route.method && r.path === route.path)?.rateLimit ??
            DEFAULT_APP_ROUTE_RATE_LIMIT)
          : homeserverLimit;
    (this.stage.node.defaultChild as CfnStage).routeSettings = Object.fromEntries(
      this.routes.map((route) => [
        `${route.method} ${route.path}`,
        { ThrottlingRateLimit: limitOf(route), ThrottlingBurstLimit: limitOf(route) * 2 },
      ]),
    );
  }
}
