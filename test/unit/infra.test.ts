import { execFile } from "node:child_process";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { App } from "aws-cdk-lib";
import { Match, Template } from "aws-cdk-lib/assertions";
import { describe, expect, it } from "vitest";
import { AppserviceStack, MAX_RECEIVE_COUNT } from "../../infra/appservice-stack.ts";

describe("AppserviceStack", () => {
  const template = Template.fromStack(new AppserviceStack(new App(), "Test"));

  it("has the single table: pk/sk strings, TTL on expiresAt, on-demand, point-in-time recovery", () => {
    template.hasResourceProperties("AWS::DynamoDB::Table", {
      KeySchema: [
        { AttributeName: "pk", KeyType: "HASH" },
        { AttributeName: "sk", KeyType: "RANGE" },
      ],
      BillingMode: "PAY_PER_REQUEST",
      TimeToLiveSpecification: { AttributeName: "expiresAt", Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
    });
  });

  it("has an encrypted inbound FIFO queue with a FIFO dead-letter queue", () => {
    template.resourceCountIs("AWS::SQS::Queue", 2);
    template.hasResourceProperties("AWS::SQS::Queue", {
      FifoQueue: true,
      SqsManagedSseEnabled: true,
      VisibilityTimeout: 180,
      RedrivePolicy: { maxReceiveCount: MAX_RECEIVE_COUNT, deadLetterTargetArn: Match.anyValue() },
    });
    template.hasResourceProperties("AWS::SQS::QueuePolicy", {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: "Deny",
            Condition: { Bool: { "aws:SecureTransport": "false" } },
          }),
        ]),
      },
    });
  });

  it("synthesizes with the CDK CLI, offline and without credentials", async () => {
    const out = await mkdtemp(join(tmpdir(), "cdk-out-"));
    const { stdout } = await promisify(execFile)(
      "npx",
      ["cdk", "synth", "--quiet", "--output", out],
      {
        cwd: new URL("../..", import.meta.url).pathname,
        env: { ...process.env, CDK_DISABLE_CLI_TELEMETRY: "1" },
      },
    );
    expect(stdout).not.toMatch(/error/i);
    const synthesized = JSON.parse(
      await readFile(join(out, "MatrixAppservice.template.json"), "utf8"),
    );
    expect(Object.keys(synthesized.Resources)).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^Table/),
        expect.stringMatching(/^InboundQueue/),
      ]),
    );
  }, 120_000);
});
