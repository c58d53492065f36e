import type { ClientServerRequest, ClientServerResponse, HomeserverClient } from "./request.ts";

/** How long one outbound action may take, and each of its calls on the homeserver. */
export interface ActionBudget {
  /** How long one call waits for its answer (the homeserver client's timeout). */
  callTimeoutMs: number;
  /** How long the whole action may take: no call starts that could end after it. */
  budgetMs: number;
}

/** An action's time is spent: the call it was about to make would not fit in what is left. */
export class ActionTimeSpent extends Error {
  override name = "ActionTimeSpent";
}

/**
 * The homeserver as one action sees it: each call, the encryption's as much as the action's own,
 * starts only while its whole wait fits before the action's end (`budget.budgetMs` after `now()`
 * at this call); otherwise `ActionTimeSpent` is thrown, the call not made. So an action cannot
 * overrun its budget however many calls it makes, nor the function's timeout, which covers a
 * budget from the last action started.
 */
export function actionHomeserver(
  homeserver: HomeserverClient,
  budget: ActionBudget,
  now: () => number,
): HomeserverClient {
  const deadline = now() + budget.budgetMs;
  return {
    call(userId: string, request: ClientServerRequest): Promise<ClientServerResponse> {
      if (now() + budget.callTimeoutMs > deadline) {
        return Promise.reject(
          new ActionTimeSpent("the action's time is spent: no call's wait fits in what is left"),
        );
      }
      return homeserver.call(userId, request);
    },
  };
}
