// `npm run ping`: has the homeserver ping the appservice, and says what is wrong if it cannot.
// REGISTRATION (default ./registration.yaml) and HOMESERVER_URL (default http://127.0.0.1:8008);
// for a homeserver without the ping, the appservice's table: DYNAMODB_ENDPOINT (local mode) or
// TABLE_NAME (AWS, with your credentials).
import { resolve } from "node:path";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { loadRegistration } from "../functions/appservice/protocol/registration.ts";
import { localDynamoDb } from "../functions/local/aws-clients.ts";
import { DynamoDbStore } from "../functions/store/dynamodb/store.ts";
import { pingHomeserver } from "./ping-homeserver.ts";

const { DYNAMODB_ENDPOINT: endpoint, TABLE_NAME: tableName } = process.env;
const dynamodb = endpoint
  ? localDynamoDb(endpoint)
  : tableName
    ? new DynamoDBClient({})
    : undefined;

const registration = await loadRegistration(
  resolve(process.env.REGISTRATION ?? "./registration.yaml"),
);
const result = await pingHomeserver(
  process.env.HOMESERVER_URL ?? "http://127.0.0.1:8008",
  registration,
  dynamodb && new DynamoDbStore(dynamodb, tableName ?? "appservice"),
);
dynamodb?.destroy();
(result.ok ? console.log : console.error)(result.message);
process.exitCode = result.ok ? 0 : 1;
