import { describe, expect, it } from "vitest";
import { loadCrypto } from "../../functions/crypto/wasm.ts";

describe("matrix-sdk-crypto-wasm on this Node", () => {
  it("loads once and makes an OlmMachine with identity keys and keys to upload", async () => {
    const started = performance.now();
    const sdk = await loadCrypto();
    const loaded = performance.now();
    const machine = await sdk.OlmMachine.initialize(
      new sdk.UserId("@bot:test.local"),
      new sdk.DeviceId("BOTDEVICE"),
    );
    const made = performance.now();
    try {
      expect(machine.userId.toString()).toBe("@bot:test.local");
      expect(machine.deviceId.toString()).toBe("BOTDEVICE");
      expect(machine.identityKeys.curve25519.toBase64()).toMatch(/^[A-Za-z0-9+/]{43}$/);
      expect(machine.identityKeys.ed25519.toBase64()).toMatch(/^[A-Za-z0-9+/]{43}$/);
      const requests = await machine.outgoingRequests();
      expect(requests.map((request) => request.type)).toContain(sdk.RequestType.KeysUpload);
      // A second load is the same module, already initialised.
      expect(await loadCrypto()).toBe(sdk);
      console.info(
        `crypto-wasm: load + initAsync ${Math.round(loaded - started)} ms, machine ${Math.round(made - loaded)} ms`,
      );
    } finally {
      machine.close();
    }
  });
});
