// The play page's script (crates/respawn/web/play.html), built on the SDK:
// `npm run bundle` makes crates/respawn/web/play.js, which the binary serves.
import {
  EntityKind,
  GameSession,
  Interpolator,
  NoticeKind,
  Platform,
  PlatformError,
  World,
  type EntityState,
  type SignedIn,
  type Welcome,
} from "../src/index.js";

const ITEMS: Record<number, [string, string]> = { 1: ["gold", "#f5c542"], 2: ["potion", "#e0557a"], 3: ["gem", "#4fd1e8"], 4: ["scroll", "#d9c9a0"] };
const NOTICE: Record<number, string> = { 1: "kick", 2: "announcement", 3: "shutdown", 4: "migrate", 5: "travel" };
const params = new URLSearchParams(location.search);
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const canvas = $<HTMLCanvasElement>("view"), ctx = canvas.getContext("2d")!;
const logBox = $("log"), hud = $("hud"), zoneSelect = $<HTMLSelectElement>("zone");

function log(msg: string): void {
  const d = document.createElement("div");
  d.textContent = msg;
  logBox.appendChild(d);
  while (logBox.children.length > 6) logBox.firstChild!.remove();
  setTimeout(() => d.remove(), 8000);
}
function banner(msg: string): void {
  $("banner").style.display = msg ? "block" : "none";
  $("bannertext").textContent = msg;
}

// ---- The account: a guest made on first visit, kept in localStorage, so a
// reload (or another day) signs in to the same character. The session token
// lives in memory only; the refresh token and a guest's device secret are
// what the page keeps.
const ACCOUNT_KEY = "respawn.account";
interface Kept { account_id: number; character: string; username?: string | null; refresh_token: string; device_secret?: string | null }
function stored(): Kept | null {
  try { return JSON.parse(localStorage.getItem(ACCOUNT_KEY) ?? "null"); } catch { return null; }
}
function keep(signedIn: SignedIn): void {
  const old = stored();
  const account: Kept = { account_id: signedIn.account_id, character: signedIn.character, username: signedIn.username ?? old?.username,
    refresh_token: signedIn.refresh_token, device_secret: signedIn.device_secret ?? old?.device_secret };
  localStorage.setItem(ACCOUNT_KEY, JSON.stringify(account));
  state.name = signedIn.character;
  showAccount(false);
}

// Resume tokens outlive a reload of the tab, not the tab.
const resumeTokens = {
  get: (zone: string) => sessionStorage.getItem("respawn.resume." + zone) ?? undefined,
  set: (zone: string, token: string) => sessionStorage.setItem("respawn.resume." + zone, token),
  delete: (zone: string) => sessionStorage.removeItem("respawn.resume." + zone),
};

const platform = new Platform(location.origin, keep);
const state = {
  session: null as GameSession | null,
  world: new World(),
  lerp: new Interpolator(100),
  welcome: null as Welcome | null,
  zone: params.get("zone") || localStorage.getItem("respawn.zone") || "",
  name: stored()?.character || "",
  keys: new Set<string>(),
  velocity: [0, 0],
  ended: "",
  rtt: null as number | null,
  commandsSent: 0,
  updates: 0,
};

