import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { SQSClient } from "@aws-sdk/client-sqs";

// Local emulators accept any credentials; fixed ones keep the SDK from looking for real ones.
const localConfig = (endpoint: string) => ({
  endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
  maxAttempts: 2,
});

export const localDynamoDb = (endpoint: string) => new DynamoDBClient(localConfig(endpoint));
export const localSqs = (endpoint: string) => new SQSClient(localConfig(endpoint));
