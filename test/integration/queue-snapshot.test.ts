import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  ChangeMessageVisibilityCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from "@aws-sdk/client-sqs";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { localSqs } from "../../functions/local/aws-clients.ts";
import { keepQueues, restoreQueues } from "../../functions/local/queue-snapshot.ts";
import { ensureFifoQueue } from "../../functions/local/queues.ts";
import { startSqsLocal } from "../../functions/local/sqs-local.ts";
import { SqsFifoQueue } from "../../functions/queue/sqs/queue.ts";
import { tempDir } from "../support/appservice.ts";

/** A fauxqs of its own with one FIFO queue and its dead-letter queue, as local mode makes them. */
async function queues() {
  const sqsLocal = await startSqsLocal();
  const sqs = localSqs(sqsLocal.endpoint);
  onTestFinished(async () => {
    sqs.destroy();
    await sqsLocal.stop();
  });
  const queue = await ensureFifoQueue(sqs, "kept", {
    visibilityTimeoutSeconds: 30,
    maxReceiveCount: 5,
  });
  const urls = new Map(
    [queue.url, queue.deadLetterUrl].map((url) => [url.slice(url.lastIndexOf("/") + 1), url]),
  );
  return { sqsLocal, sqs, queue, urls };
}

const receiveOne = async (sqs: SQSClient, queueUrl: string, visibilityTimeout?: number) => {
  const { Messages } = await sqs.send(
    new ReceiveMessageCommand({
      QueueUrl: queueUrl,
      MaxNumberOfMessages: 1,
      MessageSystemAttributeNames: ["All"],
      ...(visibilityTimeout !== undefined && { VisibilityTimeout: visibilityTimeout }),
    }),
  );
  return Messages?.[0];
};

/** Receives and deletes every message visible now, in the order the queue hands them out. */
async function drainVisible(sqs: SQSClient, queueUrl: string) {
  const received: Message[] = [];
  for (;;) {
    const message = await receiveOne(sqs, queueUrl);
    if (!message) return received;
    received.push(message);
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: message.ReceiptHandle }),
    );
  }
}

const counts = async (sqs: SQSClient, queueUrl: string) => {
  const { Attributes } = await sqs.send(
    new GetQueueAttributesCommand({ QueueUrl: queueUrl, AttributeNames: ["All"] }),
  );
  return {
    visible: Number(Attributes?.ApproximateNumberOfMessages),
    received: Number(Attributes?.ApproximateNumberOfMessagesNotVisible),
  };
};

const fifo = (groupId: string, body: string) => ({
  groupId,
  deduplicationId: `dedup-${body}`,
  body,
});

