import { callBefore } from "./bounded-call.ts";
import { HttpHomeserverClient } from "./http-client.ts";
import { type HomeserverClient, matrixError } from "./request.ts";
import { roomStateRequest } from "./requests.ts";

/** How long one read may wait for the homeserver, retries included. */
export const READ_BUDGET_MS = 5_000;

/** A state event as the homeserver gives it with `format=event`. */
export interface StateEvent {
  sender: string;
  content: Record<string, unknown>;
}

/** Reads the homeserver answers at once, for decisions a handler makes before it acts. */
export interface HomeserverReader {
  /** A state event's content as the bot sees it; undefined when the room has none. */
  roomState(
    roomId: string,
    type: string,
    stateKey?: string,
  ): Promise<Record<string, unknown> | undefined>;
  /** The same, the whole event (its sender too). */
  roomStateEvent(roomId: string, type: string, stateKey?: string): Promise<StateEvent | undefined>;
}

export class HttpHomeserverReader implements HomeserverReader {
  constructor(
    private readonly homeserver: HomeserverClient,
    private readonly botUserId: string,
    /** How long one read may spend retrying 429s, 5xx and network failures. */
    private readonly budgetMs: number,
  ) {}

  roomState(roomId: string, type: string, stateKey = "") {
    return this.read<Record<string, unknown>>(roomId, type, stateKey, "content");
  }

  roomStateEvent(roomId: string, type: string, stateKey = "") {
    return this.read<StateEvent>(roomId, type, stateKey, "event");
  }

  private async read<T>(
    roomId: string,
    type: string,
    stateKey: string,
    format: "content" | "event",
  ): Promise<T | undefined> {
    const response = await callBefore(
      Date.now() + this.budgetMs,
      this.homeserver,
      this.botUserId,
      roomStateRequest(roomId, type, stateKey, format),
    );
    if (response.status === 404) return undefined;
    if (response.status >= 200 && response.status < 300) return response.body as T;
    const { errcode, error } = matrixError(response.body);
    throw new Error(
      `reading ${type} in ${roomId}: ${response.status} ${errcode ?? ""} ${error ?? ""}`.trim(),
    );
  }
}

/** The reader for a homeserver at `baseUrl`, as the bot, within `READ_BUDGET_MS` per read. */
export const httpHomeserverReader = (baseUrl: string, asToken: string, botUserId: string) =>
  new HttpHomeserverReader(
    new HttpHomeserverClient(baseUrl, asToken, botUserId, READ_BUDGET_MS),
    botUserId,
    READ_BUDGET_MS,
  );
