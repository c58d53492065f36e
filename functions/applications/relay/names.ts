/** Users and aliases the relay acts as: `@_relay_<user>:<server>`, `#_relay_<channel>:<server>`. */
export const RELAY_PREFIX = "_relay_";
