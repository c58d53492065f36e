// The application local mode's worker test runs. Its functions load it in worker threads of
// their own, so it shares nothing with the test: each event's content says what its handler
// does, and the handler notes what it did in a file the test reads.
import { appendFileSync, existsSync, writeFileSync } from "node:fs";
import { type Application, defineApplication } from "../../functions/appservice/api.ts";

/** What an event asks of its handler. */
export interface Orders {
  /** The file the handler appends `burning <event ID>` and `handled <event ID>` lines to. */
  record: string;
  /** Keeps the CPU busy (no await) until this file exists, or a minute has passed. */
  burnUntil?: string;
  /** Crashes the thread the first time (while this file does not exist; it creates it). */
  crashOnce?: string;
  /** Crashes the thread every time, after appending `running <event ID>`. */
  crashAlways?: boolean;
  /** Never settles, after appending `running <event ID>`: the function's timeout ends it. */
  hang?: boolean;
}

/** How long a burn lasts at most: far longer than a few acks take on a loaded machine. */
export const MAX_BURN_MS = 60_000;

/**
 * Thrown outside the handler's promise, an uncaught exception ends the thread as a crash would;
 * the handler never settles.
 */
const crash = () => {
  setImmediate(() => {
    throw new Error("injected crash");
  });
  return new Promise<never>(() => undefined);
};

const application: Application = {
  // Crashes the HTTP functions' thread.
  routes: [{ method: "POST", path: "/crash", handle: crash }],
  onEvent(event) {
    const orders = event.content as unknown as Orders;
    if (orders.crashOnce && !existsSync(orders.crashOnce)) {
      writeFileSync(orders.crashOnce, "");
      return crash();
    }
    if (orders.crashAlways || orders.hang) {
      appendFileSync(orders.record, `running ${event.event_id}\n`);
      return orders.hang ? new Promise<never>(() => undefined) : crash();
    }
    if (orders.burnUntil) {
      appendFileSync(orders.record, `burning ${event.event_id}\n`);
      const end = Date.now() + MAX_BURN_MS;
      while (!existsSync(orders.burnUntil) && Date.now() < end) {
        // Busy: the thread's event loop is blocked.
      }
    }
    appendFileSync(orders.record, `handled ${event.event_id}\n`);
  },
};

// A manifest module, as local mode loads an application: the whole in every part.
export const manifest = defineApplication({});
const whole = async () => application;
export const events = whole;
export const queries = whole;
export const routes = whole;
export const operator = whole;
