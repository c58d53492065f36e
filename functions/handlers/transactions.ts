import middy from "@middy/core";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { acceptTransaction, CounterResets } from "../appservice/pipeline/accept-transaction.ts";
import { parseTransaction } from "../appservice/protocol/transaction.ts";
import { badJson } from "../shared/errors.ts";
import { transactionsDeps } from "../wiring/deps.ts";
import type { TransactionsDeps } from "../wiring/handler-deps.ts";
import { jsonBody, jsonResponse, matrixErrors } from "./http.ts";
import { lambdaDeps } from "./shared/lambda-deps.ts";
import { lambdaHandler } from "./shared/lambda-handler.ts";
import { flushMetrics } from "./shared/metrics.ts";

/** `PUT /_matrix/app/v1/transactions/{txnId}` (and the legacy unprefixed path). */
export const createTransactionsHandler = (deps: TransactionsDeps) => {
  const counterResets = new CounterResets();
  return middy<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2>()
    .use(matrixErrors(deps.log))
    .use(flushMetrics(deps.metrics))
    .handler(async (event) => {
      await deps.hsTokens.authenticate(
        event.headers.authorization,
        event.queryStringParameters?.access_token,
      );
      const txnId = event.pathParameters?.txnId;
      if (!txnId) throw badJson("Missing txnId");
      const transaction = parseTransaction(jsonBody(event));
      const outcome = await acceptTransaction(txnId, transaction, { ...deps, counterResets });
      // A reused txnId's transaction is accepted as new: counted as both.
      deps.metrics.count(
        outcome === "duplicate" ? "TransactionsDuplicate" : "TransactionsAccepted",
      );
      if (outcome === "reused") deps.metrics.count("TransactionsReused");
      deps.log.info("transaction acknowledged", {
        txnId,
        outcome,
        events: transaction.events.length,
      });
      return jsonResponse(200, {});
    });
};

export const handler = lambdaHandler(
  () => lambdaDeps("transactions", transactionsDeps),
  createTransactionsHandler,
);
