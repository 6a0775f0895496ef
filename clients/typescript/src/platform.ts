// The platform server's player API: accounts, sign-in and where to play.

/** A signed-in account (`POST /v1/accounts/guest`, `/v1/sessions`, `/v1/sessions/refresh`). */
export interface SignedIn {
  account_id: number;
  character: string;
  username?: string | null;
  session_token: string;
  /** Unix seconds. */
  expires_at: number;
  refresh_token: string;
  refresh_expires_at: number;
  /** A guest's secret: the way back into the same account. */
  device_secret?: string | null;
}

/** Where to play a zone, with the character's ticket (`POST /v1/play`); good for a minute. */
export interface PlayGrant {
  token: string;
  player_id: number;
  name: string;
  zone: string;
  server: string;
  /** The zone server's WebSocket URL. */
  address: string;
  expires_at: number;
  character_ticket: string;
}

export interface Lobby {
  zones: { name: string }[];
}

/** An answer other than 2xx, with the server's reason. */
export class PlatformError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
  ) {
    super(`${status}: ${reason}`);
  }
}

/** How to sign in: a guest's device secret, or a username and password. */
export type Credentials = { deviceSecret: string } | { username: string; password: string };

/** What a client keeps between runs to sign in again without asking (never the session token). */
export interface KeptAccount {
  refresh_token?: string;
  device_secret?: string | null;
}

/**
 * One account on one platform server: signs in, keeps the session token
 * fresh (refreshing it a minute before it expires), and asks where to play.
 */
export class Platform {
  private signedIn: SignedIn | null = null;
  private kept: KeptAccount = {};

  /**
   * `base`: the platform's address, e.g. `http://127.0.0.1:8080`.
   * `onSignedIn`: told of every sign-in and refresh, to keep what `restore` takes.
   */
  constructor(
    readonly base: string,
    private readonly onSignedIn: (account: SignedIn) => void = () => {},
  ) {}

  /** Signs in again later from what an earlier run kept: its refresh token, else a guest's device secret. */
  restore(kept: KeptAccount): void {
    this.kept = kept;
  }

  get account(): SignedIn | null {
    return this.signedIn;
  }

  /** A new guest account; keep its `device_secret` to come back to it. */
  async guest(character?: string): Promise<SignedIn> {
    return this.keep(await this.post<SignedIn>("/v1/accounts/guest", character ? { character } : {}));
  }

  async signUp(username: string, password: string, character?: string): Promise<SignedIn> {
    return this.keep(await this.post<SignedIn>("/v1/accounts", { username, password, character }));
  }

  async signIn(credentials: Credentials): Promise<SignedIn> {
    const body =
      "deviceSecret" in credentials
        ? { device_secret: credentials.deviceSecret }
        : { username: credentials.username, password: credentials.password };
    return this.keep(await this.post<SignedIn>("/v1/sessions", body));
  }

  async refresh(): Promise<SignedIn> {
    const refresh_token = this.need().refresh_token;
    return this.keep(await this.post<SignedIn>("/v1/sessions/refresh", { refresh_token }));
  }

  async signOut(): Promise<void> {
    const refresh_token = this.signedIn?.refresh_token ?? this.kept.refresh_token;
    this.signedIn = null;
    this.kept = {};
    if (refresh_token) await this.post("/v1/sessions/logout", { refresh_token });
  }

  /**
   * A session token good for at least another minute: the one held, else a
   * refreshed one, else one from signing in with the device secret.
   */
  async sessionToken(): Promise<string> {
    const account = this.signedIn;
    if (account && account.expires_at - Date.now() / 1000 > 60) return account.session_token;
    const refresh_token = account?.refresh_token ?? this.kept.refresh_token;
    if (refresh_token) {
      try {
        return this.keep(await this.post<SignedIn>("/v1/sessions/refresh", { refresh_token })).session_token;
      } catch (e) {
        const deviceSecret = account?.device_secret ?? this.kept.device_secret;
        if (!deviceSecret || !(e instanceof PlatformError)) throw e;
      }
    }
    const deviceSecret = account?.device_secret ?? this.kept.device_secret;
    if (deviceSecret) return (await this.signIn({ deviceSecret })).session_token;
    throw new PlatformError(401, "not signed in: call guest(), signUp() or signIn() first");
  }

  /** Sets a guest's username and password, so it can sign in with them. */
  async keepWithPassword(username: string, password: string): Promise<void> {
    await this.call("PUT", "/v1/accounts/me/credentials", { username, password }, await this.sessionToken());
    if (this.signedIn) this.signedIn = { ...this.signedIn, username: username.toLowerCase() };
  }

  /** Makes the next `sessionToken()` refresh (a server refused the token). */
  expireSession(): void {
    if (this.signedIn) this.signedIn = { ...this.signedIn, expires_at: 0 };
  }

  /** Zones open to join. */
  async lobby(): Promise<string[]> {
    const lobby = await this.call<Lobby>("GET", "/v1/lobby");
    return lobby.zones.map((z) => z.name);
  }

  /** Where `zone` runs and the character's ticket. 409: the character is still being saved elsewhere. */
  async play(zone: string): Promise<PlayGrant> {
    return this.post<PlayGrant>("/v1/play", { zone }, await this.sessionToken());
  }

  private need(): SignedIn {
    if (!this.signedIn) throw new Error("not signed in: call guest(), signUp() or signIn() first");
    return this.signedIn;
  }

  private keep(signedIn: SignedIn): SignedIn {
    // A refresh does not repeat the device secret: keep the one we had.
    const device_secret = signedIn.device_secret ?? this.signedIn?.device_secret ?? this.kept.device_secret;
    this.signedIn = { ...signedIn, device_secret };
    this.kept = { refresh_token: signedIn.refresh_token, device_secret };
    this.onSignedIn(this.signedIn);
    return this.signedIn;
  }

  private post<T>(path: string, body: unknown, token?: string): Promise<T> {
    return this.call<T>("POST", path, body, token);
  }

  private async call<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const answer = await fetch(new URL(path, this.base), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await answer.text();
    if (!answer.ok) throw new PlatformError(answer.status, text.trim());
    // Some answers are a line of text (a password set, a sign-out): only JSON is parsed.
    const json = answer.headers.get("content-type")?.includes("json");
    return (json && text ? JSON.parse(text) : null) as T;
  }
}
