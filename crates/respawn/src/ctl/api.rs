//! The operations API client behind `respawn ctl`, and its tables.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::Value;

pub use respawn_api::http::percent_encode as encode;

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The platform server: host:port, http://host:port or https://host:port
    /// (trusting the system's CAs, or the bundle named by SSL_CERT_FILE).
    #[arg(long, global = true, env = "RESPAWN_PLATFORM_URL", default_value = "127.0.0.1:7360")]
    endpoint: String,
    /// An operator token (viewer, operator or admin).
    #[arg(long, global = true, env = "RESPAWN_OPERATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Player id or name.
    #[arg(long)]
    player: Option<String>,
    /// Event kind, e.g. gold_changed.
    #[arg(long)]
    kind: Option<String>,
    /// Stored at or after: a UTC time like 2026-11-26T10:00:00Z or Unix ms.
    #[arg(long)]
    since: Option<String>,
    /// Stored before: a UTC time or Unix ms.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// The cursor printed under the previous page.
    #[arg(long)]
    cursor: Option<String>,
}

fn time_ms(given: &str, flag: &str) -> Result<u64> {
    given
        .parse::<u64>()
        .ok()
        .or_else(|| respawn_zone::rollback::parse_utc(given))
        .ok_or_else(|| anyhow!("--{flag} {given:?}: a UTC time like 2026-11-26T10:00:00Z or Unix milliseconds"))
}

impl EventsArgs {
    pub fn path(&self) -> Result<String> {
        let mut query = vec![format!("limit={}", self.limit)];
        if let Some(p) = &self.player {
            query.push(format!("player={}", encode(p)));
        }
        if let Some(k) = &self.kind {
            query.push(format!("kind={}", encode(k)));
        }
        if let Some(s) = &self.since {
            query.push(format!("since_ms={}", time_ms(s, "since")?));
        }
        if let Some(u) = &self.until {
            query.push(format!("until_ms={}", time_ms(u, "until")?));
        }
        if let Some(c) = &self.cursor {
            query.push(format!("cursor={}", encode(c)));
        }
        Ok(format!("/v1/events?{}", query.join("&")))
    }
}

/// One API request.
#[derive(Debug)]
pub struct Call {
    method: &'static str,
    path: String,
    body: Option<Value>,
}

impl Call {
    pub fn get(path: &str) -> Self {
        Self { method: "GET", path: path.to_owned(), body: None }
    }

    pub fn post(path: &str, body: Option<Value>) -> Self {
        Self { method: "POST", path: path.to_owned(), body }
    }

    pub fn put(path: &str, body: Value) -> Self {
        Self { method: "PUT", path: path.to_owned(), body: Some(body) }
    }

    pub fn delete(path: &str) -> Self {
        Self { method: "DELETE", path: path.to_owned(), body: None }
    }
}

#[derive(Debug)]
pub struct Client {
    addr: String,
    token: String,
    json: bool,
}

impl Client {
    pub fn new(args: ApiArgs) -> Result<Self> {
        let addr = args.endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
        Ok(Self { addr, token: args.token.unwrap_or_default(), json: args.json })
    }

    async fn call(&self, call: Call) -> Result<Value> {
        // Without `absent_ok` a 404 is an error, so there is always a value.
        self.call_inner(call, false).await?.ok_or_else(|| anyhow!("the platform server answered nothing"))
    }

    /// Like [`Client::call`], with 404 (nothing there) as `None`.
    async fn call_found(&self, call: Call) -> Result<Option<Value>> {
        self.call_inner(call, true).await
    }

    async fn call_inner(&self, call: Call, absent_ok: bool) -> Result<Option<Value>> {
        if self.token.is_empty() {
            bail!("no operator token: pass --token or set RESPAWN_OPERATOR_TOKEN");
        }
        let body = call.body.map(|b| b.to_string());
        let answer =
            respawn_api::http::exchange(&self.addr, call.method, &call.path, Some(&self.token), body.as_deref())
                .await
                .map_err(|e| anyhow!("cannot reach the platform server at {}: {e}", self.addr))?;
        if absent_ok && answer.status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&answer.status) {
            let retry = answer.header("retry-after").map(|s| format!(" (retry after {s} s)")).unwrap_or_default();
            bail!("{} {} refused ({}): {}{retry}", call.method, call.path, answer.status, answer.body.trim());
        }
        serde_json::from_str(&answer.body)
            .map(Some)
            .map_err(|e| anyhow!("unreadable answer from the platform server: {e}"))
    }

    /// Calls, then prints the answer as JSON or with `table`; a 404 prints
    /// `absent` (JSON `null`) instead.
    pub async fn show_found(&self, call: Call, table: fn(&Value) -> String, absent: &str) -> Result<()> {
        match self.call_found(call).await? {
            Some(value) if self.json => println!("{}", serde_json::to_string_pretty(&value)?),
            Some(value) => print!("{}", table(&value)),
            None if self.json => println!("null"),
            None => println!("{absent}"),
        }
        Ok(())
    }

    /// Calls, then prints the answer as JSON or with `table`.
    pub async fn show(&self, call: Call, table: fn(&Value) -> String) -> Result<()> {
        let value = self.call(call).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            print!("{}", table(&value));
        }
        Ok(())
    }
}

