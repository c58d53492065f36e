import { buildApp } from "fauxqs";

export interface SqsLocal {
  endpoint: string;
  stop(): Promise<void>;
}

/** Starts fauxqs (SQS's JSON protocol, in memory) in this process, bound to 127.0.0.1. */
export async function startSqsLocal(): Promise<SqsLocal> {
  const app = buildApp({ logger: false });
  const address = await app.listen({ port: 0, host: "127.0.0.1" });
  return { endpoint: address, stop: () => app.close() };
}
