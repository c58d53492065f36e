import type { HttpApi } from "aws-cdk-lib/aws-apigatewayv2";
import type { IFunction } from "aws-cdk-lib/aws-lambda";
import { Secret } from "aws-cdk-lib/aws-secretsmanager";
import type { Queue } from "aws-cdk-lib/aws-sqs";
import { NagSuppressions } from "cdk-nag";
import type { AppserviceSecrets } from "./appservice-secrets.ts";

/** What the reviewed findings are about. */
export interface ReviewedResources {
  /** The functions of the appservice (the tokens generator is `secrets`'). */
  functions: IFunction[];
  /** The operator console's function. */
  admin: IFunction;
  api: HttpApi;
  deadLetterQueues: Queue[];
  secrets: AppserviceSecrets;
  tracing: boolean;
}

/**
 * The cdk-nag AwsSolutions findings reviewed and accepted, each with its reason: every one of the
 * appservice's, in one place. (Those of a function come first on its own, then those of every
 * function: the order the deployed stacks' metadata has.)
 */
export function suppressReviewedNagFindings({
  functions,
  admin,
  api,
  deadLetterQueues,
  secrets,
  tracing,
}: ReviewedResources) {
  const generator = secrets.tokensGenerator;
  if (generator) {
    NagSuppressions.addResourceSuppressions(
      generator,
      [
        {
          id: "AwsSolutions-IAM5",
          reason:
            "Its own stack (any stack ID of that name) and the one-secret layout's secret, whose name CloudFormation generated from its logical ID and Secrets Manager suffixed.",
          appliesTo: [
            {
              regex:
                "/^Resource::arn:<AWS::Partition>:(cloudformation|secretsmanager):<AWS::Region>:<AWS::AccountId>:.*\\*$/g",
            },
          ],
        },
      ],
      true,
    );
  }
  NagSuppressions.addResourceSuppressions(
    admin,
    [
      {
        id: "AwsSolutions-IAM5",
        reason:
          "cloudwatch:GetMetricData has no resource-level permissions; the console reads the queues' age with it.",
        appliesTo: ["Resource::*"],
      },
    ],
    true,
  );
  for (const fn of [...functions, ...(generator ? [generator] : [])]) {
    NagSuppressions.addResourceSuppressions(
      fn,
      [
        {
          id: "AwsSolutions-IAM4",
          reason:
            "AWSLambdaBasicExecutionRole only lets the function write its own logs; CDK's default.",
          appliesTo: [
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
          ],
        },
        {
          id: "AwsSolutions-L1",
          reason: "nodejs24.x is the runtime this project targets and tests against (Node 20-24).",
        },
        ...(tracing
          ? [
              {
                id: "AwsSolutions-IAM5",
                reason:
                  "X-Ray's PutTraceSegments and PutTelemetryRecords have no resource-level permissions.",
                appliesTo: ["Resource::*"],
              },
            ]
          : []),
      ],
      true,
    );
  }
  NagSuppressions.addResourceSuppressions(
    api,
    [
      {
        id: "AwsSolutions-APIG4",
        reason:
          "The Matrix AS API authenticates every request itself with the hs_token (spec); the homeserver cannot use IAM or Cognito.",
      },
    ],
    true,
  );
  for (const queue of deadLetterQueues) {
    NagSuppressions.addResourceSuppressions(queue, [
      { id: "AwsSolutions-SQS3", reason: "This is a dead-letter queue." },
    ]);
  }
  if (secrets.remoteSecret) {
    NagSuppressions.addResourceSuppressions(secrets.remoteSecret, [
      {
        id: "AwsSolutions-SMG4",
        reason:
          "The remote service holds the same secret: rotating it needs the remote side updated at the same moment, which no Lambda can do.",
      },
    ]);
  }
  if (secrets.cryptoStoreSecret) {
    NagSuppressions.addResourceSuppressions(secrets.cryptoStoreSecret, [
      {
        id: "AwsSolutions-SMG4",
        reason:
          "It encrypts the crypto state saved in the table: a rotated secret could not open the state saved under the one before.",
      },
    ]);
  }
  for (const secret of Object.values(secrets.tokenSecrets).filter((s) => s instanceof Secret)) {
    NagSuppressions.addResourceSuppressions(secret, [
      {
        id: "AwsSolutions-SMG4",
        reason:
          "The tokens are also in the homeserver's registration file: rotating them needs the homeserver updated and restarted, which no Lambda can do.",
      },
    ]);
  }
}
