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
      <td>${esc(z.name)}</td><td>${esc(z.server)}</td><td class="${statusClass(z.status)}">${esc(z.status)}</td>
      <td class="num ccu">${z.players}</td><td class="num">${ms(z.tick_p50_ms)}</td><td class="num">${ms(z.tick_p99_ms)}</td><td>${esc(z.version)}</td></tr>`).join("");
    const names = [...new Set(zones.map((z) => z.name))];
    const select = $("announce-zone"), chosen = select.value;
    select.innerHTML = `<option value="">all zones</option>` + names.map((n) => `<option${n === chosen ? " selected" : ""}>${esc(n)}</option>`).join("");
    $("consumed").textContent = status.events.consumed_per_second.toFixed(0);
    $("lag").textContent = status.events.consumer_lag;
    $("ledger").textContent = status.ledger;
    $("ledger").className = status.ledger === "unavailable" ? "bad" : "ok";
    $("pool").textContent = `${status.db_pool.in_use} / ${status.db_pool.max}`;
    $("servers").tBodies[0].innerHTML = servers.map((s) => `<tr data-server="${esc(s.id)}"><td>${esc(s.id)}</td><td>${esc(s.address)}</td>
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
      <td>${esc(a.action)}</td><td>${esc(a.target)}</td><td class="${a.result === "ok" ? "ok" : "bad"}">${esc(a.result)}</td></tr>`).join("");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    $("updated").textContent = "update failed: " + e.message;
    if (e.message.startsWith("401")) signOut(e.message);
  }
}

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
setInterval(() => { if (token) refresh(); }, 1000);
