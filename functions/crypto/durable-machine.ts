import type { OlmMachine } from "@matrix-org/matrix-sdk-crypto-wasm";
import {
  type CryptoOwner,
  type CryptoStateStore,
  StaleCryptoStateError,
} from "../store/crypto-state.ts";
import { dumpDatabases, type IDBFactory, restoreDatabases } from "./idb-snapshot.ts";
import { PendingSends } from "./pending-sends.ts";
import { loadCrypto } from "./wasm.ts";

export { StaleCryptoStateError };

/**
 * Runs `open` with a new fake-indexeddb IndexedDB of its own as the global one, where
 * crypto-wasm looks for it when it opens its store, one open at a time. Each machine's databases
 * then live in its own IndexedDB, freed with it: deleting them instead would wait for
 * connections crypto-wasm never closes (and keep the process up).
 */
let opening: Promise<unknown> = Promise.resolve();
async function withOwnIndexedDb<T>(open: (factory: IDBFactory) => Promise<T>): Promise<T> {
  await import("fake-indexeddb/auto");
  const { IDBFactory: FakeFactory } = (await import("fake-indexeddb")) as unknown as {
    IDBFactory: new () => IDBFactory;
  };
  const run = opening.then(async () => {
    const factory = new FakeFactory();
    (globalThis as unknown as { indexedDB: IDBFactory }).indexedDB = factory;
    return open(factory);
  });
  opening = run.catch(() => undefined);
  return run;
}

/**
 * A device's crypto machine whose state outlives the process: made from the state last saved
 * (or new, for a device never saved), and saved back with a version check, so one writer at a
 * time changes a device's state (a second is refused with `StaleCryptoStateError` and must open
 * the machine again). The machine works on IndexedDB in memory (fake-indexeddb), under a name of
 * its own, encrypted with `storeKey`; `save` keeps a snapshot of it in the `CryptoStateStore`.
 */
export class DurableOlmMachine {
  private closed = false;
  /** Where a lent machine goes back when its work ends (`WarmMachines`): `keep` if reusable. */
  private lender?: (keep: boolean) => void;
  /** Encrypted sends not yet known to be sent: saved with the state, by `save`. */
  readonly pendingSends: PendingSends;

  private constructor(
    readonly machine: OlmMachine,
    readonly owner: CryptoOwner,
    private readonly store: CryptoStateStore,
    private readonly factory: IDBFactory,
    private readonly databasePrefix: string,
    /** The version loaded, then saved: 0 until the first save. */
    public version: number,
  ) {
    this.pendingSends = new PendingSends(factory, `${databasePrefix}::appservice-pending-sends`);
  }

  /**
   * The device's machine, as last saved. `storeKey` (32 bytes) encrypts what the machine stores:
   * the same key must open the state again.
   */
  static async open(
    store: CryptoStateStore,
    owner: CryptoOwner,
    storeKey: Uint8Array,
  ): Promise<DurableOlmMachine> {
    const [sdk, snapshot] = await Promise.all([loadCrypto(), store.load(owner)]);
    const prefix = `crypto-${owner.deviceId}`;
    return withOwnIndexedDb(async (factory) => {
      if (snapshot) await restoreDatabases(factory, prefix, snapshot.data);
      const handle = await sdk.StoreHandle.openWithKey(prefix, storeKey);
      const machine = await sdk.OlmMachine.initFromStore(
        new sdk.UserId(owner.userId),
        new sdk.DeviceId(owner.deviceId),
        handle,
      );
      return new DurableOlmMachine(machine, owner, store, factory, prefix, snapshot?.version ?? 0);
    });
  }

  /**
   * Saves the machine's state as the next version; refused (`StaleCryptoStateError`) if another
   * writer saved since this one loaded. Returns the version and the snapshot's size.
   */
  async save(): Promise<{ version: number; bytes: number }> {
    if (this.closed) throw new Error("The machine is closed");
    const data = await dumpDatabases(this.factory, this.databasePrefix);
    this.version = await this.store.save(this.owner, this.version, data);
    return { version: this.version, bytes: data.length };
  }

  /** Lent by a cache: `use` gives it back there. */
  lend(giveBack: (keep: boolean) => void): void {
    this.lender = giveBack;
  }

  /**
   * Runs `work` on the machine, then gives it back to the cache that lent it, to be lent again
   * (or closes it, lent by none). If `work` throws, the machine is closed: what it did and did
   * not save (a stale save, a crash in the middle) must never be used again.
   */
  async use<T>(work: (machine: DurableOlmMachine) => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await work(this);
    } catch (error) {
      await this.close();
      throw error;
    }
    const lender = this.lender;
    this.lender = undefined;
    if (lender) lender(true);
    else await this.close();
    return result;
  }

  /** Frees the machine; its in-memory databases go with it (what was not saved is lost). */
  async close(): Promise<void> {
    const lender = this.lender;
    this.lender = undefined;
    lender?.(false);
    if (this.closed) return;
    this.closed = true;
    this.machine.close();
  }
}
