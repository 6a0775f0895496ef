// Against a live platform and zone server: `respawn up` (the binary in
// $RESPAWN_BIN, else this repository's target/debug/respawn) with two
// small zones joined by exits, and no bots.
import { after, before, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

import { GameSession, Platform, PlatformError, World, type SessionEvents } from "../src/index.js";

const ZONES = `
[[zones]]
id = 1
name = "meadow"
seed = 1
width = 3000
height = 3000
npc_count = 5
[[zones.exits]]
x = 2800
y = 0
w = 200
h = 3000
to = "caverns"
arrival_x = 500
arrival_y = 1500

[[zones]]
id = 2
name = "caverns"
seed = 2
width = 3000
height = 3000
npc_count = 5
[[zones.exits]]
x = 0
y = 0
w = 200
h = 3000
to = "meadow"
arrival_x = 2500
arrival_y = 1500
`;

let up: ChildProcess;
let dir: string;
let platformUrl = "";
let operatorToken = "";

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "respawn-sdk-"));
  writeFileSync(join(dir, "zones.toml"), ZONES);
  const bin = process.env.RESPAWN_BIN ?? new URL("../../../../target/debug/respawn", import.meta.url).pathname;
  up = spawn(bin, ["up", "--listen", "127.0.0.1:0", "--zone-listen", "127.0.0.1:0", "--bots", "0",
    "--data-dir", join(dir, "data"), "--zone-config", join(dir, "zones.toml")], { stdio: ["ignore", "pipe", "ignore"] });
  for await (const line of createInterface({ input: up.stdout! })) {
    const play = line.match(/^\s*play:\s+(\S+)/);
    if (play) platformUrl = play[1];
    const dashboard = line.match(/operator token: ([0-9a-f]+)/);
    if (dashboard) operatorToken = dashboard[1];
    if (line.startsWith("Ctrl-C")) break;
  }
  assert.ok(platformUrl && operatorToken, "respawn up printed its addresses");
});

// SIGTERM drains the zone server, which writes its state as it stops: the
// data directory goes once the process has exited.
after(async () => {
  if (up && up.exitCode === null && up.signalCode === null) {
    const exited = once(up, "exit");
    up.kill("SIGTERM");
    const stopped = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 30_000))]);
    if (!stopped) up.kill("SIGKILL");
  }
  rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
});

/** The next `kind` event the session sends, within `ms`. */
function next<K extends keyof SessionEvents>(session: GameSession, kind: K, ms = 10_000, pass = (_: SessionEvents[K]) => true) {
  return new Promise<SessionEvents[K]>((resolve, reject) => {
    const timer = setTimeout(() => { stop(); reject(new Error(`no ${kind} event within ${ms} ms`)); }, ms);
    const stop = session.on(kind, (event) => {
      if (!pass(event)) return;
      clearTimeout(timer);
      stop();
      resolve(event);
    });
  });
}

test("a guest signs up, refreshes, and signs in again with its device secret", async () => {
  const platform = new Platform(platformUrl);
  const guest = await platform.guest();
  assert.ok(guest.device_secret && guest.session_token);
  const refreshed = await platform.refresh();
  assert.equal(refreshed.account_id, guest.account_id);
  assert.notEqual(refreshed.refresh_token, guest.refresh_token, "a refresh token is used once");
  const again = new Platform(platformUrl);
  assert.equal((await again.signIn({ deviceSecret: guest.device_secret! })).account_id, guest.account_id);
  await assert.rejects(again.signIn({ username: "nobody-here", password: "wrong password" }),
    (e: unknown) => e instanceof PlatformError && e.status === 401);
  assert.deepEqual((await platform.lobby()).sort(), ["caverns", "meadow"]);

  // Kept with a password: the same account signs in with it, and a restored refresh token signs in too.
  const username = `sdk${guest.account_id}`;
  await platform.keepWithPassword(username, "a good password");
  const withPassword = new Platform(platformUrl);
  assert.equal((await withPassword.signIn({ username, password: "a good password" })).account_id, guest.account_id);
  const restored = new Platform(platformUrl);
  restored.restore({ refresh_token: withPassword.account!.refresh_token });
  assert.ok(await restored.sessionToken());
  assert.equal(restored.account!.account_id, guest.account_id);
  await restored.signOut();
  await assert.rejects(new Platform(platformUrl).sessionToken(), (e: unknown) => e instanceof PlatformError && e.status === 401);
});

