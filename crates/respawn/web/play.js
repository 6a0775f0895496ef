"use strict";
// ---- Minimal protobuf codec for respawn.v1 (crates/respawn-proto/proto/respawn.proto) ----
const PROTOCOL_VERSION = 2;
class Writer {
  constructor() { this.bytes = []; }
  varint(n) { n = Math.floor(n); while (n > 127) { this.bytes.push((n % 128) | 128); n = Math.floor(n / 128); } this.bytes.push(n); }
  key(field, wire) { this.varint(field * 8 + wire); }
  uint(field, n) { if (n) { this.key(field, 0); this.varint(n); } }
  sint(field, n) { if (n) { this.key(field, 0); this.varint(n >= 0 ? n * 2 : -n * 2 - 1); } }
  str(field, s) { const b = new TextEncoder().encode(s); this.key(field, 2); this.varint(b.length); this.bytes.push(...b); }
  msg(field, w) { this.key(field, 2); this.varint(w.bytes.length); this.bytes.push(...w.bytes); }
  done() { return new Uint8Array(this.bytes); }
}
// Reads all fields of a message: {field: [value, ...]} (numbers or Uint8Array).
function fields(buf) {
  const out = {}; let i = 0;
  const varint = () => { let n = 0, mul = 1, b; do { b = buf[i++]; n += (b & 127) * mul; mul *= 128; } while (b & 128); return n; };
  while (i < buf.length) {
    const key = varint(), f = Math.floor(key / 8), wire = key % 8; let v;
    if (wire === 0) v = varint();
    else if (wire === 2) { const len = varint(); v = buf.subarray(i, i + len); i += len; }
    else if (wire === 5) { v = buf[i] | buf[i+1] << 8 | buf[i+2] << 16 | buf[i+3] << 24; i += 4; }
    else if (wire === 1) { i += 8; continue; }
    else throw new Error("bad wire type " + wire);
    (out[f] = out[f] || []).push(v);
  }
  return out;
}
const one = (f, n, d = 0) => (f[n] ? f[n][f[n].length - 1] : d);
const zz = (n) => (n % 2 ? -(n + 1) / 2 : n / 2);
const i32 = (n) => (n > 2147483647 ? n - 18446744073709551616 : n);
const text = (b) => (b ? new TextDecoder().decode(b) : "");
function packed(f, n) {
  const out = [];
  for (const v of f[n] || []) {
    if (typeof v === "number") out.push(v);
    else { let i = 0; while (i < v.length) { let x = 0, mul = 1, b; do { b = v[i++]; x += (b & 127) * mul; mul *= 128; } while (b & 128); out.push(x); } }
  }
  return out;
}
// Protocol 2: ids as gaps from the one before, two steps (dx, dy) each.
function moves(gaps, steps) {
  if (steps.length !== gaps.length * 2) throw new Error(`moved_steps holds ${steps.length} numbers for ${gaps.length} ids`);
  let id = 0;
  return gaps.map((gap, i) => ({ id: (id += gap), dx: steps[2 * i], dy: steps[2 * i + 1] }));
}
function entity(b) {
  const f = fields(b);
  return { id: one(f, 1), kind: one(f, 2), x: zz(one(f, 3)), y: zz(one(f, 4)), hp: i32(one(f, 5)), max_hp: i32(one(f, 6)),
           level: one(f, 7), name: text(one(f, 8, null)), item: one(f, 9) };
}
function stats(b) {
  const f = fields(b);
  return { hp: i32(one(f, 1)), max_hp: i32(one(f, 2)), level: one(f, 3), xp: one(f, 4), gold: one(f, 5),
           inventory: (f[6] || []).map((s) => { const g = fields(s); return { item: one(g, 1), count: one(g, 2) }; }),
           dead: one(f, 7) === 1, respawn_tick: one(f, 8), next_level_xp: one(f, 9) };
}
function rect(bytes) { const g = fields(bytes); return { x: zz(one(g, 1)), y: zz(one(g, 2)), w: zz(one(g, 3)), h: zz(one(g, 4)) }; }
function decodeServer(buf) {
  const f = fields(buf);
  if (f[1]) { const w = fields(one(f, 1));
    return { type: "welcome", protocol_version: one(w, 1), zone: text(one(w, 2, null)), entity_id: one(w, 3), tick_rate_hz: one(w, 4),
      width: zz(one(w, 5)), height: zz(one(w, 6)), tick: one(w, 8), server_version: text(one(w, 9, null)),
      view_radius: one(w, 10), max_speed: one(w, 11), attack_range: one(w, 12), pickup_range: one(w, 13),
      resume_token: text(one(w, 14, null)), resumed: one(w, 15) === 1,
      obstacles: (w[7] || []).map(rect),
      exits: (w[18] || []).map((x) => { const g = fields(x); return { ...rect(one(g, 1)), to: text(one(g, 2, null)) }; }) }; }
  if (f[2]) { const u = fields(one(f, 2));
    return { type: "update", tick: one(u, 1), entered: (u[2] || []).map(entity), changed: (u[3] || []).map(entity),
      left: packed(u, 4), you: u[5] ? stats(one(u, 5)) : null, moves: moves(packed(u, 8), packed(u, 9).map(zz)) }; }
  if (f[3]) { const p = fields(one(f, 3)); return { type: "pong", client_time: one(p, 1), server_tick: one(p, 2) }; }
  if (f[4]) { const n = fields(one(f, 4)); return { type: "notice", kind: one(n, 1), text: text(one(n, 2, null)), migrate_to: text(one(n, 3, null)), deadline_ms: one(n, 4), travel_to: text(one(n, 5, null)) }; }
  if (f[5]) { const r = fields(one(f, 5)); return { type: "rejected", seq: one(r, 1), reason: text(one(r, 2, null)) }; }
  if (f[6]) { const e = fields(one(f, 6)); return { type: "error", code: one(e, 1), message: text(one(e, 2, null)) }; }
  return { type: "unknown" };
}
function clientMessage(field, build) { const inner = new Writer(); build(inner); const w = new Writer(); w.msg(field, inner); return w.done(); }

