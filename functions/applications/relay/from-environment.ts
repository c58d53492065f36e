import { createRelay } from "./index.ts";

/** The relay as `npm start` runs it (`APPLICATION=relay`): the remote service at `RELAY_URL`. */
export const RELAY_URL = process.env.RELAY_URL ?? "http://127.0.0.1:9100";
export const application = createRelay({ remoteUrl: RELAY_URL });
