/** Users and aliases the relay acts as: `@_relay_<user>:<server>`, `#_relay_<channel>:<server>`. */
export const RELAY_PREFIX = "_relay_";

// The remote IDs of a portal's message map, apart by kind: remote IDs hold no control character.
/** A message's image sent beside its text. */
export const imageRemoteId = (messageId: string) => `${messageId}\nimage`;
const REACTION = "reaction\n";
/** A reaction (a remote one by its ID, a Matrix user's by its event ID). */
export const reactionRemoteId = (reactionId: string) => `${REACTION}${reactionId}`;

/** What a message map's remote ID names: a reaction, or a message (its image too). */
export function mappedThing(remoteId: string): { kind: "reaction" | "message"; id: string } {
  if (remoteId.startsWith(REACTION))
    return { kind: "reaction", id: remoteId.slice(REACTION.length) };
  return { kind: "message", id: remoteId.replace(/\nimage$/, "") };
}
