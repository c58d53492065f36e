import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  authorization: string | undefined;
  body: unknown;
  at: number;
  /** The status it was answered with (undefined while pending or when it hung). */
  status?: number;
}

/** A canned answer for the next matching request, instead of the homeserver's own. */
export type Cue =
  | { status: number; body: unknown; headers?: Record<string, string> }
  | { hang: true };

interface CueRule {
  match: (request: RecordedRequest) => boolean;
  times: number;
  cue: Cue;
}

/**
 * A homeserver on 127.0.0.1 that speaks the client-server API calls the appservice makes, the
 * way Synapse answers them: appservice auth with the as_token in the header (a token in the
 * query too is 401 `M_MISSING_TOKEN`), `?user_id=` masquerading (403 `M_FORBIDDEN` for a user
 * never registered), registration (`M_USER_IN_USE`), rooms with members (403 `M_FORBIDDEN` for
 * a user not in the room), sends deduplicated by txnId. It records every request and answers
 * 429, 5xx or nothing at all on cue.
 */
export class ScriptedHomeserver {
  readonly requests: RecordedRequest[] = [];
  readonly registered = new Set<string>();
  /** roomId → members; rooms in `inviteOnly` need an invite to join. */
  readonly rooms = new Map<string, Set<string>>();
  readonly inviteOnly = new Set<string>();
  readonly invites = new Map<string, Set<string>>();
  /** Events sent, in the order the homeserver accepted them. */
  readonly sent: {
    roomId: string;
    sender: string;
    type: string;
    content: Record<string, unknown>;
    eventId: string;
    txnId: string;
  }[] = [];
  /** Rooms made by `POST /createRoom`, with the request's body, in order. */
  readonly createdRooms: { roomId: string; creator: string; body: Record<string, unknown> }[] = [];
  /** Alias → room ID, profile fields set, by user. */
  readonly aliases = new Map<string, string>();
  readonly profiles = new Map<string, Record<string, unknown>>();
  /** Where `POST /_matrix/client/v1/appservice/{id}/ping` reaches the appservice. */
  appservice: { id: string; url: string | null; hsToken: string } | undefined;
  /** False: a homeserver before Matrix v1.7, which answers the ping as an unknown endpoint. */
  pingSupported = true;
  private readonly txns = new Map<string, string>();
  private readonly cues: CueRule[] = [];
  private server: Server | undefined;
  private readonly hanging = new Set<ServerResponse>();
  port = 0;

  /** Room state: `roomId\ntype\nstateKey` → the event's sender and content. */
  readonly state = new Map<string, { sender: string; content: Record<string, unknown> }>();

  constructor(
    readonly asToken: string,
    readonly serverName: string,
    readonly botUserId: string,
    /** Whether a user is in the registration's namespaces: may be registered and acted as. */
    readonly inNamespace: (userId: string) => boolean = () => true,
  ) {
    this.registered.add(botUserId);
  }

  setState(
    roomId: string,
    type: string,
    stateKey: string,
    content: Record<string, unknown>,
    sender = this.botUserId,
  ) {
    this.state.set(`${roomId}\n${type}\n${stateKey}`, { sender, content });
  }

