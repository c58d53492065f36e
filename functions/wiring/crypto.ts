import type { ClientServerCall } from "../crypto/bot-device.ts";
import {
  cryptoStoreKeyFrom,
  DeviceCrypto,
  type DeviceOptions,
  openUserDevice,
} from "../crypto/device-crypto.ts";
import { DeviceRoomEncryptor } from "../crypto/room-encryptor.ts";
import { WarmMachines } from "../crypto/warm-machines.ts";
import { HttpHomeserverClient } from "../matrix/http-client.ts";
import { DynamoDbAppData, UNDECRYPTABLE_KEY_PREFIX } from "../store/dynamodb/app-data.ts";
import { DynamoDbCryptoStateStore } from "../store/dynamodb/crypto-state.ts";
import type { Platform, Settings } from "./deps.ts";
import type { EventsDeps, OutboxHandlerDeps } from "./handler-deps.ts";
import { HOMESERVER_TIMEOUT_MS } from "./timeouts.ts";

/**
 * The crypto machine's client-server calls (`ClientServerCall`: a path under
 * `/_matrix/client/v3` with its query) made by the HTTP client: as the user the query's `user_id`
 * names, with the as_token, or with a device's own token.
 */
export function clientServerCall(
  homeserverUrl: string,
  asToken: string,
  botUserId: string,
): ClientServerCall {
  return async ({ method, path, body, token }) => {
    const url = new URL(path, "http://path.invalid");
    const query = Object.fromEntries(url.searchParams);
    const userId = query.user_id ?? botUserId;
    delete query.user_id;
    // With a device's token the caller is that token's user: no `user_id` is added.
    const client = new HttpHomeserverClient(
      homeserverUrl,
      token ?? asToken,
      token ? userId : botUserId,
      HOMESERVER_TIMEOUT_MS,
    );
    const answer = await client.call(userId, {
      method,
      path: `/_matrix/client/v3${url.pathname}`,
      query,
      ...(body !== undefined && { body: JSON.parse(body) as unknown }),
    });
    return {
      status: answer.status,
      text: typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body),
    };
  };
}

/**
 * What every device of the appservice shares where the platform gives a crypto store secret
 * (encrypted rooms on): the state in the table, under the key the secret gives, the machine's
 * calls made with the as_token, the machines kept warm in this process. Undefined otherwise.
 */
async function devicesOf(
  config: Settings<"events"> | Settings<"outbox">,
  platform: Platform,
): Promise<DeviceOptions | undefined> {
  if (!platform.cryptoStoreSecret) return undefined;
  const [asToken, secret] = await Promise.all([
    platform.secrets("asToken"),
    platform.cryptoStoreSecret(),
  ]);
  return {
    http: clientServerCall(config.homeserverUrl, asToken, config.botUserId),
    store: new DynamoDbCryptoStateStore(platform.dynamodb, config.tableName),
    storeKey: cryptoStoreKeyFrom(secret),
    log: platform.log,
    machines: new WarmMachines(),
  };
}

/**
 * The events function's dependencies with the bot device's crypto, where the platform gives a
 * crypto store secret (encrypted rooms on); as they are otherwise. Kept out of `deps.ts` so that
 * only the functions that do crypto bundle crypto-wasm.
 */
export async function withBotCrypto<D extends EventsDeps>(
  deps: D,
  config: Settings<"events">,
  platform: Platform,
): Promise<D> {
  const devices = await devicesOf(config, platform);
  if (!devices) return deps;
  return {
    ...deps,
    crypto: new DeviceCrypto({ ...devices, userId: config.botUserId }),
    undecryptable: new DynamoDbAppData(
      platform.dynamodb,
      config.tableName,
      UNDECRYPTABLE_KEY_PREFIX,
    ),
    ...(platform.keyWait && { keyWait: platform.keyWait }),
  };
}

/**
 * The outbox's dependencies with its `RoomEncryptor`, where the platform gives a crypto store
 * secret: the switch that turns reading encrypted rooms on, so that what an application answers
 * to what it read there never goes back in clear. Each user's sends are encrypted by its own
 * device (`openUserDevice`: the bot's the events function made, a puppet's made at its first).
 */
export async function withRoomEncryptor<D extends OutboxHandlerDeps>(
  deps: D,
  config: Settings<"outbox">,
  platform: Platform,
): Promise<D> {
  const devices = await devicesOf(config, platform);
  if (!devices) return deps;
  return {
    ...deps,
    roomEncryptor: new DeviceRoomEncryptor({
      open: openUserDevice(devices),
      log: platform.log,
    }),
  };
}
