import type { Log } from "../shared/log.ts";
import type { CryptoOwner, CryptoStateStore } from "../store/crypto-state.ts";
import { bootstrapCrossSigning } from "./cross-signing.ts";
import { DurableOlmMachine } from "./durable-machine.ts";
import { type CryptoCall, sendOutgoingRequests } from "./requests.ts";

/**
 * A client-server call under `/_matrix/client/v3` (the path with its query): with the as_token,
 * or with a device's own `token`. Answers the status and the body's text.
 */
export type ClientServerCall = (call: {
  method: "GET" | "POST" | "PUT";
  path: string;
  body?: string;
  token?: string;
}) => Promise<{ status: number; text: string }>;

/** The setting to name when a homeserver asks for interactive auth for cross-signing keys. */
export const CROSS_SIGNING_AUTH_ERROR =
  "The homeserver asks for interactive auth to upload the bot's cross-signing keys, so clients " +
  "with a strict policy (Element) will not trust its device. Use a homeserver with MSC3967 " +
  "(Matrix 1.11), or on Synapse set `ui_auth: session_timeout` (e.g. 1m). The device works " +
  "otherwise.";

/** A device: who it is, where its state is kept and under which key, how to call the homeserver. */
export interface BotDeviceOptions {
  http: ClientServerCall;
  store: CryptoStateStore;
  owner: CryptoOwner;
  /** 32 bytes: what the machine stores is encrypted under it. */
  storeKey: Uint8Array;
  log: Log;
  displayName?: string;
}

export interface BotDevice {
  machine: DurableOlmMachine;
  /** How the device came to be: already made (its state saved), or made now by one of two ways. */
  made: "before" | "msc4190" | "login";
  /** Whether its cross-signing keys were published now; undefined for a device made before. */
  crossSigned?: boolean;
}

const enc = encodeURIComponent;

/**
 * The machine's calls made as the device: with the as_token, acting as it (`device_id`, and
 * `org.matrix.msc3202.device_id` for homeservers before Matrix 1.17), or with the device's own
 * `token`. Answers the body's text; a failed call throws with its `status`.
 */
export const actingAsDevice =
  (http: ClientServerCall, owner: CryptoOwner, token?: string) =>
  async (call: CryptoCall): Promise<string> => {
    const device = `user_id=${enc(owner.userId)}&device_id=${enc(owner.deviceId)}&org.matrix.msc3202.device_id=${enc(owner.deviceId)}`;
    const query = token ? "" : `${call.path.includes("?") ? "&" : "?"}${device}`;
    const answer = await http({ ...call, path: `${call.path}${query}`, ...(token && { token }) });
    if (answer.status < 200 || answer.status > 299) {
      throw Object.assign(new Error(`${call.path}: ${answer.status} ${answer.text}`), {
        status: answer.status,
      });
    }
    return answer.text;
  };

/**
 * The version of a device's state saved with its keys (identity and cross-signing) made and
 * nothing published yet: the device's claim. Past it, the device was made and published.
 */
const CLAIMED = 1;

/**
 * The bot's device, made once: its crypto state saved past its claim means it exists. Otherwise
 * its keys are made and saved first, with the version check (the claim: of two processes making
 * the device at once, one saves, the other is refused with `StaleCryptoStateError` before it
 * published anything, and its caller opens the device again); then the device is
 * made (MSC4190 `PUT /devices/{id}` as the appservice, else `m.login.application_service`), its
 * keys uploaded acting as it (`device_id`, and `org.matrix.msc3202.device_id` for homeservers
 * before Matrix 1.17), its cross-signing identity made and uploaded with a token from a login of
 * the device just before (homeservers that need interactive auth skip it for a fresh login with
 * Synapse's `ui_auth: session_timeout`), and its state saved. A 401 for the cross-signing keys
 * is logged once as an ERROR naming the setting, and the device is used uncross-signed. A
 * device claimed but not finished (a crash in its making, or its maker still at it) is finished
 * with the keys claimed: every step is the same again, and cross-signing keys already published
 * are not uploaded again.
 */
export async function ensureBotDevice(options: BotDeviceOptions): Promise<BotDevice> {
  const { http, owner, log } = options;
  const machine = await DurableOlmMachine.open(options.store, owner, options.storeKey);
  if (machine.version > CLAIMED) return { machine, made: "before" };
  try {
    if (machine.version === 0) {
      await machine.machine.bootstrapCrossSigning(true);
      await machine.save();
    }
    const user = `user_id=${enc(owner.userId)}`;
    const put = await http({
      method: "PUT",
      path: `/devices/${enc(owner.deviceId)}?${user}`,
      body: JSON.stringify({ display_name: options.displayName ?? "appservice" }),
    });
    const login = async () => {
      const answer = await http({
        method: "POST",
        path: "/login",
        body: JSON.stringify({
          type: "m.login.application_service",
          identifier: { type: "m.id.user", user: owner.userId },
          device_id: owner.deviceId,
          initial_device_display_name: options.displayName ?? "appservice",
        }),
      });
      if (answer.status !== 200) {
        throw new Error(
          `The appservice login for ${owner.userId} failed: ${answer.status} ${answer.text}`,
        );
      }
      return (JSON.parse(answer.text) as { access_token: string }).access_token;
    };
    let made: BotDevice["made"] = "msc4190";
    if (put.status !== 200 && put.status !== 201) {
      made = "login";
      await login();
    }
    const checked = (token?: string) => actingAsDevice(http, owner, token);
    await sendOutgoingRequests(machine.machine, checked());
    let crossSigned = true;
    try {
      // A fresh token, from a login of the device right now (the device and its keys are kept).
      await bootstrapCrossSigning(machine.machine, checked(await login()), false);
    } catch (error) {
      if ((error as { status?: number }).status !== 401) throw error;
      log.error(CROSS_SIGNING_AUTH_ERROR, { userId: owner.userId, deviceId: owner.deviceId });
      crossSigned = false;
    }
    await sendOutgoingRequests(machine.machine, checked());
    await machine.save();
    return { machine, made, crossSigned };
  } catch (error) {
    await machine.close();
    throw error;
  }
}