function showAccount(needSignIn: boolean): void {
  const a = stored(), box = $("account");
  box.replaceChildren();
  const line = document.createElement("div");
  line.textContent = a ? `${a.character}${a.username ? " (" + a.username + ")" : " (guest)"}` : "not signed in";
  box.appendChild(line);
  const links = document.createElement("div");
  const link = (label: string, action: () => void) => {
    const l = document.createElement("a");
    l.textContent = label;
    l.onclick = action;
    if (links.children.length) links.append(" · ");
    links.append(l);
  };
  if (a && !a.username) link("keep with a password", () => { $("signup").hidden = false; });
  link("sign in", () => { $("signin").hidden = false; });
  if (a) link("sign out", () => void signOut());
  box.appendChild(links);
  $("signin").hidden = !needSignIn;
}
$("signup").onsubmit = async (ev) => {
  ev.preventDefault();
  const username = $<HTMLInputElement>("su-user").value, password = $<HTMLInputElement>("su-pass").value;
  try {
    await platform.keepWithPassword(username, password);
    const a = stored()!;
    a.username = username.toLowerCase();
    localStorage.setItem(ACCOUNT_KEY, JSON.stringify(a));
    $("signup").hidden = true;
    showAccount(false);
    log(`${state.name} can now sign in as ${a.username}`);
  } catch (e) { log("could not keep the character: " + (e as Error).message); }
};
$("signin").onsubmit = async (ev) => {
  ev.preventDefault();
  const username = $<HTMLInputElement>("si-user").value, password = $<HTMLInputElement>("si-pass").value;
  try {
    localStorage.removeItem(ACCOUNT_KEY);
    await platform.signIn({ username, password });
    $("signin").hidden = true;
    // Play as the account just signed in to: a new session, no resume of the old character.
    sessionStorage.clear();
    play();
  } catch (e) { log("sign-in failed: " + (e as Error).message); }
};
async function signOut(): Promise<void> {
  state.session?.close();
  state.session = null;
  state.welcome = null;
  localStorage.removeItem(ACCOUNT_KEY);
  await platform.signOut().catch(() => {});
  showAccount(true);
}

// Signed in from what this browser kept, else a new guest; one whose
// username lost its sign-in is asked for its password.
async function signIn(): Promise<boolean> {
  const kept = stored();
  platform.restore(kept ?? {});
  try {
    await platform.sessionToken();
    return true;
  } catch (e) {
    if (kept?.username) {
      showAccount(true);
      log(`sign in again to play as ${kept.username}`);
      return false;
    }
    if (kept && !(e instanceof PlatformError)) throw e;
    await platform.guest();
    log(`welcome, ${state.name}: a guest character kept in this browser`);
    return true;
  }
}

async function play(): Promise<void> {
  state.session?.close();
  state.ended = "";
  if (!(await signIn().catch((e) => { log("could not sign in: " + e.message); return false; }))) return;
  const zones = await platform.lobby().catch(() => [] as string[]);
  if (!zones.includes(state.zone)) state.zone = zones[0] ?? state.zone;
  showZones(zones);
  const session = new GameSession(platform, state.zone, { silenceMs: 1000, connectMs: 2000, resumeTokens });
  state.session = session;
  // Each reason once in the log, however often the session tries again for it.
  let told = "";
  session.on("status", ({ status, reason }) => {
    if (status === "connecting") banner(state.welcome ? "reconnecting…" : "connecting…");
    if (status === "playing") told = "";
    if (status === "reconnecting") {
      banner(reason.includes("moving") ? "your zone is moving to another server…" : "reconnecting…");
      if (reason !== told) log(reason);
      told = reason;
    }
    if (status === "ended" && session === state.session) {
      state.ended = reason;
      banner(reason.startsWith("closed (4006") ? "kicked: " + reason : reason.startsWith("closed (4012") ? "banned: " + reason : "");
    }
  });
  session.on("welcome", (w) => {
    state.welcome = w;
    state.world.reset(w);
    state.lerp = new Interpolator(2 * (1000 / w.tickRateHz));
    state.velocity = [0, 0];
    state.zone = w.zone;
    banner("");
    sendVelocity(true);
    log(w.resumed ? `back in ${w.zone}: your character was kept` : `joined ${w.zone} as ${state.name} (server ${w.serverVersion})`);
  });
  session.on("update", (u) => {
    const before = state.world.stats;
    state.world.apply(u);
    state.lerp.record(state.world, performance.now());
    state.updates++;
    const you = u.you;
    if (you && before) {
      if (you.level > before.level) log(`level up! now level ${you.level}`);
      if (you.dead && !before.dead) log("you died; respawning soon");
      if (you.gold > before.gold) log(`+${you.gold - before.gold} gold`);
    }
  });
  session.on("pong", (p) => { state.rtt = performance.now() - Number(p.clientTime); });
  session.on("notice", (n) => {
    log(`${NOTICE[n.kind] || "notice"}: ${n.text}`);
    if (n.kind === NoticeKind.SHUTDOWN) banner("server restarting: " + n.text);
  });
  session.on("migrated", () => log("zone moved to another server; following it"));
  session.on("travelled", ({ to }) => {
    localStorage.setItem("respawn.zone", to);
    if (params.has("zone")) { params.set("zone", to); history.replaceState(null, "", "?" + params); }
  });
  session.on("rejected", (r) => { if (r.reason !== "cooldown") log("refused: " + r.reason.replace(/_/g, " ")); });
  session.on("error", (e) => log("error: " + e.message));
  banner("connecting…");
  await session.start().catch((e) => log((e as Error).message));
}

