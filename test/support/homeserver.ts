import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { ClientEvent } from "../../functions/appservice/protocol/transaction.ts";
import { HomeserverEncryption } from "./homeserver-crypto.ts";
import type { RecordedRequest } from "./recorded-request.ts";

export type { RecordedRequest } from "./recorded-request.ts";

/** A canned answer for the next matching request, instead of the homeserver's own. */
export type Cue =
  | { status: number; body: unknown; headers?: Record<string, string> }
  | { hang: true }
  /** Does what was asked, then drops the connection unanswered: the answer is lost. */
  | { loseAnswer: true }
  /** Does what was asked, then holds the answer until `stop()`: the caller waits on a done request. */
  | { holdAnswer: true };

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
 * a user not in the room), sends deduplicated by txnId, rooms created with their initial state
 * (an alias taken: 400 `M_ROOM_IN_USE`; outside the namespaces: the room made, then 400
 * `M_EXCLUSIVE`), the room directory, members with their names (and `GET /members`, joined and
 * invited), events, profiles, and the media
 * repository (`create` then `PUT` upload since Matrix 1.7, authenticated media since 1.11, each
 * of which can be turned off, and an upload limit). It records every request and answers 429,
 * 5xx or nothing at all on cue.
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
  /** False: a homeserver before Matrix v1.7, without `POST /_matrix/media/v1/create`. */
  mediaCreateSupported = true;
  /** False: a homeserver before Matrix v1.11, without `/_matrix/client/v1/media/*`. */
  authenticatedMediaSupported = true;
  /** `m.upload.size`. */
  maxUploadBytes = 50 * 1024 * 1024;
  /** The version of rooms made without one (`m.room_versions.default`). */
  defaultRoomVersion = "10";
  /** Media by ID: the bytes once uploaded, and who created (or uploaded) it. */
  readonly media = new Map<
    string,
    { creator: string; bytes?: Buffer; contentType?: string; fileName?: string }
  >();
  /** Whether an alias is in the registration's alias namespaces. */
  aliasInNamespace: (alias: string) => boolean = () => true;
  private readonly txns = new Map<string, string>();
  private readonly cues: CueRule[] = [];
  private server: Server | undefined;
  private readonly hanging = new Set<ServerResponse>();
  port = 0;

  /** Room state: `roomId\ntype\nstateKey` → the event's sender and content. */
  readonly state = new Map<string, { sender: string; content: Record<string, unknown> }>();
  /**
   * End-to-end encryption (test/support/homeserver-crypto.ts): devices, keys, to-device messages,
   * people with their own tokens and `/sync`, and what `pushTransaction` pushes.
   */
  readonly encryption: HomeserverEncryption;

  constructor(
    readonly asToken: string,
    readonly serverName: string,
    readonly botUserId: string,
    /** Whether a user is in the registration's namespaces: may be registered and acted as. */
    readonly inNamespace: (userId: string) => boolean = () => true,
  ) {
    this.registered.add(botUserId);
    this.encryption = new HomeserverEncryption({
      asToken,
      serverName,
      botUserId,
      interestedIn: (userId) => this.interestedIn(userId),
      appserviceActor: (request) => this.actor(request),
      timeline: () =>
        this.sent.map((event, index) => ({
          event_id: event.eventId,
          room_id: event.roomId,
          type: event.type,
          sender: event.sender,
          origin_server_ts: index,
          content: event.content,
        })),
    });
  }

  /**
   * Pushes a transaction to the appservice as Synapse does with MSC2409 and MSC3202 on: `events`,
   * and the to-device messages, device-list changes and key counts for its users' devices.
   */
  pushTransaction(events: ClientEvent[] = [], txnId = this.encryption.nextTransactionId()) {
    if (!this.appservice?.url) throw new Error("No appservice to push to");
    return fetch(
      `${this.appservice.url}/_matrix/app/v1/transactions/${encodeURIComponent(txnId)}`,
      {
        method: "PUT",
        headers: {
          authorization: `Bearer ${this.appservice.hsToken}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ events, ...this.encryption.takeTransactionExtensions() }),
      },
    );
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

  /** Joins `userId`, its member event carrying its global profile, as Synapse writes it. */
  private join(roomId: string, userId: string) {
    this.rooms.get(roomId)?.add(userId);
    const profile = this.profiles.get(userId) ?? {};
    this.setState(
      roomId,
      "m.room.member",
      userId,
      {
        membership: "join",
        ...(profile.displayname !== undefined && { displayname: profile.displayname }),
        ...(profile.avatar_url !== undefined && { avatar_url: profile.avatar_url }),
      },
      userId,
    );
  }

  /**
   * `POST /createRoom` as Synapse does it: the alias checked first (taken: `M_ROOM_IN_USE`), the
   * room made with its state (preset, power levels with the override, initial state, name,
   * topic), the invitees invited, and then the alias bound, which fails with 400 `M_EXCLUSIVE`
   * outside the appservice's namespaces (the room stays, made).
   */
  private createRoomAs(userId: string, body: Record<string, unknown>): [number, unknown] {
    const alias = body.room_alias_name
      ? `#${String(body.room_alias_name)}:${this.serverName}`
      : undefined;
    if (alias && this.aliases.has(alias))
      return [400, { errcode: "M_ROOM_IN_USE", error: "Room alias already taken" }];
    const version = String(body.room_version ?? this.defaultRoomVersion);
    const preset = body.preset ?? (body.visibility === "public" ? "public_chat" : "private_chat");
    const invite = (body.invite ?? []) as string[];
    // Room version 12: the creators (the sender, additional_creators, a trusted private chat's
    // invitees) have infinite power, and power levels that name one are refused.
    const v12 = Number(version) >= 12;
    const additional = [
      ...(((body.creation_content as Record<string, unknown> | undefined)?.additional_creators ??
        []) as string[]),
      ...(v12 && preset === "trusted_private_chat" ? invite : []),
    ];
    const override = body.power_level_content_override as Record<string, unknown> | undefined;
    const named = Object.keys((override?.users ?? {}) as Record<string, unknown>);
    if (v12 && named.some((user) => user === userId || additional.includes(user))) {
      return [400, { errcode: "M_INVALID_PARAM", error: "Creators cannot be in power levels" }];
    }
    // Version 12's room IDs are the create event's hash, with no server name.
    const roomId = v12
      ? `!${randomBytes(32).toString("base64url")}`
      : `!${randomUUID()}:${this.serverName}`;
    this.createRoom(roomId, [], { inviteOnly: preset !== "public_chat" });
    this.createdRooms.push({ roomId, creator: userId, body });
    this.setState(
      roomId,
      "m.room.create",
      "",
      v12
        ? {
            room_version: version,
            ...(additional.length > 0 && { additional_creators: additional }),
          }
        : { room_version: version, creator: userId },
      userId,
    );
    this.join(roomId, userId);
    this.setState(
      roomId,
      "m.room.power_levels",
      "",
      {
        users: {
          ...(!v12 && { [userId]: 100 }),
          ...(!v12 &&
            preset === "trusted_private_chat" &&
            Object.fromEntries(invite.map((invitee) => [invitee, 100]))),
        },
        users_default: 0,
        events_default: 0,
        state_default: 50,
        ban: 50,
        kick: 50,
        redact: 50,
        invite: preset === "public_chat" ? 50 : 0,
        ...override,
      },
      userId,
    );
    const state = (body.initial_state ?? []) as {
      type: string;
      state_key?: string;
      content: Record<string, unknown>;
    }[];
    for (const event of state) {
      this.setState(roomId, event.type, event.state_key ?? "", event.content, userId);
    }
    if (body.name !== undefined)
      this.setState(roomId, "m.room.name", "", { name: body.name }, userId);
    if (body.topic !== undefined) {
      this.setState(roomId, "m.room.topic", "", { topic: body.topic }, userId);
    }
    this.invites.set(roomId, new Set(invite));
    if (alias) {
      if (!this.aliasInNamespace(alias)) {
        return [
          400,
          {
            errcode: "M_EXCLUSIVE",
            error: "This application service has not reserved this kind of alias.",
          },
        ];
      }
      this.aliases.set(alias, roomId);
    }
    return [200, { room_id: roomId }];
  }

  /** A room's creators where its version gives them infinite power (12 and later); else none. */
  private infinitelyPowerful(roomId: string): string[] {
    const create = this.state.get(`${roomId}\nm.room.create\n`);
    if (!create || !(Number(create.content.room_version) >= 12)) return [];
    return [create.sender, ...((create.content.additional_creators ?? []) as string[])];
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
    const raw = Buffer.concat(chunks);
    const upload = url.pathname.startsWith("/_matrix/media/v3/upload");
    const request: RecordedRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      authorization: req.headers.authorization,
      body: !upload && raw.length ? JSON.parse(raw.toString("utf8")) : undefined,
      ...(upload && { bytes: raw }),
      ...(req.headers["content-type"] && { contentType: req.headers["content-type"] }),
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
      if ("loseAnswer" in rule.cue) {
        if (!this.isMediaPath(request.path)) this.answer(request);
        res.destroy();
        return;
      }
      if ("holdAnswer" in rule.cue) {
        if (!this.isMediaPath(request.path)) this.answer(request);
        this.hanging.add(res);
        return;
      }
      if ("hang" in rule.cue) {
        this.hanging.add(res);
        return;
      }
      reply(rule.cue.status, rule.cue.body, rule.cue.headers);
      return;
    }
    if (request.path.startsWith("/_matrix/client/v1/appservice/")) {
      reply(...(await this.ping(request)));
      return;
    }
    if (request.method === "GET" && request.path === "/_matrix/client/versions") {
      const versions = this.pingSupported ? ["v1.6", "v1.7", "v1.11"] : ["v1.5", "v1.6"];
      reply(200, { versions });
      return;
    }
    const answer = this.isMediaPath(request.path)
      ? this.mediaAnswer(request)
      : this.answer(request);
    if ("bytes" in answer) {
      request.status = 200;
      res.writeHead(200, answer.headers);
      res.end(answer.bytes);
      return;
    }
    reply(...answer);
  }

  private isMediaPath(path: string) {
    return path.startsWith("/_matrix/media/") || path.startsWith("/_matrix/client/v1/media/");
  }

  /** Who acts (`user_id` or the bot), or the error Synapse gives an appservice that may not. */
  private actor(request: RecordedRequest): string | [number, unknown] {
    if (request.query.access_token !== undefined) {
      return [
        401,
        {
          errcode: "M_MISSING_TOKEN",
          error: "Mixing Authorization headers and access_token query parameters.",
        },
      ];
    }
    // A device's own token (a person's, or one `m.login.application_service` gave).
    const owner = this.encryption.tokenOwner(request.authorization);
    if (owner) return owner.userId;
    if (request.authorization !== `Bearer ${this.asToken}`) {
      return [401, { errcode: "M_UNKNOWN_TOKEN", error: "Unrecognised access token." }];
    }
    const userId = request.query.user_id ?? this.botUserId;
    if (!this.interestedIn(userId)) {
      return [
        403,
        { errcode: "M_FORBIDDEN", error: "Application service cannot masquerade as this user." },
      ];
    }
    if (!this.registered.has(userId)) {
      return [
        403,
        {
          errcode: "M_FORBIDDEN",
          error: `Application service has not registered this user (${userId})`,
        },
      ];
    }
    return userId;
  }

  /** The media repository, as Synapse answers it. */
  private mediaAnswer(
    request: RecordedRequest,
  ): [number, unknown] | { bytes: Buffer; headers: Record<string, string> } {
    const unrecognized: [number, unknown] = [
      404,
      { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" },
    ];
    const authenticated = request.path.startsWith("/_matrix/client/v1/media/");
    if (authenticated && !this.authenticatedMediaSupported) return unrecognized;
    const path = request.path.replace(/^\/_matrix\/(client\/v1\/media|media\/v[13])/, "");
    const parts = path.split("/").map(decodeURIComponent);
    // Unauthenticated downloads (before Matrix 1.11) need no token.
    const download = request.method === "GET" && parts[1] === "download";
    const actor = download && !authenticated ? this.botUserId : this.actor(request);
    if (typeof actor !== "string") return actor;
    if (request.method === "GET" && parts[1] === "config") {
      return [200, { "m.upload.size": this.maxUploadBytes }];
    }
    if (request.method === "POST" && request.path === "/_matrix/media/v1/create") {
      if (!this.mediaCreateSupported) return unrecognized;
      const mediaId = randomUUID().replaceAll("-", "");
      this.media.set(mediaId, { creator: actor });
      return [
        200,
        {
          content_uri: `mxc://${this.serverName}/${mediaId}`,
          unused_expires_at: Date.now() + 86_400_000,
        },
      ];
    }
    if (parts[1] === "upload" && request.path.startsWith("/_matrix/media/v3/")) {
      const bytes = request.bytes ?? Buffer.alloc(0);
      if (bytes.length > this.maxUploadBytes) {
        return [413, { errcode: "M_TOO_LARGE", error: "Upload request body is too large" }];
      }
      const upload = {
        creator: actor,
        bytes,
        contentType: request.contentType ?? "application/octet-stream",
        ...(request.query.filename !== undefined && { fileName: request.query.filename }),
      };
      if (request.method === "POST" && parts.length === 2) {
        const mediaId = randomUUID().replaceAll("-", "");
        this.media.set(mediaId, upload);
        return [200, { content_uri: `mxc://${this.serverName}/${mediaId}` }];
      }
      if (request.method === "PUT" && parts.length === 4) {
        if (parts[2] !== this.serverName) {
          return [404, { errcode: "M_NOT_FOUND", error: "Non-local server name specified" }];
        }
        const existing = this.media.get(parts[3] as string);
        if (!existing) return [404, { errcode: "M_NOT_FOUND", error: "Unknown media ID" }];
        if (existing.creator !== actor) {
          return [
            403,
            { errcode: "M_FORBIDDEN", error: "You may only upload to media you created" },
          ];
        }
        if (existing.bytes) {
          return [
            409,
            { errcode: "M_CANNOT_OVERWRITE_MEDIA", error: "Media ID cannot be overwritten" },
          ];
        }
        this.media.set(parts[3] as string, upload);
        return [200, {}];
      }
    }
    if (download && parts.length >= 4) {
      const media = parts[2] === this.serverName ? this.media.get(parts[3] as string) : undefined;
      if (!media?.bytes) return [404, { errcode: "M_NOT_FOUND", error: "Not found" }];
      const fileName = parts[4] ?? media.fileName;
      return {
        bytes: media.bytes,
        headers: {
          "content-type": media.contentType ?? "application/octet-stream",
          "content-length": String(media.bytes.length),
          ...(fileName !== undefined && {
            "content-disposition": `inline; filename*=utf-8''${encodeURIComponent(fileName)}`,
          }),
        },
      };
    }
    return unrecognized;
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
    const encryption = this.encryption.answer(request);
    if (encryption) return encryption;
    const actor = this.actor(request);
    if (typeof actor !== "string" && (actor[0] as number) === 401) return actor;
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
    if (typeof actor !== "string") return actor;
    const userId = actor;
    if (request.method === "POST" && parts[1] === "join") {
      const target = parts[2] as string;
      const roomId = target.startsWith("#") ? (this.aliases.get(target) ?? target) : target;
      const members = this.rooms.get(roomId);
      if (!members) return [404, { errcode: "M_NOT_FOUND", error: "No known servers" }];
      if (
        this.inviteOnly.has(roomId) &&
        !members.has(userId) &&
        !this.invites.get(roomId)?.has(userId)
      ) {
        return forbidden("You are not invited to this room.");
      }
      this.join(roomId, userId);
      return [200, { room_id: roomId }];
    }
    if (request.method === "POST" && path === "/createRoom") return this.createRoomAs(userId, body);
    if (request.method === "GET" && path === "/capabilities") {
      return [
        200,
        {
          capabilities: { "m.room_versions": { default: this.defaultRoomVersion, available: {} } },
        },
      ];
    }
    if (parts[1] === "profile") {
      const target = parts[2] as string;
      if (request.method === "GET") {
        if (!this.registered.has(target)) {
          return [404, { errcode: "M_NOT_FOUND", error: "Profile was not found" }];
        }
        return [200, this.profiles.get(target) ?? {}];
      }
      if (target !== userId) return forbidden("Cannot set another user's profile");
      this.profiles.set(userId, { ...this.profiles.get(userId), ...body });
      return [200, {}];
    }
    if (request.method === "GET" && parts[1] === "directory" && parts[2] === "room") {
      const alias = parts[3] as string;
      const roomId = this.aliases.get(alias);
      if (!roomId) return [404, { errcode: "M_NOT_FOUND", error: `Room alias ${alias} not found` }];
      return [200, { room_id: roomId, servers: [this.serverName] }];
    }
    if (parts[1] === "directory") return [200, {}];
    if (parts[1] !== "rooms")
      return [404, { errcode: "M_UNRECOGNIZED", error: "Unrecognized request" }];

    const roomId = parts[2] as string;
    const members = this.rooms.get(roomId);
    if (!members?.has(userId)) return forbidden(`User ${userId} not in room ${roomId}`);
    switch (parts[3]) {
      case "joined_members": {
        const joined: Record<string, Record<string, unknown>> = {};
        for (const member of members) {
          const content = this.state.get(`${roomId}\nm.room.member\n${member}`)?.content ?? {};
          joined[member] = {
            ...(typeof content.displayname === "string" && { display_name: content.displayname }),
            ...(typeof content.avatar_url === "string" && { avatar_url: content.avatar_url }),
          };
        }
        return [200, { joined }];
      }
      case "members": {
        const invited = [...(this.invites.get(roomId) ?? [])].filter((id) => !members.has(id));
        const memberEvent = (member: string, membership: string) => ({
          type: "m.room.member",
          room_id: roomId,
          state_key: member,
          sender: member,
          content: { membership },
        });
        return [
          200,
          {
            chunk: [
              ...[...members].map((member) => memberEvent(member, "join")),
              ...invited.map((member) => memberEvent(member, "invite")),
            ],
          },
        ];
      }
      case "event": {
        const event = this.sent.find((e) => e.roomId === roomId && e.eventId === parts[4]);
        if (!event) return [404, { errcode: "M_NOT_FOUND", error: "Event not found." }];
        return [
          200,
          {
            event_id: event.eventId,
            room_id: roomId,
            type: event.type,
            sender: event.sender,
            origin_server_ts: 0,
            content: event.content,
          },
        ];
      }
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
          const creators = this.infinitelyPowerful(roomId);
          if (
            parts[4] === "m.room.power_levels" &&
            Object.keys((body.users ?? {}) as object).some((user) => creators.includes(user))
          ) {
            return forbidden("Creators cannot be in the power levels' users");
          }
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

/** The event someone sent, as the homeserver pushes it. */
export function pushedEvent(homeserver: ScriptedHomeserver, eventId: string): ClientEvent {
  const sent = homeserver.sent.find((event) => event.eventId === eventId);
  if (!sent) throw new Error(`no event ${eventId}`);
  return {
    event_id: sent.eventId,
    room_id: sent.roomId,
    type: sent.type,
    sender: sent.sender,
    origin_server_ts: Date.now(),
    content: sent.content,
  };
}
