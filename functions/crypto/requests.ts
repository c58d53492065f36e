import type * as Sdk from "@matrix-org/matrix-sdk-crypto-wasm";
import { RequestType } from "@matrix-org/matrix-sdk-crypto-wasm";

/** A client-server call, as the crypto machine asks for it. */
export interface CryptoCall {
  method: "POST" | "PUT";
  /** Under `/_matrix/client/v3`, encoded. */
  path: string;
  /** JSON. */
  body: string;
}

/** What `OlmMachine.outgoingRequests()` gives, and the cross-signing bootstrap's requests. */
export type CryptoRequest =
  | Sdk.KeysUploadRequest
  | Sdk.KeysQueryRequest
  | Sdk.KeysClaimRequest
  | Sdk.ToDeviceRequest
  | Sdk.SignatureUploadRequest
  | Sdk.RoomMessageRequest
  | Sdk.KeysBackupRequest
  | Sdk.UploadSigningKeysRequest;

const enc = encodeURIComponent;

/**
 * The client-server call that carries a machine's request, or undefined for one this appservice
 * does not make (key backup: the bot keeps no server-side backup). An `UploadSigningKeysRequest`
 * has no type; the caller adds interactive auth to its body if the homeserver asks.
 */
export function cryptoCall(request: CryptoRequest): CryptoCall | undefined {
  if (!("type" in request)) {
    return { method: "POST", path: "/keys/device_signing/upload", body: request.body };
  }
  switch (request.type) {
    case RequestType.KeysUpload:
      return { method: "POST", path: "/keys/upload", body: request.body };
    case RequestType.KeysQuery:
      return { method: "POST", path: "/keys/query", body: request.body };
    case RequestType.KeysClaim:
      return { method: "POST", path: "/keys/claim", body: request.body };
    case RequestType.SignatureUpload:
      return { method: "POST", path: "/keys/signatures/upload", body: request.body };
    case RequestType.ToDevice: {
      const toDevice = request as Sdk.ToDeviceRequest;
      return {
        method: "PUT",
        path: `/sendToDevice/${enc(toDevice.event_type)}/${enc(toDevice.txn_id)}`,
        body: toDevice.body,
      };
    }
    case RequestType.RoomMessage: {
      const message = request as Sdk.RoomMessageRequest;
      return {
        method: "PUT",
        path: `/rooms/${enc(message.room_id)}/send/${enc(message.event_type)}/${enc(message.txn_id)}`,
        body: message.body,
      };
    }
    default:
      return undefined;
  }
}

/**
 * Sends a machine's requests one at a time (two key uploads at once got a 500 from Synapse) and
 * tells the machine each answer, until it asks for nothing more. `send` makes the call and
 * returns the answer's JSON text, or throws on a failed call (the request stays outgoing: the
 * machine asks for it again).
 */
export async function sendOutgoingRequests(
  machine: Sdk.OlmMachine,
  send: (call: CryptoCall) => Promise<string>,
): Promise<number> {
  let sent = 0;
  for (let round = 0; round < 10; round++) {
    const requests = (await machine.outgoingRequests()) as CryptoRequest[];
    if (requests.length === 0) return sent;
    for (const request of requests) {
      await sendRequest(machine, request, send);
      sent++;
    }
  }
  return sent;
}

/** Sends one request and marks it sent (a request without an ID needs no marking). */
export async function sendRequest(
  machine: Sdk.OlmMachine,
  request: CryptoRequest,
  send: (call: CryptoCall) => Promise<string>,
): Promise<void> {
  const call = cryptoCall(request);
  if (!call) return;
  const answer = await send(call);
  if ("type" in request && "id" in request && request.id) {
    await machine.markRequestAsSent(request.id, request.type, answer);
  }
}
