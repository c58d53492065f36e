import type { CryptoOwner, CryptoStateStore } from "../store/crypto-state.ts";
import type { DurableOlmMachine } from "./durable-machine.ts";

/**
 * How many devices' machines a warm process keeps open. One kept with a 42 KB state (5 Olm
 * sessions, 14 room keys) costs about 1.3 MB of heap and buffers (docs/encryption.md,
 * "Figures"); a bot's state grew to 179 KB gzipped in the bench, several times that: 16 keep
 * even such states well inside a 256 MB function, while covering the bot and the puppets or
 * webhook users a container serves in a burst; a device past them is opened from the store
 * again (22–222 ms).
 */
export const WARM_MACHINES = 16;

const keyOf = (owner: CryptoOwner) => `${owner.userId}\u0000${owner.deviceId}`;

/**
 * The machines of the devices a warm process used last (a Lambda container, a local worker
 * thread), lent one unit of work at a time per device. Before a machine is lent again the
 * version saved is read (one consistent read of a number, not the state): if another process
 * saved since, the machine is closed and the device opened again, so no work is ever done on a
 * stale state. A machine whose work failed is never kept (`DurableOlmMachine.use`). The least
 * recently used are closed past `capacity`.
 */
export class WarmMachines {
  /** Machines not lent now, the least recently used first. */
  private readonly idle = new Map<string, DurableOlmMachine>();
  /** Devices whose machine is lent now: resolved when it is given back. */
  private readonly lent = new Map<string, Promise<void>>();

  constructor(readonly capacity = WARM_MACHINES) {}

  /**
   * The machine of `owner`, for one unit of work (`use` it): the one kept if its version is
   * still the one saved, else from `open` (the state last saved). Waits while it is lent.
   */
  async open(
    store: CryptoStateStore,
    owner: CryptoOwner,
    open: () => Promise<DurableOlmMachine>,
  ): Promise<DurableOlmMachine> {
    const key = keyOf(owner);
    for (let busy = this.lent.get(key); busy; busy = this.lent.get(key)) await busy;
    let giveBack: () => void = () => undefined;
    this.lent.set(
      key,
      new Promise<void>((resolve) => {
        giveBack = resolve;
      }),
    );
    const returned = () => {
      this.lent.delete(key);
      giveBack();
    };
    let kept = this.idle.get(key);
    this.idle.delete(key);
    try {
      if (kept && (await store.version(owner)) !== kept.version) {
        await kept.close();
        kept = undefined;
      }
      const machine = kept ?? (await open());
      machine.lend((keep) => {
        if (keep) this.keep(key, machine);
        returned();
      });
      return machine;
    } catch (error) {
      await kept?.close();
      returned();
      throw error;
    }
  }

  /** How many machines are kept, lent or not. */
  get size(): number {
    return this.idle.size + this.lent.size;
  }

  private keep(key: string, machine: DurableOlmMachine) {
    this.idle.set(key, machine);
    for (const [oldest, old] of this.idle) {
      if (this.idle.size + this.lent.size - 1 <= this.capacity) break;
      this.idle.delete(oldest);
      void old.close();
    }
  }
}