// Zone names come from the registry: text, never markup.
function showZones(zones: string[]): void {
  zoneSelect.replaceChildren(...zones.map((z) => { const o = new Option(z, z); o.selected = z === state.zone; return o; }));
}
zoneSelect.addEventListener("change", () => {
  state.zone = zoneSelect.value;
  localStorage.setItem("respawn.zone", state.zone);
  // A reload stays in the zone chosen (the address may name another).
  if (params.has("zone")) { params.set("zone", state.zone); history.replaceState(null, "", "?" + params); }
  state.session?.switchZone(state.zone);
});

// Commands, counted for the end-to-end test.
function command(send: (s: GameSession) => void): void {
  if (state.session?.status === "playing") { send(state.session); state.commandsSent++; }
}
// Velocity from held keys, sent only when it changes.
function sendVelocity(force: boolean): void {
  const w = state.welcome;
  if (!w) return;
  const k = state.keys;
  const dx = (k.has("d") || k.has("arrowright") ? 1 : 0) - (k.has("a") || k.has("arrowleft") ? 1 : 0);
  const dy = (k.has("s") || k.has("arrowdown") ? 1 : 0) - (k.has("w") || k.has("arrowup") ? 1 : 0);
  const len = Math.hypot(dx, dy);
  const v = len ? [Math.trunc((dx / len) * w.maxSpeed), Math.trunc((dy / len) * w.maxSpeed)] : [0, 0];
  if (!force && v[0] === state.velocity[0] && v[1] === state.velocity[1]) return;
  state.velocity = v;
  command((s) => s.move(v[0], v[1]));
}
const me = (): EntityState | undefined => (state.welcome ? state.world.entities.get(state.world.you) : undefined);
function nearest(kind: EntityKind, range: number, pred: (e: EntityState) => boolean = () => true): EntityState | null {
  const m = me();
  if (!m) return null;
  let best: EntityState | null = null, bestD = range * range;
  for (const e of state.world.entities.values()) {
    if (e.kind !== kind || e.id === m.id || !pred(e)) continue;
    const d = (e.x - m.x) ** 2 + (e.y - m.y) ** 2;
    if (d <= bestD) { best = e; bestD = d; }
  }
  return best;
}
const attack = (target: EntityState | null) => { if (target) command((s) => s.attack(target.id)); };
const pickup = (item: EntityState | null) => { if (item) command((s) => s.pickup(item.id)); };

addEventListener("keydown", (e) => {
  const k = e.key.toLowerCase(), w = state.welcome;
  if (k === " ") {
    const range = w?.attackRange ?? 0;
    attack(nearest(EntityKind.NPC, range, (n) => n.hp > 0) || nearest(EntityKind.PLAYER, range, (p) => p.hp > 0));
    e.preventDefault();
    return;
  }
  if (k === "e") { pickup(nearest(EntityKind.ITEM, w?.pickupRange ?? 0)); return; }
  state.keys.add(k);
  sendVelocity(false);
  if (k.startsWith("arrow")) e.preventDefault();
});
addEventListener("keyup", (e) => { state.keys.delete(e.key.toLowerCase()); sendVelocity(false); });
addEventListener("blur", () => { state.keys.clear(); sendVelocity(false); });
canvas.addEventListener("click", (ev) => {
  const m = me();
  if (!m) return;
  const { scale, ox, oy } = camera();
  const wx = (ev.clientX - ox) / scale, wy = (ev.clientY - oy) / scale;
  let best: EntityState | null = null, bestD = (30 / scale) ** 2;
  for (const e of state.world.entities.values()) {
    const d = (e.x - wx) ** 2 + (e.y - wy) ** 2;
    if (e.id !== m.id && d < bestD) { best = e; bestD = d; }
  }
  if (best) (best.kind === EntityKind.ITEM ? pickup : attack)(best);
});
setInterval(() => command((s) => s.ping(BigInt(Math.floor(performance.now())))), 1000);