// ---- Game client ----
const KIND = { PLAYER: 1, NPC: 2, ITEM: 3 };
const ITEMS = { 1: ["gold", "#f5c542"], 2: ["potion", "#e0557a"], 3: ["gem", "#4fd1e8"], 4: ["scroll", "#d9c9a0"] };
const NOTICE = { 1: "kick", 2: "announcement", 3: "shutdown", 4: "migrate", 5: "travel" };
const params = new URLSearchParams(location.search);
const state = {
  ws: null, session: null, welcome: null, entities: new Map(), you: null, tick: 0, tickAt: 0, seq: 0, rtt: null,
  zone: params.get("zone") || localStorage.getItem("respawn.zone") || "", name: "", zones: [], velocity: [0, 0],
  keys: new Set(), kicked: false, retry: 500, commandsSent: 0, updates: 0, migrations: 0, travels: 0, travelTo: null,
  heardAt: 0, shunned: null, losses: 0,
};
// A server speaks many times a second (updates, pongs). Silent this long, it
// or the way to it is gone (a host that died sends nothing, not even a
// close): ask the platform where the zone runs now, and keep away from that
// address a while, the platform may list it a few seconds more.
const SILENCE_MS = 1000, CONNECT_MS = 2000, SHUN_MS = 5000, MOVING_RETRY_MS = 200;
const canvas = document.getElementById("view"), ctx = canvas.getContext("2d");
const logBox = document.getElementById("log"), hud = document.getElementById("hud"), zoneSelect = document.getElementById("zone");

