import type { SQSRecord } from "aws-lambda";
import { decideOutboundMessage } from "../outbox/decide.ts";
import { queueJson, RetryLater } from "../queue/queue.ts";
import { sha256 } from "../shared/hash.ts";
import { outboxDeps } from "../wiring/deps.ts";
import type { OutboxHandlerDeps } from "../wiring/handler-deps.ts";
import { fifoConsumer } from "./shared/fifo-batch.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";

/**
 * The outbound queue's consumer: hands each message to the outbox (`decideOutboundMessage`), in
 * order per group, and does what it decided: a message to retry is failed with its wait; one
 * that can never succeed goes to the dead-letter queue, so its room goes on.
 */
export const createOutboxHandler = (deps: OutboxHandlerDeps) => {
  const processRecord = async (record: SQSRecord) => {
    const attempt = Number(record.attributes.ApproximateReceiveCount) - 1;
    const queuedAt = Number(record.attributes.SentTimestamp);
    const decision = await decideOutboundMessage(
      record.body,
      attempt,
      deps,
      Number.isFinite(queuedAt) ? queuedAt : undefined,
    );
    deps.metrics.count(decision.metric);
    if (decision.kind === "retry") throw new RetryLater(decision.delaySeconds, decision.reason);
    if (decision.kind === "dead") {
      await deps.control.deadLetter({
        // A FIFO message always has its group; the rest is for a hand-made event.
        groupId: record.attributes.MessageGroupId ?? record.messageId,
        // Not the action's id, which a refused action may not have in a form SQS takes.
        deduplicationId: sha256(record.body),
        body: queueJson(decision.deadLetter),
      });
    }
  };
  return fifoConsumer(processRecord, deps);
};

export const handler = lambdaHandler(
  () =>
    lambdaDeps("outbox", async (config, platform) => {
      const deps = await outboxDeps(config, platform);
      if (!platform.cryptoStoreSecret) return deps;
      // Encrypted rooms on: crypto loaded then alone (esbuild wraps what `import()` loads in a
      // lazy initializer), so that the other deployments' cold starts never evaluate it.
      const { withRoomEncryptor } = await import("../wiring/crypto.ts");
      return withRoomEncryptor(deps, config, platform);
    }),
  createOutboxHandler,
);
