/** What the outbox counts of an action's server errors, across its attempts. */
export interface ServerErrorCounter {
  /** Counts one more server error for the action; returns its count, this one included. */
  countServerError(actionId: string): Promise<number>;
}
