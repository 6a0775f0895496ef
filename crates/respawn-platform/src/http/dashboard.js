"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
// The operator token lives in this page's memory only: nothing another page
// of this origin can read (the play page shares it), gone with the tab.
let token = "";

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + token }, body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(r.status + " " + text.trim());
  return text ? JSON.parse(text) : null;
}

// Every action asks first; the answer decides.
function confirmThen(question, action) {
  $("confirm-text").textContent = question;
  $("confirm").style.display = "flex";
  const close = () => { $("confirm").style.display = "none"; $("confirm-yes").onclick = null; $("confirm-no").onclick = null; };
  $("confirm-no").onclick = close;
  $("confirm-yes").onclick = async () => {
    close();
    try { const r = await action(); $("message").textContent = "done: " + JSON.stringify(r); $("message").className = "ok"; }
    catch (e) { $("message").textContent = e.message; $("message").className = "bad"; }
    refresh();
  };
}

const statusClass = (s) => (s === "running" ? "ok" : s === "draining" ? "warn" : "bad");
const ms = (v) => (v == null ? "–" : v.toFixed(1) + " ms");

async function refresh() {
  try {
    const [zones, status, servers] = await Promise.all([api("GET", "/v1/zones"), api("GET", "/v1/status"), api("GET", "/v1/servers")]);
    $("zones").tBodies[0].innerHTML = zones.map((z) => `<tr data-zone="${esc(z.name)}" data-server="${esc(z.server)}">
      <td class="long">${esc(z.name)}</td><td class="long">${esc(z.server)}</td><td class="${statusClass(z.status)}">${esc(z.status)}</td>
      <td class="num ccu">${z.players}</td><td class="num">${ms(z.tick_p50_ms)}</td><td class="num">${ms(z.tick_p99_ms)}</td><td class="long">${esc(z.version)}</td></tr>`).join("");
    const names = [...new Set(zones.map((z) => z.name))];
    const select = $("announce-zone"), chosen = select.value;
    select.innerHTML = `<option value="">all zones</option>` + names.map((n) => `<option${n === chosen ? " selected" : ""}>${esc(n)}</option>`).join("");
    showPipeline(status);
    $("servers").tBodies[0].innerHTML = servers.map((s) => `<tr data-server="${esc(s.id)}"><td class="long">${esc(s.id)}</td><td class="long">${esc(s.address)}</td>
      <td class="${s.state === "ready" ? "ok" : "warn"}">${esc(s.state)}</td><td class="num">${s.players}</td>
      <td>${s.state === "ready" ? `<button class="danger drain" data-id="${esc(s.id)}">Drain</button>` : ""}</td></tr>`).join("");
    for (const b of document.querySelectorAll("button.drain")) {
      b.onclick = () => confirmThen(`Drain ${b.dataset.id}? It takes no new players and stops once empty.`,
        () => api("POST", `/v1/servers/${encodeURIComponent(b.dataset.id)}/drain`));
    }
    const alerts = await api("GET", "/v1/alerts");
    const cls = (a) => (a.severity === "critical" ? "bad" : a.severity === "warning" ? "warn" : "");
    $("alerts").innerHTML = alerts.firing.length
      ? alerts.firing.map((a) => `<div class="${cls(a)}" data-alert="${esc(a.name)}"><b>${esc(a.severity)}</b> ${esc(a.name)}: ${esc(a.summary)}
          <a href="${esc(a.runbook)}">runbook</a></div>`).join("")
      : `<span class="ok">none firing</span>`;
    $("feed").tBodies[0].innerHTML = alerts.feed.slice(0, 10).map((a) => `<tr data-alert="${esc(a.name)}" data-state="${esc(a.state)}">
      <td>${new Date(a.at_ms).toLocaleTimeString()}</td><td class="${cls(a)}">${esc(a.state)}</td><td>${esc(a.severity)}</td><td>${esc(a.summary)}</td></tr>`).join("");
    const audit = await api("GET", "/v1/audit?limit=8");
    $("audit").tBodies[0].innerHTML = audit.map((a) => `<tr><td>${new Date(a.at_ms).toLocaleTimeString()}</td><td>${esc(a.actor)}</td>
      <td>${esc(a.action)}</td><td class="long">${esc(a.target)}</td><td class="${a.result === "ok" ? "ok" : "bad"}">${esc(a.result)}</td></tr>`).join("");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("updated").textContent = "update failed: " + e.message;
    if (e.message.startsWith("401")) signOut(e.message);
  }
}

