import type { Logger } from "@aws-lambda-powertools/logger";
import { injectLambdaContext } from "@aws-lambda-powertools/logger/middleware";
import middy, { type MiddlewareObj } from "@middy/core";
import type { Context } from "aws-lambda";
import type { Log } from "../../shared/log.ts";

/** An invocation that ends with less than this share of its time left is logged as an error. */
export const NEAR_TIMEOUT_SHARE = 0.2;

/**
 * Logs (at ERROR, which the stack's problems alarm counts) an invocation that came within
 * `NEAR_TIMEOUT_SHARE` of its timeout: the next slower one would be cut off.
 */
export const nearTimeoutAlert = (log: Log): MiddlewareObj<unknown, unknown, Error, Context> => {
  let startMs = 0;
  const check = ({ context }: { context: Context }) => {
    const leftMs = context.getRemainingTimeInMillis();
    if (leftMs < startMs * NEAR_TIMEOUT_SHARE) {
      log.error("the invocation came close to its timeout", {
        durationMs: startMs - leftMs,
        leftMs,
      });
    }
  };
  return {
    before: ({ context }) => {
      startMs = context.getRemainingTimeInMillis();
    },
    after: check,
    onError: check,
  };
};

/**
 * A Lambda entry point whose dependencies are built on the first invocation (cold start) and
 * kept for the next ones; a failed build is retried on the next invocation. Every log line of an
 * invocation carries its request ID (Powertools' context injection), and one that comes close to
 * its timeout says so.
 */
export function lambdaHandler<D extends { log: Logger }, E, R>(
  buildDeps: () => Promise<D>,
  create: (deps: D) => (event: E, context: Context) => Promise<R>,
): (event: E, context: Context) => Promise<R> {
  let handler: Promise<(event: E, context: Context) => Promise<R>> | undefined;
  return async (event, context) => {
    handler ??= buildDeps()
      .then((deps) =>
        middy(create(deps))
          .use(injectLambdaContext(deps.log))
          .use(nearTimeoutAlert(deps.log) as MiddlewareObj<E, R, Error, Context>),
      )
      .catch((error: unknown) => {
        handler = undefined;
        throw error;
      });
    return (await handler)(event, context);
  };
}