function log(msg) {
  const d = document.createElement("div"); d.textContent = msg; logBox.appendChild(d);
  while (logBox.children.length > 6) logBox.removeChild(logBox.firstChild);
  setTimeout(() => d.remove(), 8000);
}
function banner(msg) {
  document.getElementById("banner").style.display = msg ? "block" : "none";
  document.getElementById("bannertext").textContent = msg || "";
}
// ---- The account: a guest made on first visit, kept in localStorage, so a
// reload (or another day) signs in to the same character. The session token
// lives in memory only; the refresh token and a guest's device secret are
// what the page keeps.
const ACCOUNT_KEY = "respawn.account";
function stored() { try { return JSON.parse(localStorage.getItem(ACCOUNT_KEY)) || null; } catch { return null; } }
function keep(signedIn) {
  const old = stored() || {};
  const account = { account_id: signedIn.account_id, character: signedIn.character, username: signedIn.username,
                    refresh_token: signedIn.refresh_token, device_secret: signedIn.device_secret || old.device_secret };
  localStorage.setItem(ACCOUNT_KEY, JSON.stringify(account));
  state.signedIn = signedIn; state.name = signedIn.character;
  showAccount();
}
async function post(path, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { method: path.endsWith("credentials") ? "PUT" : "POST", headers, body: JSON.stringify(body) });
  if (!r.ok) { const e = new Error(r.status + " " + (await r.text()).trim()); e.status = r.status; throw e; }
  return r.status === 204 ? null : r.headers.get("content-type")?.includes("json") ? r.json() : r.text();
}
// A session token valid for another minute: refreshed, else signed in again
// with the device secret, else a new guest when nothing is kept.
async function sessionToken() {
  const now = Date.now() / 1000;
  if (state.signedIn && state.signedIn.expires_at > now + 60) return state.signedIn.session_token;
  const kept = stored();
  if (kept?.refresh_token) {
    try { keep(await post("/v1/sessions/refresh", { refresh_token: kept.refresh_token })); return state.signedIn.session_token; }
    catch (e) { log("session expired: " + e.message); }
  }
  if (kept?.device_secret) { keep(await post("/v1/sessions", { device_secret: kept.device_secret })); return state.signedIn.session_token; }
  if (kept?.username) { showAccount(true); throw new Error("sign in again to play as " + kept.username); }
  keep(await post("/v1/accounts/guest", {}));
  log(`welcome, ${state.name}: a guest character kept in this browser`);
  return state.signedIn.session_token;
}
function showAccount(needSignIn) {
  const a = stored(), box = document.getElementById("account");
  box.replaceChildren();
  const line = document.createElement("div");
  line.textContent = a ? `${a.character}${a.username ? " (" + a.username + ")" : " (guest)"}` : "not signed in";
  box.appendChild(line);
  const links = document.createElement("div");
  const link = (label, action) => {
    const l = document.createElement("a"); l.textContent = label; l.onclick = action;
    if (links.children.length) links.append(" · ");
    links.append(l);
  };
  if (a && !a.username) link("keep with a password", () => { document.getElementById("signup").hidden = false; });
  link("sign in", () => { document.getElementById("signin").hidden = false; });
  if (a) link("sign out", signOut);
  box.appendChild(links);
  document.getElementById("signin").hidden = !needSignIn;
}
document.getElementById("signup").onsubmit = async (ev) => {
  ev.preventDefault();
  const username = document.getElementById("su-user").value, password = document.getElementById("su-pass").value;
  try {
    await post("/v1/accounts/me/credentials", { username, password }, await sessionToken());
    const a = stored(); a.username = username.toLowerCase(); localStorage.setItem(ACCOUNT_KEY, JSON.stringify(a));
    document.getElementById("signup").hidden = true; showAccount(); log(`${state.name} can now sign in as ${a.username}`);
  } catch (e) { log("could not keep the character: " + e.message); }
};
document.getElementById("signin").onsubmit = async (ev) => {
  ev.preventDefault();
  const username = document.getElementById("si-user").value, password = document.getElementById("si-pass").value;
  try {
    const signedIn = await post("/v1/sessions", { username, password });
    localStorage.removeItem(ACCOUNT_KEY); keep(signedIn);
    document.getElementById("signin").hidden = true; switchAccount();
  } catch (e) { log("sign-in failed: " + e.message); }
};
async function signOut() {
  const a = stored();
  if (a?.refresh_token) await post("/v1/sessions/logout", { refresh_token: a.refresh_token }).catch(() => {});
  localStorage.removeItem(ACCOUNT_KEY); state.signedIn = null; state.welcome = null; state.session = null;
  showAccount(true);
  if (state.ws) { state.kicked = true; state.ws.close(1000); }
}
// Play as the account just signed in to: a new connection, no resume of the old character.
function switchAccount() {
  state.session = null; state.kicked = false; state.welcome = null;
  sessionStorage.clear();
  if (state.ws) { state.switching = true; state.ws.close(1000); } else connect();
}
function send(bytes) { if (state.ws && state.ws.readyState === 1) { state.ws.send(bytes); state.commandsSent++; } }

