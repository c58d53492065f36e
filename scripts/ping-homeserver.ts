import type { Registration } from "../functions/appservice/protocol/registration.ts";
import { pingAppservice, predatesPing } from "../functions/matrix/homeserver-health.ts";
import type { TransactionHistory } from "../functions/store/store.ts";

export interface PingResult {
  ok: boolean;
  message: string;
}

/**
 * Asks the homeserver to ping the appservice (`POST /_matrix/client/v1/appservice/{id}/ping`):
 * both directions at once. Says in plain words what worked or what to fix. A homeserver older
 * than the ping gets, instead, the last transaction the appservice's `records` hold, if given.
 */
export async function pingHomeserver(
  homeserverUrl: string,
  registration: Registration,
  records?: TransactionHistory,
): Promise<PingResult> {
  const answer = await pingAppservice(homeserverUrl, registration.id, registration.as_token, {
    timeoutMs: 60_000,
    transactionId: `ping-${Date.now()}`,
  });
  if ("failure" in answer) {
    return {
      ok: false,
      message: `Could not reach the homeserver at ${homeserverUrl}: ${answer.failure.message}`,
    };
  }
  const { body } = answer;
  if (answer.ok) {
    return {
      ok: true,
      message: `The homeserver reached the appservice and back in ${body.duration_ms} ms.`,
    };
  }
  if (predatesPing(answer)) {
    return {
      ok: false,
      message: [
        `${answer.status} M_UNRECOGNIZED: the homeserver predates the appservice ping (Matrix v1.7).`,
        "Everything else works without it: transactions, user and alias queries, the bot's calls.",
        'To check that events arrive, say !ping in a room with the bot (it answers pong), or look for "transaction acknowledged" in the appservice\'s log.',
        await describeLastTransaction(records),
      ].join("\n"),
    };
  }
  const explanations: Record<string, string> = {
    M_URL_NOT_SET:
      "The homeserver has no URL for this appservice: set `url` in the registration file it loaded, then restart it.",
    M_BAD_STATUS: `The homeserver reached the appservice, which answered HTTP ${body.status}${
      body.status === 403 || body.status === 401
        ? " (the homeserver's hs_token is not the appservice's)"
        : ""
    }: ${body.body ?? ""}`,
    M_CONNECTION_FAILED:
      "The homeserver could not connect to the appservice at its registered url: is it running, and reachable from the homeserver?",
    M_CONNECTION_TIMEOUT: "The homeserver connected to the appservice but got no answer in time.",
    M_FORBIDDEN: `The homeserver does not know appservice "${registration.id}" with this as_token: is this registration file the one it loaded?`,
    M_UNKNOWN_TOKEN:
      "The homeserver does not accept this as_token: is this registration file the one it loaded?",
  };
  const explanation =
    (body.errcode && explanations[body.errcode]) ??
    `${answer.status} ${body.errcode ?? ""} ${body.error ?? ""}`;
  return { ok: false, message: explanation.trim() };
}

async function describeLastTransaction(records: TransactionHistory | undefined): Promise<string> {
  if (!records) {
    return "To see the last transaction it received, run this with DYNAMODB_ENDPOINT (the DynamoDB Local address npm start printed) or, in AWS, TABLE_NAME (the stack's table).";
  }
  let last: Awaited<ReturnType<TransactionHistory["lastTransaction"]>>;
  try {
    last = await records.lastTransaction();
  } catch (error) {
    return `Could not read the appservice's records: ${(error as Error).message}`;
  }
  if (!last) return "The appservice's records hold no transaction: none has arrived yet.";
  const seconds = Math.max(0, Math.round((Date.now() - last.recordedAt.getTime()) / 1000));
  return `The last transaction the appservice received: txnId ${last.txnId}, at ${last.recordedAt.toISOString()} (${seconds} s ago).`;
}
