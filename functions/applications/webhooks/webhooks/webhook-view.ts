// Apart from operator-view.ts, which lists the outbound webhooks that outbound.ts describes.
/** A webhook as the operator console lists it (a row of the `webhooks` section). */
export type WebhookView = {
  roomId: string;
  /** `inbound`: posts into the room; `outbound`: the room's messages posted out. */
  direction: "inbound" | "outbound";
  name: string;
  /** ISO 8601. */
  createdAt?: string;
  /** When it was last used (ISO 8601). */
  lastUsedAt?: string;
  /** How its last delivery went (`done 200`, `dead 400`, …). */
  lastStatus?: string;
  /** When that was (ISO 8601). */
  lastStatusAt?: string;
  /** The user it posts as, whose last call in the room tells how its last message went. */
  postsAs?: string;
};
