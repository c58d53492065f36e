/** Whose crypto state: one device of one user. */
export interface CryptoOwner {
  userId: string;
  deviceId: string;
}

/** A device's crypto state as saved: opaque bytes, and the version they were saved as. */
export interface CryptoStateSnapshot {
  /** 1 for the first save, one more at each save after. */
  version: number;
  data: Uint8Array;
}

/** A save refused: the state stored is no longer the version the saver loaded. */
export class StaleCryptoStateError extends Error {
  constructor(
    readonly owner: CryptoOwner,
    readonly expected: number,
  ) {
    super(
      `The crypto state of ${owner.userId} ${owner.deviceId} is no longer version ${expected}: another writer saved it`,
    );
    this.name = "StaleCryptoStateError";
  }
}

/**
 * Where each device's crypto state is kept between invocations, with one writer at a time: a
 * save succeeds only over the version its writer loaded, so of two writers of one device the
 * second to save is refused (`StaleCryptoStateError`) and must load again.
 */
export interface CryptoStateStore {
  /** The latest saved state, or undefined if none was ever saved. */
  load(owner: CryptoOwner): Promise<CryptoStateSnapshot | undefined>;
  /**
   * The version of the latest saved state (0: none), read consistently and alone: what a warm
   * process checks before it reuses a machine it loaded before.
   */
  version(owner: CryptoOwner): Promise<number>;
  /**
   * Saves `data` as version `expected + 1`, only if the stored version is `expected` (0: none
   * saved yet), all or nothing. Returns the new version.
   */
  save(owner: CryptoOwner, expected: number, data: Uint8Array): Promise<number>;
}