// What is really between the zones and the ledger: Kafka and MySQL, or the embedded ledger.
const LEDGER_NAMES = { mysql: "MySQL", sqlite: "SQLite", unavailable: "unavailable" };
function showPipeline(status) {
  const e = status.events, ledger = LEDGER_NAMES[status.ledger] ?? status.ledger;
  const stat = (label, value, cls) => `<div class="stat">${esc(label)}<b class="${cls ?? ""}">${esc(value)}</b></div>`;
  const ledgerClass = status.ledger === "unavailable" ? "bad" : "ok";
  $("pipeline").dataset.path = e.path;
  $("pipeline").innerHTML = e.path === "kafka"
    ? stat("Kafka consumed/s", (e.consumed_per_second ?? 0).toFixed(0)) + stat("Kafka consumer lag", e.consumer_lag ?? "–")
      + stat("Zone outboxes", e.outbox_pending) + stat("Ledger", ledger, ledgerClass)
      + stat("DB pool in use", `${status.db_pool.in_use} / ${status.db_pool.max}`)
    : stat("Events go to", `the embedded ledger (${ledger})`, ledgerClass) + stat("Zone outboxes", e.outbox_pending);
}

// Charts of the last hour (GET /v1/trends, a point every 5 s), drawn by uPlot.
const PALETTE = ["#5fd38d", "#6aa7f0", "#f0c05a", "#c58af0", "#4fd1c5", "#f08a5a", "#e4e6ea"];
const color = (i) => PALETTE[i % PALETTE.length];
const CHARTS = {
  ccu: (t) => t.zones.map((z, i) => ({ label: z.name, values: z.ccu, stroke: color(i) })),
  tick: (t) => t.zones.flatMap((z, i) => [
    { label: z.name + " p50", values: z.tick_p50_ms, stroke: color(i), dash: [4, 4] },
    { label: z.name + " p99", values: z.tick_p99_ms, stroke: color(i) }]),
  events: (t) => t.path === "kafka"
    ? [{ label: "stored in the ledger", values: t.events_stored_per_second, stroke: color(0) },
       { label: "published to Kafka", values: t.events_published_per_second, stroke: color(1) }]
    : [{ label: "stored in the embedded ledger", values: t.events_stored_per_second, stroke: color(0) }],
  lag: (t) => (t.path === "kafka" ? [{ label: "Kafka consumer lag", values: t.consumer_lag, stroke: color(2) }] : [])
    .concat([{ label: "in zone outboxes", values: t.outbox_pending, stroke: color(1) }]),
  api: (t) => [{ label: "p50", values: t.api_p50_ms, stroke: color(1) }, { label: "p99", values: t.api_p99_ms, stroke: color(2) }],
  errors: (t) => [{ label: "requests", values: t.api_requests_per_second, stroke: color(1) },
    { label: "5xx", values: t.api_errors_per_second, stroke: "#f06a6a" }],
};
const charts = {};
window.dashboardCharts = charts;
const AXIS = { stroke: "#9aa3ad", grid: { stroke: "#232833", width: 1 }, ticks: { stroke: "#232833", width: 1 } };
function chartWidth(id) { return Math.max(200, $("chart-" + id).clientWidth); }
function drawChart(id, times, series) {
  const key = series.map((s) => s.label).join("|");
  const data = [times, ...series.map((s) => s.values)];
  const chart = charts[id];
  if (chart && chart.key === key) { chart.setData(data); return; }
  if (chart) chart.destroy();
  const opts = {
    width: chartWidth(id), height: 160,
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.stroke, dash: s.dash, width: 1.5, spanGaps: false,
      value: (u, v) => (v == null ? "–" : +v.toFixed(2)) }))],
    axes: [Object.assign({}, AXIS), Object.assign({ size: 48 }, AXIS)],
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
  };
  charts[id] = new uPlot(opts, data, $("chart-" + id));
  charts[id].key = key;
}
async function refreshCharts() {
  try {
    const t = await api("GET", "/v1/trends");
    for (const [id, series] of Object.entries(CHARTS)) drawChart(id, t.times, series(t));
    $("charts-note").textContent = t.times.length < 2
      ? `(a point every ${t.period_secs} s: the first lines appear after two)`
      : `(a point every ${t.period_secs} s, ${t.times.length} so far)`;
  } catch (e) {
    $("charts-note").textContent = "charts not updated: " + e.message;
  }
}
window.addEventListener("resize", () => { for (const [id, c] of Object.entries(charts)) c.setSize({ width: chartWidth(id), height: 160 }); });

