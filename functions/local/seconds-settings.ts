/**
 * `npm start`'s settings in whole seconds, each with its largest value. Shorter than their
 * defaults, a service back from an outage is retried sooner, a room creation its process died in
 * too, and a message a killed process held is handed out again sooner (the tests run so).
 * - The backoff's cap goes up to SQS's longest visibility timeout (12 hours), which bounds a
 *   retry's wait.
 * - The room claim's lease up to Lambda's longest run (15 minutes): a crashed creation's retries
 *   wait it out, and a longer one would spend them.
 * - The visibility timeout up to SQS's longest: how long a message received and not deleted (its
 *   consumer crashed or was killed) stays hidden; the claims' lease is a second less (at most the
 *   events function's timeout), so a handler that outlives it may be run again.
 */
export const SECONDS_SETTINGS = {
  OUTBOX_BACKOFF_CAP_SECONDS: 43_200,
  ROOM_CLAIM_LEASE_SECONDS: 900,
  VISIBILITY_TIMEOUT_SECONDS: 43_200,
} as const;

export type SecondsSetting = keyof typeof SECONDS_SETTINGS;

/**
 * Each of `SECONDS_SETTINGS` in `env` as whole seconds from 1 to its largest; undefined when unset
 * or empty. Anything else throws, naming the variable and its value.
 */
export function secondsSettings(
  env: NodeJS.ProcessEnv,
): Record<SecondsSetting, number | undefined> {
  return Object.fromEntries(
    Object.entries(SECONDS_SETTINGS).map(([name, max]) => {
      const value = env[name];
      if (!value) return [name, undefined];
      if (!/^[1-9][0-9]*$/.test(value) || Number(value) > max) {
        throw new Error(`${name}=${value} is not a whole number of seconds from 1 to ${max}`);
      }
      return [name, Number(value)];
    }),
  ) as Record<SecondsSetting, number | undefined>;
}
