import type { OlmMachine } from "@matrix-org/matrix-sdk-crypto-wasm";
import { type CryptoCall, type CryptoRequest, sendRequest } from "./requests.ts";

/**
 * Makes the device's user a cross-signing identity (master, self-signing and user-signing keys)
 * and signs the device with it, then publishes them, in the order the homeserver needs: the
 * device's keys if not yet uploaded, the cross-signing keys, then the signatures. `reset` makes
 * new keys even where the machine has some. A failed upload throws (the caller decides: a 401
 * asking for interactive auth means the homeserver wants a fresh login or MSC3967).
 */
export async function bootstrapCrossSigning(
  machine: OlmMachine,
  send: (call: CryptoCall) => Promise<string>,
  reset = true,
): Promise<void> {
  const requests = await machine.bootstrapCrossSigning(reset);
  if (requests.uploadKeysRequest) {
    await sendRequest(machine, requests.uploadKeysRequest as CryptoRequest, send);
  }
  await sendRequest(machine, requests.uploadSigningKeysRequest, send);
  await sendRequest(machine, requests.uploadSignaturesRequest, send);
}