// ---- Rendering, interpolated between the updates (two ticks behind) ----
function camera() {
  const positions = state.lerp.positions(performance.now());
  const m = me()!, at = positions.get(m.id) ?? m;
  const scale = (Math.min(canvas.width, canvas.height) * 0.45) / (state.welcome!.viewRadius || 2000);
  return { scale, ox: canvas.width / 2 - at.x * scale, oy: canvas.height / 2 - at.y * scale, positions };
}
function bar(x: number, y: number, w: number, frac: number, color: string): void {
  ctx.fillStyle = "#000a"; ctx.fillRect(x - w / 2, y, w, 4);
  ctx.fillStyle = color; ctx.fillRect(x - w / 2, y, w * Math.max(0, Math.min(1, frac)), 4);
}
function draw(): void {
  canvas.width = innerWidth; canvas.height = innerHeight;
  ctx.fillStyle = "#1a2027"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const m = me(), w = state.welcome;
  if (w && m) {
    const { scale, ox, oy, positions } = camera();
    const sx = (x: number) => ox + x * scale, sy = (y: number) => oy + y * scale;
    ctx.fillStyle = "#232b33"; ctx.fillRect(sx(0), sy(0), w.width * scale, w.height * scale);
    ctx.strokeStyle = "#2c3640"; ctx.lineWidth = 1;
    for (let g = 0; g <= w.width; g += 500) { ctx.beginPath(); ctx.moveTo(sx(g), sy(0)); ctx.lineTo(sx(g), sy(w.height)); ctx.stroke(); }
    for (let g = 0; g <= w.height; g += 500) { ctx.beginPath(); ctx.moveTo(sx(0), sy(g)); ctx.lineTo(sx(w.width), sy(g)); ctx.stroke(); }
    ctx.fillStyle = "#4a5560";
    for (const o of w.obstacles) ctx.fillRect(sx(o.x), sy(o.y), o.w * scale, o.h * scale);
    ctx.font = "12px sans-serif"; ctx.textAlign = "center";
    for (const x of w.exits) {
      const a = x.area!;
      ctx.fillStyle = "#6b4fd155"; ctx.fillRect(sx(a.x), sy(a.y), a.w * scale, a.h * scale);
      ctx.fillStyle = "#c9b8ff"; ctx.fillText("→ " + x.to, sx(a.x + a.w / 2), sy(a.y) - 4);
    }
    const r = Math.max(5, 50 * scale);
    const sorted = [...state.world.entities.values()].sort((a, b) => (a.kind === EntityKind.ITEM ? -1 : b.kind === EntityKind.ITEM ? 1 : 0));
    for (const e of sorted) {
      const at = positions.get(e.id) ?? e, px = sx(at.x), py = sy(at.y);
      if (e.kind === EntityKind.ITEM) {
        ctx.fillStyle = (ITEMS[e.item] || ["?", "#fff"])[1];
        ctx.beginPath(); ctx.arc(px, py, r * 0.5, 0, 7); ctx.fill();
        continue;
      }
      const dead = e.hp <= 0, mine = e.id === m.id;
      ctx.fillStyle = dead ? "#555" : e.kind === EntityKind.NPC ? "#d0453a" : mine ? "#4cd964" : "#4a90e2";
      ctx.beginPath(); ctx.arc(px, py, r, 0, 7); ctx.fill();
      if (!dead) bar(px, py - r - 8, r * 2.4, e.hp / (e.maxHp || 1), e.kind === EntityKind.NPC ? "#ff7b6b" : "#7cfc8a");
      if (e.kind === EntityKind.PLAYER) { ctx.fillStyle = "#ddd"; ctx.textAlign = "center"; ctx.fillText(`${e.name} (${e.level})`, px, py - r - 12); }
    }
    ctx.strokeStyle = "#ffffff18"; ctx.beginPath(); ctx.arc(canvas.width / 2, canvas.height / 2, w.attackRange * scale, 0, 7); ctx.stroke();
  }
  drawHud();
  requestAnimationFrame(draw);
}
// Built from nodes and text, never from markup: names come from the network.
function drawHud(): void {
  const y = state.world.stats, w = state.welcome;
  if (!w || !y) {
    hud.textContent = !stored() ? "signed out" : state.ended.startsWith("closed (4006") ? "kicked" : "connecting…";
    return;
  }
  const inv = y.inventory.map((s) => `${(ITEMS[s.item] || ["?"])[0]} ×${s.count}`).join(", ") || "empty";
  const line = (...parts: (string | Node)[]) => { const d = document.createElement("div"); d.append(...parts); return d; };
  const bold = (text: string) => { const b = document.createElement("b"); b.textContent = text; return b; };
  const hp = document.createElement("div"), fill = document.createElement("div");
  hp.className = "bar";
  fill.className = "fill";
  fill.style.width = `${Math.max(0, (100 * y.hp) / (y.maxHp || 1))}%`;
  hp.append(fill);
  hud.replaceChildren(
    line(bold(state.name), " in ", bold(w.zone)),
    line(`HP ${y.hp}/${y.maxHp}${y.dead ? " (dead)" : ""}`),
    hp,
    line(`Level ${y.level} · XP ${y.xp}/${y.nextLevelXp}`),
    line(`Gold ${y.gold}`),
    line(`Bag: ${inv}`),
    line(`RTT ${state.rtt == null ? "…" : state.rtt.toFixed(1) + " ms"} · ${state.world.entities.size} in view`),
  );
}
// Read by the end-to-end test.
(window as unknown as { respawn: unknown }).respawn = {
  joined: () => !!(state.welcome && me() && state.session?.status === "playing"),
  position: () => { const m = me(); return m ? { x: m.x, y: m.y } : null; },
  zone: () => state.welcome?.zone,
  commandsSent: () => state.commandsSent,
  updates: () => state.updates,
  resumed: () => !!state.welcome?.resumed,
  server: () => state.session?.address,
  character: () => state.name,
  gold: () => (state.world.stats ? Number(state.world.stats.gold) : undefined),
  // The nearest gold on the field, its distance, and the pickup range.
  nearestGold: () => {
    const m = me();
    if (!m) return null;
    let best: { dx: number; dy: number; d: number } | null = null;
    for (const e of state.world.entities.values()) {
      if (e.kind !== EntityKind.ITEM || e.item !== 1) continue;
      const d = Math.hypot(e.x - m.x, e.y - m.y);
      if (!best || d < best.d) best = { dx: e.x - m.x, dy: e.y - m.y, d };
    }
    return best && { ...best, range: state.welcome!.pickupRange };
  },
  migrations: () => state.session?.counts.migrations ?? 0,
  losses: () => state.session?.counts.losses ?? 0,
  travels: () => state.session?.counts.travels ?? 0,
  // The nearest exit: its zone and the way to its middle.
  nearestExit: () => {
    const m = me(), w = state.welcome;
    if (!m || !w) return null;
    let best: { to: string; dx: number; dy: number; d: number } | null = null;
    for (const x of w.exits) {
      const a = x.area!, dx = a.x + a.w / 2 - m.x, dy = a.y + a.h / 2 - m.y, d = Math.hypot(dx, dy);
      if (!best || d < best.d) best = { to: x.to, dx, dy, d };
    }
    return best;
  },
};
showAccount(false);
void play();
requestAnimationFrame(draw);
