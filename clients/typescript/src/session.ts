// Playing one character: joins its zone through the platform, and stays in
// game across what happens to connections and servers, as the play page does.
import { create } from "@bufbuild/protobuf";
import {
  AttackSchema,
  JoinSchema,
  LeaveSchema,
  MoveInputSchema,
  NoticeKind,
  PickupSchema,
  PingSchema,
  type CommandRejected,
  type Error as ServerError,
  type Notice,
  type Pong,
  type StateUpdate,
  type Welcome,
} from "./gen/respawn_pb.js";
import { Platform, PlatformError, type PlayGrant } from "./platform.js";
import { CloseCode, PROTOCOL_VERSION, decodeServer, encodeClient, type ClientBody } from "./protocol.js";

export type SessionStatus =
  /** Asking the platform where to play, or opening the connection. */
  | "connecting"
  /** Joined: updates arrive. */
  | "playing"
  /** The connection was lost; trying again after a wait that grows. */
  | "reconnecting"
  /** For good: kicked, banned, or `close()`d. */
  | "ended";

/** What a session tells its listeners. */
export interface SessionEvents {
  welcome: Welcome;
  update: StateUpdate;
  notice: Notice;
  pong: Pong;
  rejected: CommandRejected;
  error: ServerError;
  status: { status: SessionStatus; reason: string };
  /** The zone moved to another server (a live hand-off) and the session followed it. */
  migrated: { address: string };
  /** The character walked through an exit into another zone and the session joined it there. */
  travelled: { from: string; to: string };
}

/** Where resume tokens are kept, per zone (in memory by default; a page may keep them in `sessionStorage`). */
export interface ResumeTokens {
  get(zone: string): string | undefined;
  set(zone: string, token: string): void;
  delete(zone: string): void;
}

export interface SessionOptions {
  /** Reconnect waits: the first, doubled after each failure up to the longest. */
  firstRetryMs?: number;
  longestRetryMs?: number;
  /** A server silent this long is taken as gone: the session asks where the zone runs now. */
  silenceMs?: number;
  /** How long a connection may take to open. */
  connectMs?: number;
  /** A server taken as gone is not joined again for this long (the platform may list it a few seconds more). */
  shunMs?: number;
  resumeTokens?: ResumeTokens;
}

/** While the zone is between servers (not in the lobby, or only at a shunned address), ask again this often. */
const MOVING_RETRY_MS = 200;

/** A grant's join is reused for reconnects this long (its character ticket lives a minute). */
const GRANT_REUSE_MS = 45_000;

type Listener<K extends keyof SessionEvents> = (event: SessionEvents[K]) => void;

/**
 * A character in game. `start()` joins `zone`; from then on the session
 * reconnects with backoff (the same character back through its resume
 * token), follows a zone that moves to another server, joins the next zone
 * when the character walks through an exit, and asks the platform again when
 * a server falls silent. Commands sent while not joined are dropped.
 */
export class GameSession {
  private ws: WebSocket | null = null;
  private grant: (PlayGrant & { grantedAt: number }) | null = null;
  private readonly resumeTokens: ResumeTokens;
  private shunned: { address: string; at: number } | null = null;
  private readonly listeners = new Map<keyof SessionEvents, Set<Listener<never>>>();
  private retryMs: number;
  private characterWaitMs = 100;
  private migrateTo = "";
  private travelTo = "";
  private heardAt = 0;
  private seq = 0;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private current: SessionStatus = "connecting";
  private readonly options: Required<Omit<SessionOptions, "resumeTokens">>;
  /** The last Welcome: entity id, world, exits. */
  welcome: Welcome | null = null;
  /** Reconnects after a lost connection, zone moves followed, exits walked through, servers that fell silent. */
  readonly counts = { reconnects: 0, migrations: 0, travels: 0, losses: 0 };

  constructor(
    readonly platform: Platform,
    public zone: string,
    options: SessionOptions = {},
  ) {
    const { resumeTokens, ...timing } = options;
    this.options = { firstRetryMs: 500, longestRetryMs: 5_000, silenceMs: 3_000, connectMs: 5_000, shunMs: 5_000, ...timing };
    this.resumeTokens = resumeTokens ?? new Map<string, string>();
    this.retryMs = this.options.firstRetryMs;
  }

  get status(): SessionStatus {
    return this.current;
  }