  private interestedIn(userId: string) {
    return userId === this.botUserId || this.inNamespace(userId);
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts listening, on the same port as before after a `stop()`. */
  async start(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => server.listen(this.port, "127.0.0.1", resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening: connections are refused until the next `start()`. */
  async stop(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    this.hanging.clear();
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Answers the next `times` requests that `match` with `cue`. */
  cue(match: (request: RecordedRequest) => boolean, cue: Cue, times = 1) {
    this.cues.push({ match, cue, times });
  }

  /** Forgets the cues not used up: the homeserver answers normally again. */
  clearCues() {
    this.cues.length = 0;
  }

  createRoom(roomId: string, members: string[], options: { inviteOnly?: boolean } = {}) {
    this.rooms.set(roomId, new Set(members));
    if (options.inviteOnly) this.inviteOnly.add(roomId);
  }

  /**
   * The `initial_state` of a room made by `POST /createRoom`, as the events a homeserver pushes
   * to the appservice for the rooms its users are in (this one pushes nothing by itself).
   */
  initialStateEvents(roomId: string): ClientEvent[] {
    const room = this.createdRooms.find((r) => r.roomId === roomId);
    const state = (room?.body.initial_state ?? []) as {
      type: string;
      state_key?: string;
      content: Record<string, unknown>;
    }[];
    return state.map(({ type, state_key = "", content }) => ({
      event_id: `$${randomUUID()}`,
      room_id: roomId,
      type,
      state_key,
      sender: room?.creator as string,
      origin_server_ts: Date.now(),
      content,
    }));
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString("utf8");
    const request: RecordedRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      authorization: req.headers.authorization,
      body: text ? JSON.parse(text) : undefined,
      at: Date.now(),
    };
    this.requests.push(request);
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      request.status = status;
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify(body));
    };
    const rule = this.cues.find((r) => r.times > 0 && r.match(request));
    if (rule) {
      rule.times--;
      if ("hang" in rule.cue) {
        this.hanging.add(res);
        return;
      }
      reply(rule.cue.status, rule.cue.body, rule.cue.headers);
      return;
    }
    const [status, body] = request.path.startsWith("/_matrix/client/v1/appservice/")
      ? await this.ping(request)
      : this.answer(request);
    reply(status, body);
  }

  /** Synapse's ping: it calls the appservice's own `/ping` and reports how that went. */
  private async ping(request: RecordedRequest): Promise<[number, unknown]> {
    // As an older Synapse answered it.
    if (!this.pingSupported)
      return [400, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }];
    const id = decodeURIComponent(request.path.split("/")[5] as string);
    if (request.authorization !== `Bearer ${this.asToken}` || this.appservice?.id !== id) {
      return [
        403,
        {
          errcode: "M_FORBIDDEN",
          error: "Provided appservice ID does not match the appservice token",
        },
      ];
    }
    if (!this.appservice.url)
      return [400, { errcode: "M_URL_NOT_SET", error: "Application service URL is not set" }];
    const started = Date.now();
    try {
      const response = await fetch(`${this.appservice.url}/_matrix/app/v1/ping`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${this.appservice.hsToken}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({
          transaction_id: (request.body as { transaction_id?: string })?.transaction_id ?? null,
        }),
        signal: AbortSignal.timeout(2000),
      });
      const text = await response.text();
      if (!response.ok) {
        return [
          502,
          {
            errcode: "M_BAD_STATUS",
            error: "Ping returned error status",
            status: response.status,
            body: text,
          },
        ];
      }
      return [200, { duration_ms: Date.now() - started }];
    } catch (error) {
      return (error as Error).name === "TimeoutError"
        ? [
            504,
            {
              errcode: "M_CONNECTION_TIMEOUT",
              error: "Connection to application service timed out",
            },
          ]
        : [
            502,
            { errcode: "M_CONNECTION_FAILED", error: "Failed to connect to application service" },
          ];
    }
  }

  /** What Synapse would answer. */
  private answer(request: RecordedRequest): [number, unknown] {
    const forbidden = (error: string): [number, unknown] => [
      403,
      { errcode: "M_FORBIDDEN", error },
    ];
    if (request.query.access_token !== undefined) {
      return [
        401,
        {
          errcode: "M_MISSING_TOKEN",
          error: "Mixing Authorization headers and access_token query parameters.",
        },
      ];
    }
    if (request.authorization !== `Bearer ${this.asToken}`) {
      return [401, { errcode: "M_UNKNOWN_TOKEN", error: "Unrecognised access token." }];
    }
    const userId = request.query.user_id ?? this.botUserId;
    const path = request.path.replace(/^\/_matrix\/client\/v3/, "");
    const parts = path.split("/").map(decodeURIComponent);
    const body = (request.body ?? {}) as Record<string, unknown>;

    if (request.method === "POST" && path === "/register") {
      const id = `@${String(body.username)}:${this.serverName}`;
      if (body.type !== "m.login.application_service")
        return [400, { errcode: "M_BAD_JSON", error: "bad type" }];
      if (!this.interestedIn(id)) {
        return [
          400,
          { errcode: "M_EXCLUSIVE", error: "Invalid user localpart for this application service." },
        ];
      }
      if (this.registered.has(id))
        return [400, { errcode: "M_USER_IN_USE", error: "User ID already taken." }];
      this.registered.add(id);
      return [200, { user_id: id }];
    }
    if (!this.interestedIn(userId)) {
      return forbidden("Application service cannot masquerade as this user.");
    }
    if (!this.registered.has(userId)) {
      return forbidden(`Application service has not registered this user (${userId})`);
    }
    if (request.method === "POST" && parts[1] === "join") {
      const roomId = parts[2] as string;
      const members = this.rooms.get(roomId);
      if (!members) return [404, { errcode: "M_NOT_FOUND", error: "No known servers" }];
      if (
        this.inviteOnly.has(roomId) &&
        !members.has(userId) &&
        !this.invites.get(roomId)?.has(userId)
      ) {
        return forbidden("You are not invited to this room.");
      }
      members.add(userId);
      return [200, { room_id: roomId }];
    }
    if (request.method === "POST" && path === "/createRoom") {
      const alias = body.room_alias_name
        ? `#${String(body.room_alias_name)}:${this.serverName}`
        : undefined;
      if (alias && this.aliases.has(alias))
        return [400, { errcode: "M_ROOM_IN_USE", error: "Room alias already taken" }];
      const roomId = `!${randomUUID()}:${this.serverName}`;
      this.createRoom(roomId, [userId]);
      this.createdRooms.push({ roomId, creator: userId, body });
      if (alias) this.aliases.set(alias, roomId);
      return [200, { room_id: roomId }];
    }
    if (parts[1] === "profile") {
      if (parts[2] !== userId) return forbidden("Cannot set another user's profile");
      this.profiles.set(userId, { ...this.profiles.get(userId), ...body });
      return [200, {}];
    }
    if (parts[1] === "directory") return [200, {}];
    if (parts[1] !== "rooms")
      return [404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }];

    const roomId = parts[2] as string;
    const members = this.rooms.get(roomId);
    if (!members?.has(userId)) return forbidden(`User ${userId} not in room ${roomId}`);
    switch (parts[3]) {
      case "send": {
        const txnKey = `${userId}/${parts[5]}`;
        const existing = this.txns.get(txnKey);
        if (existing) return [200, { event_id: existing }];
        const eventId = `$${randomUUID()}`;
        this.txns.set(txnKey, eventId);
        this.sent.push({
          roomId,
          sender: userId,
          type: parts[4] as string,
          content: body,
          eventId,
          txnId: parts[5] as string,
        });
        return [200, { event_id: eventId }];
      }
      case "state": {
        const key = `${roomId}\n${parts[4]}\n${parts[5] ?? ""}`;
        if (request.method === "PUT") {
          this.state.set(key, { sender: userId, content: body });
          return [200, { event_id: `$${randomUUID()}` }];
        }
        const event = this.state.get(key);
        if (!event) return [404, { errcode: "M_NOT_FOUND", error: "Event not found." }];
        if (request.query.format !== "event") return [200, event.content];
        return [200, { type: parts[4], state_key: parts[5] ?? "", room_id: roomId, ...event }];
      }
      case "invite": {
        const invited = this.invites.get(roomId) ?? new Set<string>();
        invited.add(String(body.user_id));
        this.invites.set(roomId, invited);
        return [200, {}];
      }
      case "leave":
        members.delete(userId);
        return [200, {}];
      default:
        return [200, {}];
    }
  }
}
