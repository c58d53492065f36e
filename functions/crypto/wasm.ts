/**
 * matrix-sdk-crypto-wasm, loaded once per process: the module is imported and its 7.8 MB of
 * WebAssembly compiled on first use (about a second on this machine), never on the ack path.
 */
type CryptoModule = typeof import("@matrix-org/matrix-sdk-crypto-wasm");

let loading: Promise<CryptoModule> | undefined;

/** The crypto module, initialised. Concurrent callers share one load; a failed load is retried. */
export function loadCrypto(): Promise<CryptoModule> {
  loading ??= (async () => {
    const sdk = await import("@matrix-org/matrix-sdk-crypto-wasm");
    await sdk.initAsync();
    return sdk;
  })().catch((error: unknown) => {
    loading = undefined;
    throw error;
  });
  return loading;
}
