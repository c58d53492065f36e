import { gunzipSync, gzipSync } from "node:zlib";

/**
 * The contents of IndexedDB databases as bytes and back: how the crypto machine's store (it knows
 * IndexedDB and memory only) outlives a Lambda invocation. In a function IndexedDB is
 * fake-indexeddb's, in memory; a snapshot holds each database's object stores (their key paths
 * and indexes) and records, as gzipped JSON. The machine encrypts what it stores (its store key),
 * so a snapshot holds no key in clear.
 */

const FORMAT = 1;

// The part of IndexedDB used here (the project's TypeScript has no DOM library).
type Key = unknown;
interface IDBRequest<T> {
  result: T;
  error: unknown;
  onsuccess: (() => void) | null;
  onerror: (() => void) | null;
}
interface IDBOpenDBRequest extends IDBRequest<IDBDatabase> {
  transaction: IDBTransaction | null;
  onupgradeneeded: (() => void) | null;
}
interface IDBIndex {
  keyPath: string | string[];
  unique: boolean;
  multiEntry: boolean;
}
interface IDBObjectStore {
  keyPath: string | string[] | null;
  autoIncrement: boolean;
  indexNames: Iterable<string>;
  index(name: string): IDBIndex;
  getAllKeys(): IDBRequest<Key[]>;
  getAll(): IDBRequest<unknown[]>;
  put(value: unknown, key?: Key): unknown;
  get(key: Key): IDBRequest<unknown>;
  delete(key: Key): unknown;
  createIndex(
    name: string,
    keyPath: string | string[],
    options: { unique: boolean; multiEntry: boolean },
  ): unknown;
}
interface IDBTransaction {
  error: unknown;
  objectStore(name: string): IDBObjectStore;
  abort(): void;
  oncomplete: (() => void) | null;
  onerror: (() => void) | null;
  onabort: (() => void) | null;
}
interface IDBDatabase {
  version: number;
  objectStoreNames: Iterable<string> & { length: number };
  transaction(names: string[], mode: "readonly" | "readwrite"): IDBTransaction;
  createObjectStore(
    name: string,
    options: { keyPath: string | string[] | null; autoIncrement: boolean },
  ): IDBObjectStore;
  close(): void;
}
/** IndexedDB's entry point (`indexedDB`, an `IDBFactory`). */
export interface IDBFactory {
  open(name: string, version?: number): IDBOpenDBRequest;
  databases(): Promise<{ name?: string }[]>;
  deleteDatabase(name: string): IDBRequest<unknown>;
}

interface StoreSnapshot {
  name: string;
  keyPath: string | string[] | null;
  autoIncrement: boolean;
  indexes: { name: string; keyPath: string | string[]; unique: boolean; multiEntry: boolean }[];
  /** [key, value], encoded. */
  records: [unknown, unknown][];
}
interface DatabaseSnapshot {
  /** The name after the prefix (`::matrix-sdk-crypto`, `::matrix-sdk-crypto-meta`). */
  suffix: string;
  version: number;
  stores: StoreSnapshot[];
}

// Values are JSON, byte arrays and dates (all IndexedDB keys are among them); anything else is
// refused rather than lost. Tagged objects have a single key starting with NUL.
const BYTES = "\u0000bytes";
const DATE = "\u0000date";
const UNDEFINED = "\u0000undefined";

function encode(value: unknown): unknown {
  if (value === null || typeof value === "string" || typeof value === "boolean") return value;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new Error(`Cannot keep the number ${value}`);
    return value;
  }
  if (value === undefined) return { [UNDEFINED]: 1 };
  if (Array.isArray(value)) return value.map(encode);
  if (value instanceof Uint8Array) return { [BYTES]: Buffer.from(value).toString("base64") };
  if (value instanceof ArrayBuffer) {
    return { [BYTES]: Buffer.from(new Uint8Array(value)).toString("base64"), buffer: 1 };
  }
  if (value instanceof Date) return { [DATE]: value.getTime() };
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const encoded: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      if (key.startsWith("\u0000")) throw new Error("Cannot keep a key starting with NUL");
      encoded[key] = encode(item);
    }
    return encoded;
  }
  throw new Error(`Cannot keep a value of type ${Object.prototype.toString.call(value)}`);
}