impl Client {
    /// Starts a rollout (or rollback) and follows it to its end: each step
    /// and log line as it happens, then the zones moved. Fails unless it succeeded.
    pub async fn follow_rollout(&self, start: Call) -> Result<()> {
        let started = self.call(start).await?;
        let id = started["id"].as_u64().unwrap_or(0);
        let mut printed = 0;
        let last = loop {
            let now = self.call(Call::get("/v1/rollouts/current")).await?;
            if now["id"].as_u64() != Some(id) {
                bail!("another rollout replaced this one; see GET /v1/rollouts/current");
            }
            let log = now["log"].as_array().cloned().unwrap_or_default();
            if !self.json {
                for line in log.iter().skip(printed) {
                    let step = line["step"].as_u64().unwrap_or(0);
                    let at = line["at_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                    println!("[{step}/7 {at:>6.1}s] {}", cell(&line["message"]));
                }
            }
            printed = log.len();
            if now["state"] != "running" {
                break now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&last)?);
        } else {
            print!("{}", print_rollout(&last));
            println!("took {} ms", cell(&last["took_ms"]));
        }
        match last["state"].as_str() {
            Some("succeeded") => Ok(()),
            _ => bail!("rollout {}: {}", cell(&last["state"]), cell(&last["error"])),
        }
    }
}

/// A value as a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            n.as_f64().filter(|f| f.fract() != 0.0).map_or_else(|| n.to_string(), |f| format!("{f:.2}"))
        }
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Aligned columns under a header.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn rows(v: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    v.as_array().into_iter().flatten().map(|item| keys.iter().map(|k| cell(&item[*k])).collect()).collect()
}

pub fn print_rollout(v: &Value) -> String {
    let mut out = format!(
        "rollout {} ({}{}) to {}: {}, step {}/7 {}; run by {}\n",
        cell(&v["id"]),
        cell(&v["mode"]),
        if v["rollback"] == true { ", rollback" } else { "" },
        cell(&v["requested"]),
        cell(&v["state"]),
        cell(&v["step"]),
        cell(&v["step_name"]),
        cell(&v["runner"]),
    );
    if !v["error"].is_null() {
        out.push_str(&format!("error: {}\n", cell(&v["error"])));
    }
    let moved = rows(&v["zones"], &["zone", "from", "to", "tick", "players", "pause_ms", "state"]);
    if !moved.is_empty() {
        out.push_str(&table(&["zone", "from", "to", "tick", "players", "pause ms", "state"], moved));
    }
    out
}

pub fn print_zones(v: &Value) -> String {
    table(
        &["zone", "status", "ccu", "tick p50 ms", "tick p99 ms", "server", "version"],
        rows(v, &["name", "status", "players", "tick_p50_ms", "tick_p99_ms", "server", "version"]),
    )
}

pub fn print_alerts(v: &Value) -> String {
    let keys = ["severity", "name", "state", "summary", "runbook"];
    let mut now = rows(&v["firing"], &keys);
    now.extend(rows(&v["pending"], &keys));
    let mut out = if now.is_empty() {
        "no alert firing or pending\n".to_owned()
    } else {
        table(&["severity", "alert", "state", "summary", "runbook"], now)
    };
    let feed = rows(&v["feed"], &["at_ms", "state", "severity", "name", "summary"]);
    if !feed.is_empty() {
        out.push_str("\nrecent:\n");
        out.push_str(&table(&["at ms", "state", "severity", "alert", "summary"], feed.into_iter().take(10).collect()));
    }
    out
}

pub fn print_servers(v: &Value) -> String {
    table(
        &["server", "state", "players", "reachable", "address", "version", "zones"],
        rows(v, &["id", "state", "players", "reachable", "address", "version", "zones"]),
    )
}

