import type { OlmMachine } from "@matrix-org/matrix-sdk-crypto-wasm";
import type { DeviceData, ToDeviceMessage } from "../appservice/protocol/transaction.ts";
import type { CryptoOwner } from "../store/crypto-state.ts";
import { loadCrypto } from "./wasm.ts";

/**
 * Gives a device's machine what a transaction carries for encryption (MSC2409, MSC3202): the
 * to-device messages addressed to it, device-list changes, and its own one-time-key count and
 * unused fallback key types. Synapse lists every device of the appservice's users in the counts,
 * and the cross-signing public keys as if they were devices: only the owner's device is read;
 * its `{}` means none left (0). Where the counts do not name the device, none are passed.
 */
export async function receiveTransactionCrypto(
  machine: OlmMachine,
  owner: CryptoOwner,
  transaction: { toDevice: ToDeviceMessage[]; devices?: DeviceData },
) {
  const sdk = await loadCrypto();
  const toDevice = transaction.toDevice
    .filter((m) => m.to_user_id === owner.userId && m.to_device_id === owner.deviceId)
    .map(({ type, sender, content }) => ({ type, sender, content }));
  const lists = transaction.devices?.deviceLists;
  const counts = transaction.devices?.oneTimeKeysCount?.[owner.userId]?.[owner.deviceId];
  const fallbacks = transaction.devices?.unusedFallbackKeyTypes?.[owner.userId]?.[owner.deviceId];
  return machine.receiveSyncChanges(
    JSON.stringify(toDevice),
    new sdk.DeviceLists(
      (lists?.changed ?? []).map((id) => new sdk.UserId(id)),
      (lists?.left ?? []).map((id) => new sdk.UserId(id)),
    ),
    new Map(counts ? Object.entries({ signed_curve25519: 0, ...counts }) : []),
    fallbacks ? new Set(fallbacks) : undefined,
  );
}