  /** The zone server's address this session joins (empty before the first grant). */
  get address(): string {
    return this.grant?.address ?? "";
  }

  /** Listens for `kind`; the returned function stops listening. */
  on<K extends keyof SessionEvents>(kind: K, listener: Listener<K>): () => void {
    const set = this.listeners.get(kind) ?? new Set();
    set.add(listener as Listener<never>);
    this.listeners.set(kind, set);
    return () => set.delete(listener as Listener<never>);
  }

  /** Resolves with the first Welcome (or rejects when the session ends before one). */
  start(): Promise<Welcome> {
    const joined = new Promise<Welcome>((resolve, reject) => {
      const stopWelcome = this.on("welcome", (w) => {
        stopWelcome();
        stopStatus();
        resolve(w);
      });
      const stopStatus = this.on("status", ({ status, reason }) => {
        if (status !== "ended") return;
        stopWelcome();
        stopStatus();
        reject(new Error(`the session ended before joining: ${reason}`));
      });
    });
    this.watchdog = setInterval(() => {
      if (this.ws?.readyState === WebSocket.OPEN && Date.now() - this.heardAt > this.options.silenceMs) {
        this.lost("the server fell silent");
      }
    }, 250);
    void this.connect();
    return joined;
  }

  /** Velocity in centimetres per tick; the server clamps it. */
  move(vx: number, vy: number): void {
    this.send({ case: "move", value: create(MoveInputSchema, { seq: ++this.seq, vx, vy }) });
  }

  attack(target: number): void {
    this.send({ case: "attack", value: create(AttackSchema, { seq: ++this.seq, target }) });
  }

  pickup(item: number): void {
    this.send({ case: "pickup", value: create(PickupSchema, { seq: ++this.seq, item }) });
  }

  /** Its `clientTime` comes back in a `pong` event. */
  ping(clientTime: bigint = BigInt(Date.now())): void {
    this.send({ case: "ping", value: create(PingSchema, { clientTime }) });
  }

  /**
   * Drops the connection and joins again (after a network change, say):
   * the same character comes back through its resume token.
   */
  reconnect(): void {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    ws.onclose = null;
    ws.onmessage = null;
    ws.close(CloseCode.Normal);
    this.retry("reconnecting as asked");
  }

