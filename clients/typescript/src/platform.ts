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

/**
 * One account on one platform server: signs in, keeps the session token
 * fresh (refreshing it a minute before it expires), and asks where to play.
 */
export class Platform {
  private signedIn: SignedIn | null = null;

  /** `base`: the platform's address, e.g. `http://127.0.0.1:8080`. */
  constructor(readonly base: string) {}

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
    if (this.signedIn) await this.post("/v1/sessions/logout", { refresh_token: this.signedIn.refresh_token });
    this.signedIn = null;
  }

  /** A session token good for at least another minute. */
  async sessionToken(): Promise<string> {
    const account = this.need();
    if (account.expires_at - Date.now() / 1000 > 60) return account.session_token;
    return (await this.refresh()).session_token;
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
    this.signedIn = { ...signedIn, device_secret: signedIn.device_secret ?? this.signedIn?.device_secret };
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
    return (text ? JSON.parse(text) : null) as T;
  }
}
