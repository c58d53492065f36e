// `npm run local-services`: DynamoDB Local and fauxqs on 127.0.0.1, for DYNAMODB_ENDPOINT and
// SQS_ENDPOINT, so that they outlive restarts of `npm start` (and with them, queued work).
// DATA_DIR keeps DynamoDB's tables in that folder. SIGINT or SIGTERM stops both.
import { resolve } from "node:path";
import { startDynamoDbLocal } from "../functions/local/dynamodb-local.ts";
import { startSqsLocal } from "../functions/local/sqs-local.ts";

const dataDir = process.env.DATA_DIR && resolve(process.env.DATA_DIR);
const [dynamo, sqs] = await Promise.all([
  startDynamoDbLocal(dataDir ? { dataDir } : {}),
  startSqsLocal(),
]);
let stopping = false;
const stop = async (signal: string) => {
  if (stopping) return;
  stopping = true;
  console.error(`${signal}: stopping`);
  await Promise.all([dynamo.stop(), sqs.stop()]);
  process.exit(0);
};
process.on("SIGINT", () => void stop("SIGINT"));
process.on("SIGTERM", () => void stop("SIGTERM"));
console.error(
  `DynamoDB Local (Java, pid ${dynamo.pid}; ${dataDir ? `data in ${dataDir}` : "in memory"}) and fauxqs (SQS, in memory) on 127.0.0.1. Ctrl-C stops both. For npm start:`,
);
console.log(`export DYNAMODB_ENDPOINT=${dynamo.endpoint}`);
console.log(`export SQS_ENDPOINT=${sqs.endpoint}`);
