/** One side of a bridge as MSC2346 describes it: an ID, and how clients may show it. */
export interface BridgedThing {
  id: string;
  displayname?: string;
  /** An `mxc://` URI. */
  avatar_url?: string;
  external_url?: string;
}

/** What a portal bridges (MSC2346): the protocol, the network if it has several, the channel. */
export interface BridgeInfo {
  protocol: BridgedThing;
  network?: BridgedThing;
  channel: BridgedThing;
  /** The Matrix user who asked for the portal, if one did. */
  creator?: string;
}

/**
 * The state that tells clients a room is a portal: `m.bridge` (MSC2346) and the older
 * `uk.half-shot.bridge` that clients still read, the same content under one state key per
 * bridge and channel (the bot, then each part's ID).
 */
export function bridgeState(info: BridgeInfo, botUserId: string) {
  const stateKey = [botUserId, info.protocol.id, ...(info.network ? [info.network.id] : [])]
    .concat(info.channel.id)
    .map(encodeURIComponent)
    .join("/");
  const content = { bridgebot: botUserId, ...info };
  return ["m.bridge", "uk.half-shot.bridge"].map((type) => ({
    type,
    state_key: stateKey,
    content,
  }));
}
