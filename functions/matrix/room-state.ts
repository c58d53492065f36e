import { callBefore } from "./bounded-call.ts";
import { type HomeserverClient, HomeserverRefused } from "./request.ts";
import { roomStateRequest } from "./requests.ts";

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
    protected readonly homeserver: HomeserverClient,
    protected readonly botUserId: string,
    /** How long one call may spend retrying 429s, 5xx and network failures. */
    protected readonly budgetMs: number,
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
    throw new HomeserverRefused(`reading ${type} in ${roomId}`, response.status, response.body);
  }
}
