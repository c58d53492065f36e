// Part of bench/crypto.ts, in a process of its own: crypto-wasm loaded cold (nothing of ours
// that imports it is loaded before the clock starts), then a device's state opened from
// DynamoDB, the first time in the process and ten times more. Prints its timings as JSON.
// BENCH_DYNAMODB, BENCH_TABLE: where the state is; BENCH_USER, BENCH_DEVICE: whose;
// BENCH_STORE_KEY: the store key, in hex.
const env = process.env;
const started = performance.now();
const sdk = await import("@matrix-org/matrix-sdk-crypto-wasm");
const imported = performance.now();
await sdk.initAsync();
const initialised = performance.now();
const { DurableOlmMachine } = await import("../functions/crypto/durable-machine.ts");
const { localDynamoDb } = await import("../functions/local/aws-clients.ts");
const { DynamoDbCryptoStateStore } = await import("../functions/store/dynamodb/crypto-state.ts");
const dynamodb = localDynamoDb(env.BENCH_DYNAMODB as string);
const store = new DynamoDbCryptoStateStore(dynamodb, env.BENCH_TABLE as string);
const owner = { userId: env.BENCH_USER as string, deviceId: env.BENCH_DEVICE as string };
const storeKey = new Uint8Array(Buffer.from(env.BENCH_STORE_KEY as string, "hex"));
const opens: number[] = [];
for (let i = 0; i < 11; i++) {
  const before = performance.now();
  const device = await DurableOlmMachine.open(store, owner, storeKey);
  opens.push(performance.now() - before);
  await device.close();
}
dynamodb.destroy();
console.log(
  JSON.stringify({
    importMs: imported - started,
    initMs: initialised - imported,
    firstOpenMs: opens[0],
    warmOpensMs: opens.slice(1),
  }),
);