async function connect() {
  banner(state.welcome ? "reconnecting…" : "connecting…");
  // Join through the platform server: it names the server hosting the zone
  // and hands out the character's ticket (good for a minute). Reconnects
  // reuse the join (and the resume token below) until it is refused or old.
  let session = state.session;
  if (!session || session.zone !== state.zone || Date.now() - session.granted_at > 45000) {
    try {
      const lobby = await (await fetch("/v1/lobby")).json();
      state.zones = lobby.zones.map((z) => z.name);
      if (!state.zones.includes(state.zone)) {
        // The zone this page played in is between servers (a failover): wait for it, not for another zone.
        if (state.welcome) {
          banner("your zone is moving to another server…");
          return setTimeout(connect, MOVING_RETRY_MS);
        }
        if (!state.zones.length) throw new Error("no zone is open yet");
        state.zone = state.zones[0];
      }
      session = await post("/v1/play", { zone: state.zone }, await sessionToken());
      if (state.shunned && Date.now() - state.shunned.at < SHUN_MS && session.address === state.shunned.address) {
        banner("your zone is moving to another server…");
        return setTimeout(connect, MOVING_RETRY_MS);
      }
      state.session = session; session.granted_at = Date.now(); state.waitCharacter = 0;
    } catch (e) {
      // 409: the character is still leaving its last zone (being saved): ask again shortly.
      if (e.status === 409) {
        banner("your character is on its way…");
        state.waitCharacter = Math.min((state.waitCharacter || 100) * 1.5, 1000);
        return setTimeout(connect, state.waitCharacter);
      }
      log("could not join: " + e.message); return retry();
    }
  }
  // Zone names come from the registry: text, never markup.
  zoneSelect.replaceChildren(...state.zones.map((z) => { const o = new Option(z, z); o.selected = z === state.zone; return o; }));
  const ws = new WebSocket(session.address);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setTimeout(() => { if (state.ws === ws && ws.readyState === 0) lost(ws, "no answer from the server"); }, CONNECT_MS);
  // The resume token (from the last Welcome) gets the same character back after a
  // disconnect or a server restart; the session token is the fallback.
  const resume = sessionStorage.getItem("respawn.resume." + state.zone) || "";
  ws.onopen = () => { state.heardAt = performance.now(); ws.send(clientMessage(1, (w) => {
    w.uint(1, PROTOCOL_VERSION); w.str(2, session.token); w.str(3, state.zone); if (resume) w.str(4, resume);
    w.str(5, session.character_ticket);
  })); };
  ws.onmessage = (ev) => {
    state.heardAt = performance.now();
    try { onMessage(decodeServer(new Uint8Array(ev.data))); }
    catch (e) { log("protocol error, reconnecting: " + e.message); ws.close(); }
  };
  ws.onclose = (ev) => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (ev.code === 4006) { state.kicked = true; banner("kicked: " + ev.reason); return; }
    if (ev.code === 4012) { state.kicked = true; banner("banned: " + ev.reason); return; }
    // Refused token, or a server that is draining or gone: join again to be routed anew.
    if (ev.code === 4003) { sessionStorage.removeItem("respawn.resume." + state.zone); if (state.signedIn) state.signedIn.expires_at = 0; }
    // 4014: the character is not to be had with this join (its last stay is still being saved): ask again.
    if (ev.code === 4003 || ev.code === 4005 || ev.code === 1001 || ev.code === 4014) state.session = null;
    // The character walked into an exit: play in that zone now (a new join; the character's state
    // reaches the platform first, so /v1/play may answer 409 for a moment).
    if (ev.code === 4015 && state.travelTo) {
      sessionStorage.removeItem("respawn.resume." + state.zone);
      state.zone = state.travelTo; state.travelTo = null; state.session = null; state.travels++;
      localStorage.setItem("respawn.zone", state.zone);
      if (params.has("zone")) { params.set("zone", state.zone); history.replaceState(null, "", "?" + params); }
      return connect();
    }
    // The zone moved (live hand-off): join it at its new address at once, same session, same resume token.
    if (ev.code === 4013 && state.migrateTo && state.session) {
      state.session.address = state.migrateTo; state.migrateTo = null; state.migrations++;
      log("zone moved to another server; following it");
      return connect();
    }
    if (ev.code !== 1000 || !state.switching) log(`disconnected (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
    state.switching = false;
    retry();
  };
}
// Leaves a server that is gone without waiting for its close (which may never come) and joins anew.
function lost(ws, why) {
  if (state.ws !== ws) return;
  log(why + "; finding where " + state.zone + " runs now");
  state.shunned = { address: state.session?.address, at: Date.now() };
  state.session = null; state.ws = null; state.losses++;
  ws.onclose = null; ws.onmessage = null; ws.close();
  connect();
}
setInterval(() => {
  if (state.ws && state.ws.readyState === 1 && performance.now() - state.heardAt > SILENCE_MS) lost(state.ws, "the server fell silent");
}, 250);
function retry() {
  if (state.kicked) return;
  banner("reconnecting…");
  setTimeout(connect, state.retry);
  state.retry = Math.min(state.retry * 2, 5000);
}

function onMessage(m) {
  switch (m.type) {
    case "welcome":
      state.welcome = m; state.entities.clear(); state.you = null; state.tick = m.tick; state.tickAt = performance.now();
      state.velocity = [0, 0]; state.retry = 500; banner(""); sendVelocity(true);
      if (m.resume_token) sessionStorage.setItem("respawn.resume." + m.zone, m.resume_token);
      log(m.resumed ? `back in ${m.zone}: your character was kept` : `joined ${m.zone} as ${state.name} (server ${m.server_version})`);
      break;
    case "update": {
      state.updates++;
      state.tick = m.tick; state.tickAt = performance.now();
      for (const e of m.entered) { e.samples = [[m.tick, e.x, e.y]]; state.entities.set(e.id, e); }
      for (const c of m.changed) {
        const e = state.entities.get(c.id); if (!e) continue;
        e.hp = c.hp; if (c.max_hp) e.max_hp = c.max_hp; if (c.level) e.level = c.level;
        e.x = c.x; e.y = c.y; e.samples.push([m.tick, c.x, c.y]); if (e.samples.length > 4) e.samples.shift();
      }
      for (const mv of m.moves) {
        const e = state.entities.get(mv.id); if (!e) throw new Error(`entity ${mv.id} moved but never entered`);
        e.x += mv.dx; e.y += mv.dy; e.samples.push([m.tick, e.x, e.y]); if (e.samples.length > 4) e.samples.shift();
      }
      for (const id of m.left) state.entities.delete(id);
      if (m.you) {
        if (state.you && m.you.level > state.you.level) log(`level up! now level ${m.you.level}`);
        if (state.you && m.you.dead && !state.you.dead) log("you died; respawning soon");
        if (state.you && m.you.gold > state.you.gold) log(`+${m.you.gold - state.you.gold} gold`);
        state.you = m.you;
      }
      break;
    }
    case "pong": state.rtt = performance.now() - m.client_time; break;
    case "notice":
      log(`${NOTICE[m.kind] || "notice"}: ${m.text}`);
      if (m.kind === 3) banner("server restarting: " + m.text);
      if (m.kind === 4 && m.migrate_to) state.migrateTo = m.migrate_to;
      if (m.kind === 5 && m.travel_to) state.travelTo = m.travel_to;
      break;
    case "rejected": if (m.reason !== "cooldown") log("refused: " + m.reason.replace(/_/g, " ")); break;
    case "error": log("error: " + m.message); break;
  }
}

// Velocity from held keys, sent only when it changes.
function sendVelocity(force) {
  if (!state.welcome) return;
  const k = state.keys;
  let dx = (k.has("d") || k.has("arrowright") ? 1 : 0) - (k.has("a") || k.has("arrowleft") ? 1 : 0);
  let dy = (k.has("s") || k.has("arrowdown") ? 1 : 0) - (k.has("w") || k.has("arrowup") ? 1 : 0);
  const len = Math.hypot(dx, dy), speed = state.welcome.max_speed;
  const v = len ? [Math.trunc(dx / len * speed), Math.trunc(dy / len * speed)] : [0, 0];
  if (!force && v[0] === state.velocity[0] && v[1] === state.velocity[1]) return;
  state.velocity = v;
  send(clientMessage(2, (w) => { w.uint(1, ++state.seq); w.sint(2, v[0]); w.sint(3, v[1]); }));
}
function me() { return state.welcome ? state.entities.get(state.welcome.entity_id) : null; }
function nearest(kind, range, pred = () => true) {
  const m = me(); if (!m) return null;
  let best = null, bestD = range * range;
  for (const e of state.entities.values()) {
    if (e.kind !== kind || e.id === m.id || !pred(e)) continue;
    const d = (e.x - m.x) ** 2 + (e.y - m.y) ** 2;
    if (d <= bestD) { best = e; bestD = d; }
  }
  return best;
}
function attack(target) { if (target) send(clientMessage(3, (w) => { w.uint(1, ++state.seq); w.uint(2, target.id); })); }
function pickup(item) { if (item) send(clientMessage(4, (w) => { w.uint(1, ++state.seq); w.uint(2, item.id); })); }

addEventListener("keydown", (e) => {
  const k = e.key.toLowerCase();
  if (k === " ") { attack(nearest(KIND.NPC, state.welcome?.attack_range || 0, (n) => n.hp > 0) || nearest(KIND.PLAYER, state.welcome?.attack_range || 0, (p) => p.hp > 0)); e.preventDefault(); return; }
  if (k === "e") { pickup(nearest(KIND.ITEM, state.welcome?.pickup_range || 0)); return; }
  state.keys.add(k); sendVelocity(false);
  if (k.startsWith("arrow")) e.preventDefault();
});
addEventListener("keyup", (e) => { state.keys.delete(e.key.toLowerCase()); sendVelocity(false); });
addEventListener("blur", () => { state.keys.clear(); sendVelocity(false); });
zoneSelect.addEventListener("change", () => {
  state.zone = zoneSelect.value; localStorage.setItem("respawn.zone", state.zone);
  // A reload stays in the zone chosen (the address may name another).
  if (params.has("zone")) { params.set("zone", state.zone); history.replaceState(null, "", "?" + params); }
  if (state.ws) { state.switching = true; send(clientMessage(6, () => {})); state.ws.close(1000); }
});
canvas.addEventListener("click", (ev) => {
  const m = me(); if (!m) return;
  const { scale, ox, oy } = camera(m);
  const wx = (ev.clientX - ox) / scale, wy = (ev.clientY - oy) / scale;
  let best = null, bestD = (30 / scale) ** 2;
  for (const e of state.entities.values()) { const d = (e.x - wx) ** 2 + (e.y - wy) ** 2; if (e.id !== m.id && d < bestD) { best = e; bestD = d; } }
  if (best) (best.kind === KIND.ITEM ? pickup : attack)(best);
});
setInterval(() => send(clientMessage(5, (w) => w.uint(1, Math.floor(performance.now())))), 1000);

// ---- Rendering with interpolation (100 ms behind the newest server tick) ----
function renderTick() {
  if (!state.welcome) return 0;
  const tickMs = 1000 / state.welcome.tick_rate_hz;
  return state.tick + (performance.now() - state.tickAt) / tickMs - 2;
}
function position(e, t) {
  const s = e.samples; if (!s || !s.length) return [e.x, e.y];
  if (t >= s[s.length - 1][0]) return [s[s.length - 1][1], s[s.length - 1][2]];
  for (let i = s.length - 1; i > 0; i--) {
    const [t1, x1, y1] = s[i], [t0, x0, y0] = s[i - 1];
    if (t >= t0) { const f = (t - t0) / Math.max(1, t1 - t0); return [x0 + (x1 - x0) * f, y0 + (y1 - y0) * f]; }
  }
  return [s[0][1], s[0][2]];
}
function camera(m) {
  const t = renderTick(), [cx, cy] = position(m, t);
  const scale = Math.min(canvas.width, canvas.height) * 0.45 / (state.welcome.view_radius || 2000);
  return { scale, ox: canvas.width / 2 - cx * scale, oy: canvas.height / 2 - cy * scale, t };
}
function bar(x, y, w, frac, color) { ctx.fillStyle = "#000a"; ctx.fillRect(x - w / 2, y, w, 4); ctx.fillStyle = color; ctx.fillRect(x - w / 2, y, w * Math.max(0, Math.min(1, frac)), 4); }
function draw() {
  canvas.width = innerWidth; canvas.height = innerHeight;
  ctx.fillStyle = "#1a2027"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const m = me(), w = state.welcome;
  if (w && m) {
    const { scale, ox, oy, t } = camera(m);
    const sx = (x) => ox + x * scale, sy = (y) => oy + y * scale;
    ctx.fillStyle = "#232b33"; ctx.fillRect(sx(0), sy(0), w.width * scale, w.height * scale);
    ctx.strokeStyle = "#2c3640"; ctx.lineWidth = 1;
    for (let g = 0; g <= w.width; g += 500) { ctx.beginPath(); ctx.moveTo(sx(g), sy(0)); ctx.lineTo(sx(g), sy(w.height)); ctx.stroke(); }
    for (let g = 0; g <= w.height; g += 500) { ctx.beginPath(); ctx.moveTo(sx(0), sy(g)); ctx.lineTo(sx(w.width), sy(g)); ctx.stroke(); }
    ctx.fillStyle = "#4a5560"; for (const o of w.obstacles) ctx.fillRect(sx(o.x), sy(o.y), o.w * scale, o.h * scale);
    ctx.font = "12px sans-serif"; ctx.textAlign = "center";
    for (const x of w.exits) {
      ctx.fillStyle = "#6b4fd155"; ctx.fillRect(sx(x.x), sy(x.y), x.w * scale, x.h * scale);
      ctx.fillStyle = "#c9b8ff"; ctx.fillText("→ " + x.to, sx(x.x + x.w / 2), sy(x.y) - 4);
    }
    const r = Math.max(5, 50 * scale);
    const sorted = [...state.entities.values()].sort((a, b) => a.kind === KIND.ITEM ? -1 : b.kind === KIND.ITEM ? 1 : 0);
    for (const e of sorted) {
      const [x, y] = position(e, t), px = sx(x), py = sy(y);
      if (e.kind === KIND.ITEM) {
        const [, color] = ITEMS[e.item] || ["?", "#fff"];
        ctx.fillStyle = color; ctx.beginPath(); ctx.arc(px, py, r * 0.5, 0, 7); ctx.fill(); continue;
      }
      const dead = e.hp <= 0, mine = e.id === m.id;
      ctx.fillStyle = dead ? "#555" : e.kind === KIND.NPC ? "#d0453a" : mine ? "#4cd964" : "#4a90e2";
      ctx.beginPath(); ctx.arc(px, py, r, 0, 7); ctx.fill();
      if (!dead) bar(px, py - r - 8, r * 2.4, e.hp / (e.max_hp || 1), e.kind === KIND.NPC ? "#ff7b6b" : "#7cfc8a");
      if (e.kind === KIND.PLAYER) { ctx.fillStyle = "#ddd"; ctx.textAlign = "center"; ctx.fillText(`${e.name} (${e.level})`, px, py - r - 12); }
    }
    ctx.strokeStyle = "#ffffff18"; ctx.beginPath(); ctx.arc(canvas.width / 2, canvas.height / 2, w.attack_range * scale, 0, 7); ctx.stroke();
  }
  drawHud();
  requestAnimationFrame(draw);
}
// Text from a server (names) going into markup.
// Built from nodes and text, never from markup: names come from the network.
function drawHud() {
  const y = state.you, w = state.welcome;
  if (!w || !y) { hud.textContent = !stored() ? "signed out" : state.kicked ? "kicked" : "connecting…"; return; }
  const inv = y.inventory.map((s) => `${(ITEMS[s.item] || ["?"])[0]} ×${s.count}`).join(", ") || "empty";
  const line = (...parts) => { const d = document.createElement("div"); d.append(...parts); return d; };
  const bold = (text) => { const b = document.createElement("b"); b.textContent = text; return b; };
  const bar = document.createElement("div"), fill = document.createElement("div");
  bar.className = "bar";
  fill.className = "fill";
  fill.style.width = `${Math.max(0, 100 * y.hp / (y.max_hp || 1))}%`;
  bar.append(fill);
  hud.replaceChildren(
    line(bold(state.name), " in ", bold(w.zone)),
    line(`HP ${y.hp}/${y.max_hp}${y.dead ? " (dead)" : ""}`),
    bar,
    line(`Level ${y.level} · XP ${y.xp}/${y.next_level_xp}`),
    line(`Gold ${y.gold}`),
    line(`Bag: ${inv}`),
    line(`RTT ${state.rtt == null ? "…" : state.rtt.toFixed(1) + " ms"} · ${state.entities.size} in view`),
  );
}
// Read by the end-to-end test.
window.respawn = {
  joined: () => !!(state.welcome && me()),
  position: () => { const m = me(); return m ? { x: m.x, y: m.y } : null; },
  zone: () => state.welcome?.zone,
  commandsSent: () => state.commandsSent,
  updates: () => state.updates,
  resumed: () => !!state.welcome?.resumed,
  server: () => state.session?.address,
  character: () => state.name,
  gold: () => state.you?.gold,
  // The nearest gold on the field, its distance, and the pickup range.
  nearestGold: () => {
    const m = me(); if (!m) return null;
    let best = null;
    for (const e of state.entities.values()) {
      if (e.kind !== KIND.ITEM || e.item !== 1) continue;
      const d = Math.hypot(e.x - m.x, e.y - m.y);
      if (!best || d < best.d) best = { dx: e.x - m.x, dy: e.y - m.y, d };
    }
    return best && { ...best, range: state.welcome.pickup_range };
  },
  migrations: () => state.migrations,
  losses: () => state.losses,
  travels: () => state.travels,
  // The nearest exit: its zone and the way to its middle.
  nearestExit: () => {
    const m = me(), w = state.welcome; if (!m || !w) return null;
    let best = null;
    for (const x of w.exits) {
      const dx = x.x + x.w / 2 - m.x, dy = x.y + x.h / 2 - m.y, d = Math.hypot(dx, dy);
      if (!best || d < best.d) best = { to: x.to, dx, dy, d };
    }
    return best;
  },
};
state.name = stored()?.character || "";
showAccount();
connect();
requestAnimationFrame(draw);