pub fn print_status(v: &Value) -> String {
    let s = match serde_json::from_value::<respawn_api::overview::Status>(v.clone()) {
        Ok(s) => s,
        Err(e) => return format!("an answer this ctl does not read ({e}):\n{v:#}\n"),
    };
    let e = s.events;
    // A consumer's figures where this platform runs one (Kafka).
    let rows = [
        Some(("version", s.version)),
        Some(("servers", s.servers.to_string())),
        Some(("zones", s.zones.to_string())),
        Some(("players", s.players.to_string())),
        Some(("events", e.path.describe(&s.ledger))),
        e.consumed_per_second.map(|rate| ("events consumed/s", format!("{rate:.0}"))),
        e.consumer_lag.map(|lag| ("consumer lag", lag.to_string())),
        Some(("zone outboxes pending", e.outbox_pending.to_string())),
        Some(("db pool in use / max", format!("{} / {}", s.db_pool.in_use, s.db_pool.max))),
        s.registry_error.map(|why| ("registry error", why)),
    ];
    table(&["", ""], rows.into_iter().flatten().map(|(k, v)| vec![k.to_owned(), v]).collect())
}

pub fn print_player(v: &Value) -> String {
    let r = &v["record"];
    let mut rows = vec![vec!["player id".into(), cell(&v["player_id"])]];
    if r.is_null() {
        rows.push(vec!["record".into(), "none: no stored event describes this player".into()]);
    } else {
        for key in ["name", "level", "xp", "gold", "online", "last_zone_id", "events"] {
            rows.push(vec![key.replace('_', " "), cell(&r[key])]);
        }
        rows.push(vec!["inventory".into(), cell(&r["inventory"])]);
    }
    let banned = &v["banned"];
    rows.push(vec![
        "banned".into(),
        if banned.is_null() {
            "no".into()
        } else {
            format!("yes: {} (by {})", cell(&banned["reason"]), cell(&banned["by"]))
        },
    ]);
    let login = &v["last_login"];
    if !login.is_null() {
        rows.push(vec!["last login".into(), format!("zone {} on {}", cell(&login["zone"]), cell(&login["server"]))]);
    }
    table(&["", ""], rows)
}

pub fn print_events(v: &Value) -> String {
    let mut out = table(
        &["stored at ms", "player", "kind", "id", "detail"],
        rows(&v["events"], &["stored_at_ms", "player", "kind", "id", "detail"]),
    );
    if let Some(cursor) = v["next_cursor"].as_str() {
        out.push_str(&format!("more: --cursor {cursor}\n"));
    }
    out
}

pub fn print_bans(v: &Value) -> String {
    table(&["player", "reason", "by", "at ms"], rows(&v["bans"], &["player_id", "reason", "by", "at_ms"]))
}

pub fn print_audit(v: &Value) -> String {
    table(&["at ms", "who", "action", "target", "result"], rows(v, &["at_ms", "actor", "action", "target", "result"]))
}

pub fn print_tokens(v: &Value) -> String {
    table(&["name", "role", "created ms", "expires ms"], rows(v, &["name", "role", "created_ms", "expires_ms"]))
}

/// What a mutating call answered, one `key: value` a line.
pub fn print_done(v: &Value) -> String {
    v.as_object().into_iter().flatten().map(|(k, v)| format!("{k}: {}\n", cell(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_show_missing_values_as_dashes() {
        let zones = json!([
            { "name": "meadow", "status": "running", "players": 12, "tick_p50_ms": 1.25, "tick_p99_ms": null, "server": "s1", "version": "0.1.0" },
        ]);
        let text = print_zones(&zones);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ZONE    STATUS   CCU"), "{text}");
        assert!(
            lines[1].contains("meadow  running  12") && lines[1].contains("1.25") && lines[1].contains(" - "),
            "{text}"
        );
        let servers = print_servers(&json!([{ "id": "s1", "zones": ["meadow", "caverns"] }]));
        assert!(servers.lines().nth(1).is_some_and(|l| l.ends_with("meadow, caverns")), "{servers}");
    }

    #[test]
    fn event_paths_carry_encoded_filters_and_parsed_times() {
        let args = EventsArgs {
            player: Some("ann lee".into()),
            kind: Some("gold_changed".into()),
            since: Some("1970-01-01T00:00:01Z".into()),
            until: Some("5000".into()),
            limit: 5,
            cursor: None,
        };
        assert_eq!(
            args.path().ok().as_deref(),
            Some("/v1/events?limit=5&player=ann%20lee&kind=gold_changed&since_ms=1000&until_ms=5000")
        );
        let bad = EventsArgs { since: Some("yesterday".into()), ..args };
        assert!(bad.path().is_err());
    }
}
