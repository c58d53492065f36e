/**
 * A Lambda entry point whose dependencies are built on the first invocation (cold start) and
 * kept for the next ones; a failed build is retried on the next invocation.
 */
export function lambdaHandler<D, E, R, C>(
  buildDeps: () => Promise<D>,
  create: (deps: D) => (event: E, context: C) => Promise<R>,
): (event: E, context: C) => Promise<R> {
  let handler: Promise<(event: E, context: C) => Promise<R>> | undefined;
  return async (event, context) => {
    handler ??= buildDeps()
      .then(create)
      .catch((error: unknown) => {
        handler = undefined;
        throw error;
      });
    return (await handler)(event, context);
  };
}

export function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`Environment variable ${name} is required`);
  return value;
}