function decode(value: unknown): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map(decode);
  const object = value as Record<string, unknown>;
  if (BYTES in object) {
    const bytes = new Uint8Array(Buffer.from(object[BYTES] as string, "base64"));
    return object.buffer ? bytes.buffer : bytes;
  }
  if (DATE in object) return new Date(object[DATE] as number);
  if (UNDEFINED in object) return undefined;
  const decoded: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(object)) decoded[key] = decode(item);
  return decoded;
}

/** A request's result, once it succeeds. */
export const done = <T>(request: IDBRequest<T>) =>
  new Promise<T>((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });

/** Resolves once the transaction is committed. */
export const committed = (transaction: IDBTransaction) =>
  new Promise<void>((resolve, reject) => {
    transaction.oncomplete = () => resolve();
    transaction.onerror = () => reject(transaction.error);
    transaction.onabort = () => reject(transaction.error ?? new Error("Transaction aborted"));
  });

async function databaseNames(factory: IDBFactory, prefix: string) {
  const all = await factory.databases();
  return all
    .map((info) => info.name as string)
    .filter((name) => name.startsWith(`${prefix}::`))
    .sort();
}

/** The databases named `<prefix>::…`, every record, as bytes. */
export async function dumpDatabases(factory: IDBFactory, prefix: string): Promise<Uint8Array> {
  const databases: DatabaseSnapshot[] = [];
  for (const name of await databaseNames(factory, prefix)) {
    const db = await done(factory.open(name));
    try {
      const names = [...db.objectStoreNames];
      const stores: StoreSnapshot[] = [];
      if (names.length > 0) {
        // One read-only transaction over every store: a consistent view, after the writes
        // already asked for.
        const transaction = db.transaction(names, "readonly");
        for (const storeName of names) {
          const store = transaction.objectStore(storeName);
          const [keys, values] = await Promise.all([
            done(store.getAllKeys()),
            done(store.getAll()),
          ]);
          stores.push({
            name: storeName,
            keyPath: store.keyPath as string | string[] | null,
            autoIncrement: store.autoIncrement,
            indexes: [...store.indexNames].map((indexName) => {
              const index = store.index(indexName);
              return {
                name: indexName,
                keyPath: index.keyPath as string | string[],
                unique: index.unique,
                multiEntry: index.multiEntry,
              };
            }),
            records: keys.map((key, i) => [encode(key), encode(values[i])]),
          });
        }
      }
      databases.push({ suffix: name.slice(prefix.length), version: db.version, stores });
    } finally {
      db.close();
    }
  }
  return new Uint8Array(gzipSync(JSON.stringify({ format: FORMAT, databases })));
}

/** Makes, under `prefix`, the databases a dump holds (none of that name may exist yet). */
export async function restoreDatabases(
  factory: IDBFactory,
  prefix: string,
  dump: Uint8Array,
): Promise<void> {
  const snapshot = JSON.parse(gunzipSync(dump).toString("utf8")) as {
    format: number;
    databases: DatabaseSnapshot[];
  };
  if (snapshot.format !== FORMAT) throw new Error(`Unknown snapshot format ${snapshot.format}`);
  for (const database of snapshot.databases) {
    const request = factory.open(`${prefix}${database.suffix}`, database.version);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (db.objectStoreNames.length > 0) {
        request.transaction?.abort();
        return;
      }
      for (const spec of database.stores) {
        const store = db.createObjectStore(spec.name, {
          keyPath: spec.keyPath,
          autoIncrement: spec.autoIncrement,
        });
        for (const index of spec.indexes) {
          store.createIndex(index.name, index.keyPath, {
            unique: index.unique,
            multiEntry: index.multiEntry,
          });
        }
      }
    };
    const db = await done(request);
    try {
      if (database.stores.length === 0) continue;
      const transaction = db.transaction(
        database.stores.map((store) => store.name),
        "readwrite",
      );
      const written = committed(transaction);
      for (const spec of database.stores) {
        const store = transaction.objectStore(spec.name);
        for (const [key, value] of spec.records) {
          if (spec.keyPath === null) store.put(decode(value), decode(key));
          else store.put(decode(value));
        }
      }
      await written;
    } finally {
      db.close();
    }
  }
}