function signOut(why) {
  token = "";
  $("board").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = why || "";
}

async function signIn() {
  token = $("token").value.trim();
  try {
    await api("GET", "/v1/status");
    $("signin").hidden = true;
    $("board").hidden = false;
    $("who").textContent = "signed in";
    refresh();
    refreshCharts();
  } catch (e) {
    signOut("sign-in refused: " + e.message);
  }
}

$("login").onclick = signIn;
$("token").onkeydown = (e) => { if (e.key === "Enter") signIn(); };
$("announce").onclick = () => {
  const text = $("announce-text").value.trim(), zone = $("announce-zone").value;
  if (!text) { $("message").textContent = "write the announcement first"; return; }
  confirmThen(`Announce "${text}" to ${zone ? "zone " + zone : "all zones"}?`,
    () => api("POST", "/v1/announcements", zone ? { text, zone } : { text }));
};
$("kick").onclick = () => {
  const player = $("kick-player").value.trim(), reason = $("kick-reason").value.trim();
  if (!player) { $("message").textContent = "name the player first"; return; }
  confirmThen(`Kick player ${player}?`,
    () => api("POST", `/v1/players/${encodeURIComponent(player)}/kick`, reason ? { reason } : {}));
};
// Accounts: found by id, username or character; every change asks first and is audited.
let account = null;
async function showAccount() {
  const given = $("account-name").value.trim();
  if (!given) { $("account").textContent = "name the account first"; return; }
  try {
    account = await api("GET", `/v1/accounts/${encodeURIComponent(given)}`);
    $("account").innerHTML = `<div data-account="${account.id}">${esc(account.character)} · ${account.guest ? "guest" : "username " + esc(account.username)}
      · id ${account.id} · <span class="${account.disabled ? "bad" : "ok"}">${account.disabled ? "disabled: " + esc(account.disabled) : "active"}</span></div>`;
    $("account-actions").hidden = false;
    $("account-reset").hidden = account.guest;
  } catch (e) {
    account = null; $("account").textContent = e.message; $("account-actions").hidden = true; $("account-reset").hidden = true;
  }
}
function accountAction(question, method, suffix, body) {
  if (!account) return;
  const path = `/v1/accounts/${account.id}/${suffix}`;
  confirmThen(question, async () => { const r = await api(method, path, body); await showAccount(); return r; });
}
$("account-find").onclick = showAccount;
$("account-name").onkeydown = (e) => { if (e.key === "Enter") showAccount(); };
$("account-disable").onclick = () => {
  const reason = $("account-reason").value.trim();
  if (!reason) { $("message").textContent = "give a reason to disable"; return; }
  accountAction(`Disable ${account?.character}? Its sign-ins end and its player is kicked.`, "POST", "disable", { reason });
};
$("account-enable").onclick = () => accountAction(`Enable ${account?.character}?`, "POST", "enable");
$("account-revoke").onclick = () => accountAction(`End every sign-in of ${account?.character}?`, "POST", "revoke");
$("account-set-password").onclick = () => {
  const password = $("account-password").value;
  if (password.length < 8) { $("message").textContent = "a password has at least 8 characters"; return; }
  accountAction(`Reset the password of ${account?.character}? Its sign-ins end.`, "PUT", "password", { password });
};
// Event search: each event can be watched again in the time machine.
async function searchEvents() {
  const player = $("events-player").value.trim(), kind = $("events-kind").value.trim();
  const query = new URLSearchParams({ limit: "50" });
  if (player) query.set("player", player);
  if (kind) query.set("kind", kind);
  try {
    const found = await api("GET", "/v1/events?" + query);
    $("events-error").textContent = found.events.length ? "" : "no event matches";
    $("events").tBodies[0].innerHTML = found.events.map((e) => `<tr data-event="${esc(e.id)}">
      <td>${new Date(e.stored_at_ms).toLocaleTimeString()}</td><td>${e.zone}</td><td class="num">${e.tick}</td><td>${e.player}</td>
      <td>${esc(e.kind)}</td><td class="long">${esc(e.detail)}</td><td><button class="watch" data-zone="${e.zone}" data-tick="${e.tick}">Watch</button></td></tr>`).join("");
    for (const b of document.querySelectorAll("button.watch")) b.onclick = () => watchMoment(b.dataset.zone, Number(b.dataset.tick));
  } catch (e) {
    $("events-error").textContent = e.message;
  }
}
$("events-find").onclick = searchEvents;
for (const id of ["events-player", "events-kind"]) $(id).onkeydown = (e) => { if (e.key === "Enter") searchEvents(); };