  /** Leaves this zone and joins `zone` (a new character stay there). */
  switchZone(zone: string): void {
    if (zone === this.zone) return;
    this.send({ case: "leave", value: create(LeaveSchema) });
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      ws.close(CloseCode.Normal);
    }
    this.zone = zone;
    this.grant = null;
    void this.connect();
  }

  /** Leaves the zone and ends the session. */
  close(): void {
    this.send({ case: "leave", value: create(LeaveSchema) });
    this.end("closed by the client");
  }

  private send(body: ClientBody): void {
    if (this.ws?.readyState === WebSocket.OPEN && this.welcome) this.ws.send(encodeClient(body));
  }

  private emit<K extends keyof SessionEvents>(kind: K, event: SessionEvents[K]): void {
    for (const listener of this.listeners.get(kind) ?? []) (listener as Listener<K>)(event);
  }

  private setStatus(status: SessionStatus, reason = ""): void {
    this.current = status;
    this.emit("status", { status, reason });
  }

  private end(reason: string): void {
    if (this.current === "ended") return;
    if (this.watchdog) clearInterval(this.watchdog);
    const ws = this.ws;
    this.ws = null;
    ws?.close(CloseCode.Normal);
    this.setStatus("ended", reason);
  }

  private later(ms: number): void {
    setTimeout(() => void this.connect(), ms);
  }

  private retry(reason: string): void {
    if (this.current === "ended") return;
    this.setStatus("reconnecting", reason);
    this.counts.reconnects++;
    this.later(this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, this.options.longestRetryMs);
  }

  private async connect(): Promise<void> {
    if (this.current === "ended") return;
    if (this.current !== "reconnecting") this.setStatus("connecting");
    let grant = this.grant;
    if (!grant || grant.zone !== this.zone || Date.now() - grant.grantedAt > GRANT_REUSE_MS) {
      try {
        // The zone this session played in is between servers (a failover): wait for it, not for another zone.
        if (this.welcome && !(await this.platform.lobby()).includes(this.zone)) {
          this.setStatus("reconnecting", "the zone is moving to another server");
          return this.later(MOVING_RETRY_MS);
        }
        const granted = await this.platform.play(this.zone);
        const shunned = this.shunned;
        if (shunned && Date.now() - shunned.at < this.options.shunMs && granted.address === shunned.address) {
          this.setStatus("reconnecting", "the zone is moving to another server");
          return this.later(MOVING_RETRY_MS);
        }
        grant = { ...granted, grantedAt: Date.now() };
        this.grant = grant;
        this.characterWaitMs = 100;
      } catch (e) {
        // 409: the character is still leaving its last zone (being saved): ask again shortly.
        if (e instanceof PlatformError && e.status === 409) {
          this.characterWaitMs = Math.min(this.characterWaitMs * 1.5, 1_000);
          return this.later(this.characterWaitMs);
        }
        return this.retry(`could not join: ${(e as Error).message}`);
      }
    }
    const ws = new WebSocket(grant.address);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    setTimeout(() => {
      if (this.ws === ws && ws.readyState === WebSocket.CONNECTING) this.lost("no answer from the server");
    }, this.options.connectMs);
    ws.onopen = () => {
      this.heardAt = Date.now();
      const join = create(JoinSchema, {
        protocolVersion: PROTOCOL_VERSION,
        token: grant.token,
        zone: this.zone,
        resumeToken: this.resumeTokens.get(this.zone) ?? "",
        characterTicket: grant.character_ticket,
      });
      ws.send(encodeClient({ case: "join", value: join }));
    };
    ws.onmessage = (event) => {
      this.heardAt = Date.now();
      try {
        this.received(decodeServer(new Uint8Array(event.data as ArrayBuffer)));
      } catch (e) {
        ws.close();
        this.retry(`protocol error: ${(e as Error).message}`);
      }
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.closed(event.code, event.reason);
    };
  }

  private received(body: ReturnType<typeof decodeServer>): void {
    switch (body.case) {
      case "welcome":
        this.welcome = body.value;
        if (body.value.resumeToken) this.resumeTokens.set(body.value.zone, body.value.resumeToken);
        this.retryMs = this.options.firstRetryMs;
        this.setStatus("playing");
        this.emit("welcome", body.value);
        break;
      case "update":
        this.emit("update", body.value);
        break;
      case "notice":
        if (body.value.kind === NoticeKind.MIGRATE) this.migrateTo = body.value.migrateTo;
        if (body.value.kind === NoticeKind.TRAVEL) this.travelTo = body.value.travelTo;
        this.emit("notice", body.value);
        break;
      case "pong":
        this.emit("pong", body.value);
        break;
      case "rejected":
        this.emit("rejected", body.value);
        break;
      case "error":
        this.emit("error", body.value);
        break;
    }
  }

  private closed(code: number, reason: string): void {
    const why = `closed (${code}${reason ? `: ${reason}` : ""})`;
    if (code === CloseCode.Kicked || code === CloseCode.Banned) return this.end(why);
    if (code === CloseCode.InvalidToken) {
      // A refused token: forget the resume token and sign in afresh.
      this.resumeTokens.delete(this.zone);
      this.platform.expireSession();
    }
    // Refused, draining or gone: join again to be routed anew.
    const rejoin = [CloseCode.InvalidToken, CloseCode.Draining, CloseCode.GoingAway, CloseCode.CharacterUnavailable];
    if (rejoin.includes(code)) this.grant = null;
    if (code === CloseCode.Travelled && this.travelTo) {
      const from = this.zone;
      this.resumeTokens.delete(from);
      this.zone = this.travelTo;
      this.travelTo = "";
      this.grant = null;
      this.counts.travels++;
      this.emit("travelled", { from, to: this.zone });
      return void this.connect();
    }
    if (code === CloseCode.Migrated && this.migrateTo && this.grant) {
      this.grant.address = this.migrateTo;
      this.migrateTo = "";
      this.counts.migrations++;
      this.emit("migrated", { address: this.grant.address });
      return void this.connect();
    }
    this.retry(why);
  }

  /** Leaves a server that is gone without waiting for its close (which may never come). */
  private lost(why: string): void {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    this.shunned = { address: this.grant?.address ?? "", at: Date.now() };
    this.grant = null;
    this.counts.losses++;
    ws.onclose = null;
    ws.onmessage = null;
    ws.close();
    // Not a refusal: ask where the zone runs now, at once.
    this.setStatus("reconnecting", why);
    void this.connect();
  }
}
