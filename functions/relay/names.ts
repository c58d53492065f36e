/** Users and aliases the relay acts as: `@_relay_<user>:<server>`, `#_relay_<channel>:<server>`. */
export const RELAY_PREFIX = "_relay_";

/** An image or an avatar, as the remote service and the relay exchange them. */
export interface Attachment {
  content_type: string;
  data: string;
}
