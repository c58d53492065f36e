/**
 * Whether `npm start` reads and writes encrypted rooms (opt-in): `ENCRYPTED_ROOMS=true`, or
 * `READ_ENCRYPTED_ROOMS=true`, its name from when they were only read, still accepted. Anything
 * else is off, as the stack's `-c encryptedRooms` reads "true" alone.
 */
export const encryptedRoomsSetting = (env: NodeJS.ProcessEnv): boolean =>
  env.ENCRYPTED_ROOMS === "true" || env.READ_ENCRYPTED_ROOMS === "true";
