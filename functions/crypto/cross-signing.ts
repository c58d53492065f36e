import type { OlmMachine } from "@matrix-org/matrix-sdk-crypto-wasm";
import { type CryptoCall, type CryptoRequest, sendRequest } from "./requests.ts";

/**
 * Makes the device's user a cross-signing identity (master, self-signing and user-signing keys)
 * and signs the device with it, then publishes them, in the order the homeserver needs: the
 * device's keys if not yet uploaded, the cross-signing keys, then the signatures. `reset` makes
 * new keys even where the machine has some; without it, the machine's keys are published unless
 * the homeserver has its master key already (published before a crash, or by another process
 * making the device at the same time): uploading them again would be a reset, which homeservers
 * guard with interactive auth. A failed upload throws (the caller decides: a 401 asking for
 * interactive auth means the homeserver wants a fresh login or MSC3967).
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
  const upload = requests.uploadSigningKeysRequest;
  if (reset) {
    await sendRequest(machine, upload, send);
  } else if (!(await masterKeyPublished(machine, upload.body, send))) {
    // Another process making the device may publish the same keys between the query and this.
    await sendRequest(machine, upload, send).catch(async (error: unknown) => {
      if (!(await masterKeyPublished(machine, upload.body, send))) throw error;
    });
  }
  await sendRequest(machine, requests.uploadSignaturesRequest, send);
}

type KeysOf = { keys?: Record<string, string> };

/** Whether the homeserver publishes the master key of `uploadBody` as the machine's user's. */
async function masterKeyPublished(
  machine: OlmMachine,
  uploadBody: string,
  send: (call: CryptoCall) => Promise<string>,
): Promise<boolean> {
  const userId = machine.userId.toString();
  const ours = Object.values(
    (JSON.parse(uploadBody) as { master_key?: KeysOf }).master_key?.keys ?? {},
  );
  const answer = await send({
    method: "POST",
    path: "/keys/query",
    body: JSON.stringify({ device_keys: { [userId]: [] } }),
  });
  const published = (JSON.parse(answer) as { master_keys?: Record<string, KeysOf> }).master_keys;
  const theirs = Object.values(published?.[userId]?.keys ?? {});
  return ours.length > 0 && ours.every((key) => theirs.includes(key));
}