describe("the queues kept across a clean stop (DATA_DIR)", () => {
  it("come back in order per group, with their receive counts, waits and dead letters", async () => {
    const file = join(await tempDir(), "queues.jsonl");
    const before = await queues();
    await new SqsFifoQueue(before.sqs, before.queue.url).send([
      fifo("a", "a1"),
      fifo("a", "a2"),
      fifo("a", "a3"),
      fifo("b", "b1"),
      fifo("b", "b2"),
      fifo("c", "c1"),
    ]);
    await new SqsFifoQueue(before.sqs, before.queue.deadLetterUrl).send([fifo("a", "dead1")]);
    // a1: received and put off for 3 s, as the outbox does after a 5xx. b1: received twice and
    // given back at once. c1: received and not deleted, as by a consumer that failed.
    const a1 = await receiveOne(before.sqs, before.queue.url, 3);
    const b1 = await receiveOne(before.sqs, before.queue.url);
    const c1 = await receiveOne(before.sqs, before.queue.url);
    const giveBack = (message: Message | undefined) =>
      before.sqs.send(
        new ChangeMessageVisibilityCommand({
          QueueUrl: before.queue.url,
          ReceiptHandle: message?.ReceiptHandle,
          VisibilityTimeout: 0,
        }),
      );
    await giveBack(b1);
    const b1Again = await receiveOne(before.sqs, before.queue.url);
    await giveBack(b1Again);
    expect([a1?.Body, b1?.Body, c1?.Body, b1Again?.Body]).toEqual(["a1", "b1", "c1", "b1"]);

    expect(await keepQueues(before.sqsLocal, [...before.urls.keys()], file)).toBe(7);
    // Kept, then closed: a send now would be lost, so fauxqs refuses it.
    await expect(
      before.sqs.send(
        new SendMessageCommand({
          QueueUrl: before.queue.url,
          MessageBody: "late",
          MessageGroupId: "a",
          MessageDeduplicationId: "late",
        }),
      ),
    ).rejects.toThrow();
    const kept = readFileSync(file, "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    const a1VisibleAt = kept.find((m) => m.body === "a1").visibleAt as number;
    const c1VisibleAt = kept.find((m) => m.body === "c1").visibleAt as number;
    expect(kept.map((m) => [m.body, m.receiveCount])).toEqual([
      ["a1", 1],
      ["c1", 1],
      ["a2", 0],
      ["a3", 0],
      ["b1", 2],
      ["b2", 0],
      ["dead1", 0],
    ]);
    await before.sqsLocal.stop();

    const after = await queues();
    expect(await restoreQueues(after.sqs, after.urls, file)).toBe(7);
    expect(existsSync(file)).toBe(false);

    // Now: group b in order, b1 on its third receive; a1 and c1 still wait, holding a and c back.
    const visibleNow = await drainVisible(after.sqs, after.queue.url);
    expect(visibleNow.map((m) => [m.Body, m.Attributes?.ApproximateReceiveCount])).toEqual([
      ["b1", "3"],
      ["b2", "1"],
    ]);
    expect(visibleNow[0]?.Attributes?.MessageDeduplicationId).toBe("dedup-b1");
    expect(await counts(after.sqs, after.queue.url)).toEqual({ visible: 2, received: 2 });
    // a1 comes back no sooner than it would have without the restart, then a's others, in order.
    const a1Again = await vi.waitUntil(() => receiveOne(after.sqs, after.queue.url), {
      timeout: 10_000,
      interval: 50,
    });
    expect(Date.now()).toBeGreaterThanOrEqual(a1VisibleAt);
    expect(Date.now()).toBeLessThan(c1VisibleAt);
    expect([a1Again.Body, a1Again.Attributes?.ApproximateReceiveCount]).toEqual(["a1", "2"]);
    await after.sqs.send(
      new DeleteMessageCommand({ QueueUrl: after.queue.url, ReceiptHandle: a1Again.ReceiptHandle }),
    );
    expect((await drainVisible(after.sqs, after.queue.url)).map((m) => m.Body)).toEqual([
      "a2",
      "a3",
    ]);
    expect((await drainVisible(after.sqs, after.queue.deadLetterUrl)).map((m) => m.Body)).toEqual([
      "dead1",
    ]);
  });

  it("a file that cannot be read stops the start, and stays for the next one", async () => {
    const file = join(await tempDir(), "queues.jsonl");
    const { sqs, urls } = await queues();
    const good = {
      queue: "kept.fifo",
      body: "{}",
      groupId: "g",
      deduplicationId: "d",
      receiveCount: 0,
    };
    writeFileSync(file, `${JSON.stringify(good)}\n{"queue":"kept.fifo","body":`);
    await expect(restoreQueues(sqs, urls, file)).rejects.toThrow(`${file}, line 2`);
    writeFileSync(file, `${JSON.stringify({ ...good, queue: "other.fifo" })}\n`);
    await expect(restoreQueues(sqs, urls, file)).rejects.toThrow("no queue other.fifo");
    expect(existsSync(file)).toBe(true);
    expect(await restoreQueues(sqs, urls, join(await tempDir(), "none.jsonl"))).toBe(0);
  });
});
