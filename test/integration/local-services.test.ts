import { spawn } from "node:child_process";
import { once } from "node:events";
import { GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { CreateQueueCommand, ReceiveMessageCommand, SendMessageCommand } from "@aws-sdk/client-sqs";
import { describe, expect, it, onTestFinished } from "vitest";
import { localDynamoDb, localSqs } from "../../functions/local/aws-clients.ts";
import { ensureTable } from "../../functions/store/dynamodb/table.ts";
import { isAlive, waitFor } from "../support/appservice.ts";

describe("npm run local-services", () => {
  it.each(["SIGINT", "SIGTERM"] as const)(
    "starts DynamoDB Local and fauxqs on 127.0.0.1, prints their endpoints, and %s stops both",
    async (signal) => {
      const child = spawn(process.execPath, ["--import", "tsx", "scripts/local-services.ts"], {
        cwd: new URL("../..", import.meta.url).pathname,
        stdio: ["ignore", "pipe", "pipe"],
      });
      onTestFinished(() => {
        if (child.exitCode === null) child.kill("SIGKILL");
      });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
      });
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const exited = once(child, "exit");
      await waitFor(() => /SQS_ENDPOINT=\S+\n/.test(stdout), 60_000, "the endpoints");
      const dynamodbEndpoint = /^export DYNAMODB_ENDPOINT=(\S+)$/m.exec(stdout)?.[1] as string;
      const sqsEndpoint = /^export SQS_ENDPOINT=(\S+)$/m.exec(stdout)?.[1] as string;
      expect(dynamodbEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(sqsEndpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const javaPid = Number(/pid (\d+)/.exec(stderr)?.[1]);
      expect(isAlive(javaPid)).toBe(true);

      // Both answer as the appservice uses them.
      const dynamodb = localDynamoDb(dynamodbEndpoint);
      const sqs = localSqs(sqsEndpoint);
      onTestFinished(() => {
        dynamodb.destroy();
        sqs.destroy();
      });
      await ensureTable(dynamodb, "services");
      await dynamodb.send(
        new PutItemCommand({
          TableName: "services",
          Item: { pk: { S: "k" }, sk: { S: "-" }, v: { S: "kept" } },
        }),
      );
      const { Item } = await dynamodb.send(
        new GetItemCommand({ TableName: "services", Key: { pk: { S: "k" }, sk: { S: "-" } } }),
      );
      expect(Item?.v?.S).toBe("kept");
      const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: "services" }));
      await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: "queued" }));
      const { Messages } = await sqs.send(
        new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 1 }),
      );
      expect(Messages?.map((m) => m.Body)).toEqual(["queued"]);

      child.kill(signal);
      const [code] = await exited;
      expect(code).toBe(0);
      expect(stderr).toContain(`${signal}: stopping`);
      expect(isAlive(javaPid)).toBe(false);
      await expect(fetch(sqsEndpoint)).rejects.toThrow();
      await expect(fetch(dynamodbEndpoint)).rejects.toThrow();
    },
  );
});
