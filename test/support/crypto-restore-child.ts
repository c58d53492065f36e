/**
 * Run in a process of its own (`node --import tsx`): opens a device's saved crypto state from
 * DynamoDB Local and decrypts a room event with it. Input on stdin as JSON; prints the device's
 * identity key and the decrypted body as JSON.
 */
import { text } from "node:stream/consumers";
import { DurableOlmMachine } from "../../functions/crypto/durable-machine.ts";
import { loadCrypto } from "../../functions/crypto/wasm.ts";
import { localDynamoDb } from "../../functions/local/aws-clients.ts";
import { DynamoDbCryptoStateStore } from "../../functions/store/dynamodb/crypto-state.ts";

const input = JSON.parse(await text(process.stdin)) as {
  endpoint: string;
  tableName: string;
  owner: { userId: string; deviceId: string };
  storeKey: string;
  event: { room_id: string };
};
const client = localDynamoDb(input.endpoint);
const store = new DynamoDbCryptoStateStore(client, input.tableName);
const sdk = await loadCrypto();
const device = await DurableOlmMachine.open(
  store,
  input.owner,
  new Uint8Array(Buffer.from(input.storeKey, "hex")),
);
const decrypted = await device.machine.decryptRoomEvent(
  JSON.stringify(input.event),
  new sdk.RoomId(input.event.room_id),
  new sdk.DecryptionSettings(sdk.TrustRequirement.CrossSigned),
);
process.stdout.write(
  JSON.stringify({
    version: device.version,
    curve25519: device.machine.identityKeys.curve25519.toBase64(),
    body: JSON.parse(decrypted.event).content.body,
  }),
);
await device.close();
client.destroy();