// The time machine: a film of a window (positions and events per tick) from
// the zone's journal; an entity's whole state asked for at the tick shown.
const AROUND_AN_EVENT = 60; // ticks either side of a watched event (3 s at 20 Hz; fits a zone of 1,000 players)
const tm = { film: null, at: 0, selected: null, states: new Map(), settle: 0 };
const DOT_COLORS = { players: "#5fd38d", npcs: "#f06a6a", items: "#f0c05a" };

async function watchMoment(zone, tick) {
  $("tm-zone").value = zone;
  $("tm-from").value = String(Math.max(1, tick - AROUND_AN_EVENT));
  $("tm-to").value = String(tick + AROUND_AN_EVENT);
  $("time-machine").scrollIntoView();
  await loadFilm(tick);
}

async function loadFilm(atTick) {
  const zone = $("tm-zone").value.trim(), from = $("tm-from").value.trim(), to = $("tm-to").value.trim();
  const status = (text, cls) => { $("tm-status").textContent = text; $("tm-status").className = cls || ""; };
  if (!zone || !from || !to) { status("give a zone and both ends of the window (ticks or UTC times)", "bad"); return; }
  status("replaying from the journal …");
  try {
    tm.film = await api("GET", `/v1/zones/${encodeURIComponent(zone)}/film?` + new URLSearchParams({ from, to }));
  } catch (e) {
    tm.film = null;
    $("tm-player").hidden = true;
    status(e.message, "bad");
    return;
  }
  const frames = tm.film.frames;
  if (!frames.length) { $("tm-player").hidden = true; status("no tick in that window", "bad"); return; }
  status(`zone ${tm.film.zone}: ticks ${frames[0].tick} to ${frames[frames.length - 1].tick}, replayed by build ${tm.film.version}`);
  tm.selected = null;
  tm.states.clear();
  $("tm-entity").textContent = "click a dot on the map";
  $("tm-slider").max = String(frames.length - 1);
  $("tm-player").hidden = false;
  const at = frames.findIndex((f) => f.tick === atTick);
  showFrame(at >= 0 ? at : 0);
}

function showFrame(index) {
  const frames = tm.film.frames;
  tm.at = Math.max(0, Math.min(frames.length - 1, index));
  const frame = frames[tm.at];
  $("tm-slider").value = String(tm.at);
  $("tm-tick").textContent = String(frame.tick);
  $("tm-events").innerHTML = frame.events.length
    ? frame.events.map((e) => `<li data-event="${esc(e.id)}">${esc(e.kind)} · player ${e.player} · ${esc(e.detail)}</li>`).join("")
    : "<li>none</li>";
  drawMap();
  // The selected entity's state once the slider rests: scrubbing asks for one tick, not every tick passed.
  clearTimeout(tm.settle);
  if (tm.selected) {
    $("tm-entity").textContent = `${tm.selected.kind.slice(0, -1)} ${tm.selected.id} at tick ${frame.tick}: …`;
    tm.settle = setTimeout(showSelected, 250);
  }
}