/** A new guest's session in meadow (not started), closed after the test, with the world its updates build. */
async function guestInMeadow(t: TestContext): Promise<{ session: GameSession; world: World }> {
  const platform = new Platform(platformUrl);
  await platform.guest();
  const session = new GameSession(platform, "meadow");
  t.after(() => session.close());
  const world = new World();
  session.on("welcome", (w) => world.reset(w));
  session.on("update", (u) => world.apply(u));
  return { session, world };
}

test("a session joins, sees the world, moves, and comes back as the same character after a reconnect", async (t) => {
  const { session, world } = await guestInMeadow(t);
  const welcome = await session.start();
  assert.equal(welcome.zone, "meadow");
  assert.equal(session.status, "playing");
  await next(session, "update", 5_000, () => world.entities.has(world.you));
  const start = world.entities.get(world.you)!.x;
  session.move(30, 0);
  await next(session, "update", 5_000, () => world.entities.get(world.you)!.x >= start + 300);
  session.move(0, 0);

  const pong = next(session, "pong");
  session.ping(42n);
  assert.equal((await pong).clientTime, 42n);

  const back = next(session, "welcome");
  session.reconnect();
  const rejoined = await back;
  assert.ok(rejoined.resumed, "the resume token brought the same character back");
  assert.equal(rejoined.entityId, welcome.entityId);
  assert.equal(session.counts.reconnects, 1);
  session.close();
  assert.equal(session.status, "ended");
});

test("walking through an exit joins the zone it leads to", async (t) => {
  const { session, world } = await guestInMeadow(t);
  session.on("rejected", (r) => assert.fail(`a move was refused: ${r.reason}`));
  const welcome = await session.start();
  const exit = welcome.exits.find((x) => x.to === "caverns");
  assert.ok(exit?.area, "meadow has an exit to caverns");
  const travelled = next(session, "travelled", 30_000);
  const arrived = next(session, "welcome", 30_000, (w) => w.zone === "caverns");
  // Toward the exit's middle, at the zone's speed limit.
  const steer = session.on("update", () => {
    const me = world.entities.get(world.you);
    if (!me) return;
    const dx = exit.area!.x + exit.area!.w / 2 - me.x, dy = exit.area!.y + exit.area!.h / 2 - me.y;
    // Just under the zone's speed limit (30 cm a tick): faster is refused as cheating.
    const d = Math.hypot(dx, dy) || 1;
    session.move(Math.trunc((29 * dx) / d), Math.trunc((29 * dy) / d));
  });
  assert.deepEqual(await travelled, { from: "meadow", to: "caverns" });
  steer();
  session.move(0, 0);
  assert.equal((await arrived).zone, "caverns");
  assert.equal(session.zone, "caverns");
  assert.equal(session.counts.travels, 1);
  session.close();
});

test("a kicked session ends and says why", async (t) => {
  const platform = new Platform(platformUrl);
  const guest = await platform.guest();
  const session = new GameSession(platform, "meadow");
  t.after(() => session.close());
  await session.start();
  const ended = next(session, "status", 10_000, (s) => s.status === "ended");
  const kick = await fetch(new URL(`/v1/players/${encodeURIComponent(guest.character)}/kick`, platformUrl), {
    method: "POST",
    headers: { Authorization: `Bearer ${operatorToken}`, "Content-Type": "application/json" },
    body: JSON.stringify({ reason: "sdk test" }),
  });
  assert.equal(kick.status, 200, await kick.text());
  assert.match((await ended).reason, /4006.*sdk test/);
});
