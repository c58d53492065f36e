import type { ClientServerCall } from "../crypto/bot-device.ts";
import { botDeviceIdOf, cryptoStoreKeyFrom, DeviceCrypto } from "../crypto/device-crypto.ts";
import { HttpHomeserverClient } from "../matrix/http-client.ts";
import { DynamoDbCryptoStateStore } from "../store/dynamodb/crypto-state.ts";
import type { Platform, Settings } from "./deps.ts";
import type { EventsDeps } from "./handler-deps.ts";
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
 * The events function's dependencies with the bot device's crypto, where the platform gives a
 * crypto store secret (encrypted rooms on); as they are otherwise. Kept out of `deps.ts` so that
 * only the function that does crypto bundles crypto-wasm.
 */
export async function withBotCrypto<D extends EventsDeps>(
  deps: D,
  config: Settings<"events">,
  platform: Platform,
): Promise<D> {
  if (!platform.cryptoStoreSecret) return deps;
  const [asToken, secret] = await Promise.all([
    platform.secrets("asToken"),
    platform.cryptoStoreSecret(),
  ]);
  return {
    ...deps,
    crypto: new DeviceCrypto({
      http: clientServerCall(config.homeserverUrl, asToken, config.botUserId),
      store: new DynamoDbCryptoStateStore(platform.dynamodb, config.tableName),
      owner: { userId: config.botUserId, deviceId: botDeviceIdOf(config.botUserId) },
      storeKey: cryptoStoreKeyFrom(secret),
      log: platform.log,
    }),
    ...(platform.keyWait && { keyWait: platform.keyWait }),
  };
}
