// fake-indexeddb/auto sets IndexedDB's globals and exports nothing; the package types it not.
declare module "fake-indexeddb/auto";
