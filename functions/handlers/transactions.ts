import middy from "@middy/core";
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from "aws-lambda";
import { acceptTransaction } from "../appservice/accept-transaction.ts";
import { authenticateHomeserver } from "../appservice/auth.ts";
import { badJson } from "../appservice/errors.ts";
import { parseTransaction } from "../appservice/transaction.ts";
import { jsonBody, jsonResponse, matrixErrors } from "./http.ts";
import { fromEnvironment, type Runtime } from "./runtime.ts";

/** `PUT /_matrix/app/v1/transactions/{txnId}` (and the legacy unprefixed path). */
export const createTransactionsHandler = (runtime: Runtime) =>
  middy<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2>()
    .use(matrixErrors(runtime.log))
    .handler(async (event) => {
      authenticateHomeserver(
        event.headers.authorization,
        event.queryStringParameters?.access_token,
        runtime.registration.hs_token,
      );
      const txnId = event.pathParameters?.txnId;
      if (!txnId) throw badJson("Missing txnId");
      const transaction = parseTransaction(jsonBody(event));
      const outcome = await acceptTransaction(txnId, transaction, {
        transactions: runtime.store,
        inboundQueue: runtime.inboundQueue,
        log: runtime.log,
      });
      runtime.log.info("transaction acknowledged", {
        txnId,
        outcome,
        events: transaction.events.length,
      });
      return jsonResponse(200, {});
    });

export const handler = fromEnvironment(createTransactionsHandler);