// Map units to the canvas's pixels, the whole zone in view.
function scale() {
  const map = $("tm-map");
  return Math.min(map.width / tm.film.width, map.height / tm.film.height);
}

function drawMap() {
  const map = $("tm-map"), g = map.getContext("2d"), k = scale(), frame = tm.film.frames[tm.at];
  g.clearRect(0, 0, map.width, map.height);
  g.strokeStyle = "#262c36";
  g.strokeRect(0, 0, tm.film.width * k, tm.film.height * k);
  for (const kind of ["items", "npcs", "players"]) {
    for (const d of frame[kind]) {
      const chosen = tm.selected && tm.selected.kind === kind && tm.selected.id === d.id;
      g.fillStyle = DOT_COLORS[kind];
      g.beginPath();
      g.arc(d.x * k, d.y * k, chosen ? 6 : kind === "players" ? 4 : 3, 0, 2 * Math.PI);
      g.fill();
      if (chosen) { g.strokeStyle = "#ffffff"; g.lineWidth = 2; g.stroke(); g.lineWidth = 1; }
    }
  }
}

// The dot nearest a point on the canvas (within 10 px), players first.
function dotAt(px, py) {
  const k = scale(), frame = tm.film.frames[tm.at];
  let best = null;
  for (const kind of ["players", "npcs", "items"]) {
    for (const d of frame[kind]) {
      const far = Math.hypot(d.x * k - px, d.y * k - py);
      if (far <= 10 && (!best || far < best.far)) best = { kind, id: d.id, far };
    }
  }
  return best;
}

$("tm-map").onclick = (e) => {
  if (!tm.film) return;
  const box = $("tm-map").getBoundingClientRect();
  const hit = dotAt(e.clientX - box.left, e.clientY - box.top);
  tm.selected = hit && { kind: hit.kind, id: hit.id };
  drawMap();
  if (tm.selected) showSelected(); else $("tm-entity").textContent = "click a dot on the map";
};

// The selected entity's state at the tick shown (one replay per tick, kept).
async function showSelected() {
  const tick = tm.film.frames[tm.at].tick, { kind, id } = tm.selected;
  $("tm-entity").textContent = `${kind.slice(0, -1)} ${id} at tick ${tick}: replaying …`;
  try {
    if (!tm.states.has(tick)) {
      tm.states.set(tick, api("GET", `/v1/zones/${encodeURIComponent(tm.film.zone)}/state?tick=${tick}`));
    }
    const state = await tm.states.get(tick);
    if (tm.film.frames[tm.at].tick !== tick || !tm.selected || tm.selected.id !== id) return; // moved on meanwhile
    const key = { players: "player", npcs: "npc", items: "item" }[kind];
    const found = state[kind].find((entity) => entity[key] === id);
    $("tm-entity").dataset.tick = String(tick);
    $("tm-entity").textContent = found
      ? `${key} ${id} at tick ${tick}\n` + JSON.stringify(found, null, 2)
      : `${key} ${id} is not in the zone at tick ${tick}`;
  } catch (e) {
    tm.states.delete(tick);
    $("tm-entity").textContent = e.message;
  }
}

$("tm-load").onclick = () => loadFilm(null);
$("tm-slider").oninput = () => showFrame(Number($("tm-slider").value));
$("tm-prev").onclick = () => tm.film && showFrame(tm.at - 1);
$("tm-next").onclick = () => tm.film && showFrame(tm.at + 1);
// Where an entity's dot is, in the page's coordinates: for the browser test's clicks.
window.timeMachine = {
  pointOf(kind, id) {
    const d = tm.film && tm.film.frames[tm.at][kind].find((dot) => dot.id === id);
    if (!d) return null;
    const box = $("tm-map").getBoundingClientRect(), k = scale();
    return { x: box.left + d.x * k, y: box.top + d.y * k };
  },
};

setInterval(() => { if (token) refresh(); }, 1000);
setInterval(() => { if (token) refreshCharts(); }, 5000);
