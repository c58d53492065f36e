import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDbStore } from "../../store/dynamodb/store.ts";
import { requiredEnv } from "./lambda-handler.ts";

/** The table named by `TABLE_NAME`. */
export const dynamoDbStoreFromEnv = () =>
  new DynamoDbStore(new DynamoDBClient({}), requiredEnv("TABLE_NAME"));
