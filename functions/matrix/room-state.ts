import { roomStateRequest } from "./actions.ts";
import { callBefore } from "./bounded-call.ts";
import { type HomeserverClient, matrixError } from "./request.ts";

/** Reads the homeserver answers at once, for decisions a handler makes before it acts. */
export interface HomeserverReader {
  /** A state event's content as the bot sees it; undefined when the room has none. */
  roomState(
    roomId: string,
    type: string,
    stateKey?: string,
  ): Promise<Record<string, unknown> | undefined>;
}

export class HttpHomeserverReader implements HomeserverReader {
  constructor(
    private readonly homeserver: HomeserverClient,
    private readonly botUserId: string,
    /** How long one read may spend retrying 429s, 5xx and network failures. */
    private readonly budgetMs: number,
  ) {}

  async roomState(roomId: string, type: string, stateKey = "") {
    const response = await callBefore(
      Date.now() + this.budgetMs,
      this.homeserver,
      this.botUserId,
      roomStateRequest(roomId, type, stateKey),
    );
    if (response.status === 404) return undefined;
    if (response.status >= 200 && response.status < 300) {
      return response.body as Record<string, unknown>;
    }
    const { errcode, error } = matrixError(response.body);
    throw new Error(
      `reading ${type} in ${roomId}: ${response.status} ${errcode ?? ""} ${error ?? ""}`.trim(),
    );
  }
}
