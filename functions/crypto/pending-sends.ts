import { committed, done, type IDBFactory } from "./idb-snapshot.ts";

/** A to-device message the machine made, as it will be sent: its own txnId kept. */
export interface PendingToDevice {
  eventType: string;
  txnId: string;
  /** JSON: `{"messages": …}`. */
  body: string;
}

/** What one encrypted room send puts on the wire: the room event and the room key's messages. */
export interface EncryptedSend {
  /** The `m.room.encrypted` content. */
  content: Record<string, unknown>;
  /** Sent before the room event, so that its recipients hold its key when it arrives. */
  toDevice: PendingToDevice[];
  /**
   * How many of `toDevice`, from the first, the homeserver took before an action's time ran out:
   * its retry sends the rest. Absent: none yet.
   */
  toDeviceSent?: number;
}

/**
 * How long an encrypted send is kept once made. Past it a retry encrypts again, which is safe:
 * the state saved with it has moved past its indexes, and a copy already sent is answered by the
 * homeserver from its txnId (the new ciphertext dropped). Kept short: every save writes them all.
 */
export const PENDING_SEND_TTL_MS = 60 * 60 * 1000;

const STORE = "sends";

/**
 * The encrypted sends of a device, by the txnId of the send that asked for them, kept in a
 * database of the machine's own IndexedDB (`<prefix>::appservice-pending-sends`): so a
 * snapshot of the machine holds them, and they are saved with the state that made them, in the
 * same version-checked write (the write-ahead: saved before anything is sent).
 */
export class PendingSends {
  constructor(
    private readonly factory: IDBFactory,
    private readonly name: string,
  ) {}

  private async open() {
    const request = this.factory.open(this.name, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(STORE, { keyPath: null, autoIncrement: false });
    };
    return done(request);
  }

  async get(txnId: string): Promise<EncryptedSend | undefined> {
    const db = await this.open();
    try {
      const record = await done(db.transaction([STORE], "readonly").objectStore(STORE).get(txnId));
      return typeof record === "string"
        ? (JSON.parse(record) as { send: EncryptedSend }).send
        : undefined;
    } finally {
      db.close();
    }
  }

  /** Keeps `send` under `txnId` and drops those older than `PENDING_SEND_TTL_MS`. */
  async put(txnId: string, send: EncryptedSend, now = Date.now()): Promise<void> {
    const db = await this.open();
    try {
      const transaction = db.transaction([STORE], "readwrite");
      const written = committed(transaction);
      const store = transaction.objectStore(STORE);
      const [keys, records] = await Promise.all([done(store.getAllKeys()), done(store.getAll())]);
      records.forEach((record, i) => {
        const { madeAt } = JSON.parse(record as string) as { madeAt: number };
        if (now - madeAt > PENDING_SEND_TTL_MS) store.delete(keys[i]);
      });
      store.put(JSON.stringify({ madeAt: now, send }), txnId);
      await written;
    } finally {
      db.close();
    }
  }
}
