//! The local supervisor: runs `respawn zone` as a child process, health-checks
//! it, and restarts it at once when it dies or stops answering. Used by
//! `respawn up` and by the drills.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use respawn_api::http;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::zone::{StoreFlags, ZoneCommand};

/// Health checks this often; this many failures in a row mean "unresponsive".
const HEALTH_EVERY: Duration = Duration::from_millis(200);
const HEALTH_FAILURES: u32 = 5;

/// Prints a line to stderr, above `up`'s live status line.
pub fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[K");
    }
    let _ = writeln!(err, "{line}");
}

/// How to start the zone server child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub exe: PathBuf,
    pub config: Option<PathBuf>,
    pub stores: StoreFlags,
    pub token_key: String,
    pub admin_token: String,
    /// The platform server to heartbeat into, and the zone server's credential.
    pub platform: Option<(String, String)>,
    pub log_path: PathBuf,
    /// Echo the child's warnings and errors to stderr.
    pub echo_warnings: bool,
}

impl ChildSpec {
    /// Starts `respawn zone` on `listen`; returns it once it has restored its
    /// zones and listens, with the address it bound.
    async fn spawn(&self, listen: SocketAddr) -> Result<(Child, SocketAddr)> {
        let mut zone = ZoneCommand::new(&self.exe, &listen.to_string())
            .drain_deadline_secs(3)
            .stores(&self.stores)
            .token_key(&self.token_key)
            .admin_token(&self.admin_token);
        if let Some(config) = &self.config {
            zone = zone.config(config);
        }
        if let Some((platform, credential)) = &self.platform {
            zone = zone.platform(platform, credential);
        }
        let mut cmd = Command::from(zone.std_command());
        // Text logs, whatever the environment says: warnings are found in them by their level word.
        cmd.env("RESPAWN_LOG_FORMAT", "text");
        // Its own process group: Ctrl-C reaches only the supervisor, which drains the child in order.
        cmd.process_group(0).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start the zone server")?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        tokio::spawn(copy_log(stderr, self.log_path.clone(), self.echo_warnings));
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) => line.rsplit("http://").next().and_then(|a| a.trim().parse().ok()),
            _ => None,
        };
        match addr {
            Some(addr) => Ok((child, addr)),
            None => {
                let _ = child.kill().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!("the zone server did not start; its log ends with:\n{}", log_tail(&self.log_path, 8).await)
            }
        }
    }
}

async fn log_tail(path: &Path, lines: usize) -> String {
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Appends the child's log to the log file; warnings and errors may be shown too.
async fn copy_log(stderr: tokio::process::ChildStderr, path: PathBuf, echo: bool) {
    let Ok(mut file) = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await else { return };
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo && (line.contains(" WARN ") || line.contains(" ERROR ")) {
            say(&format!("zone server: {line}"));
        }
        let _ = file.write_all(line.as_bytes()).await;
        let _ = file.write_all(b"\n").await;
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_owned(),
    }
}

/// What the supervisor shares with its owner.
#[derive(Debug, Default)]
pub struct SupervisorStatus {
    pub child_pid: AtomicU32,
    pub restarts: AtomicU64,
    /// Causes of the restarts so far: `exited`, `killed` or `unresponsive`.
    pub causes: Mutex<Vec<&'static str>>,
}

impl SupervisorStatus {
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Prometheus text: restarts by cause.
    pub fn render(&self) -> String {
        let causes = self.causes.lock().map(|h| h.clone()).unwrap_or_default();
        let mut out = String::from(
            "# HELP respawn_supervisor_restarts_total Zone server restarts by the local supervisor, by cause.\n\
             # TYPE respawn_supervisor_restarts_total counter\n",
        );
        for cause in ["exited", "killed", "unresponsive"] {
            let n = causes.iter().filter(|c| **c == cause).count();
            out.push_str(&format!("respawn_supervisor_restarts_total{{cause=\"{cause}\"}} {n}\n"));
        }
        out
    }
}

/// Runs the zone server child and keeps it running.
#[derive(Debug)]
pub struct Supervisor {
    pub addr: SocketAddr,
    pub status: Arc<SupervisorStatus>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
    admin_token: String,
}

impl Supervisor {
    /// Starts the child; `status` is shared with whoever reports on it.
    pub async fn start(spec: ChildSpec, listen: SocketAddr, status: Arc<SupervisorStatus>) -> Result<Self> {
        let (child, addr) = spec.spawn(listen).await?;
        status.child_pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
        let stop = CancellationToken::new();
        let admin_token = spec.admin_token.clone();
        let task = tokio::spawn(supervise(spec, child, addr, stop.clone(), status.clone()));
        Ok(Self { addr, status, stop, task, admin_token })
    }

    /// Resolves only if supervision gave up.
    pub async fn ended(&self) -> anyhow::Error {
        loop {
            if self.task.is_finished() {
                return anyhow!("the zone server could not be kept running; see its log");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Drains the zone server and waits for it to exit.
    pub async fn stop(self) {
        self.stop.cancel();
        let drain = respawn_api::admin::ZoneAdmin::new(self.admin_token.as_str()).drain(&self.addr.to_string()).await;
        if let Err(e) = drain {
            say(&format!("drain request failed: {e}"));
        }
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => say(&format!("zone server: {e}")),
            _ => say("zone server did not stop in time; it was killed"),
        }
    }
}

/// Waits for the child to exit, or to fail `HEALTH_FAILURES` health checks in a row.
async fn watch(
    child: &mut Child,
    addr: SocketAddr,
    stop: &CancellationToken,
) -> Result<Option<(&'static str, String)>> {
    let mut every = tokio::time::interval(HEALTH_EVERY);
    every.tick().await;
    let mut failures = 0;
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                let cause = if status.code().is_some() { "exited" } else { "killed" };
                return Ok(Some((cause, describe(status))));
            }
            _ = stop.cancelled() => return Ok(None),
            _ = every.tick() => {
                let healthy = matches!(
                    tokio::time::timeout(HEALTH_EVERY, http::request(&addr.to_string(), "GET", "/healthz", None)).await,
                    Ok(Ok((200, _)))
                );
                failures = if healthy { 0 } else { failures + 1 };
                if failures >= HEALTH_FAILURES {
                    let _ = child.kill().await;
                    let detail = format!("failed {failures} health checks in a row; killed");
                    return Ok(Some(("unresponsive", detail)));
                }
            }
        }
    }
}

async fn supervise(
    spec: ChildSpec,
    mut child: Child,
    addr: SocketAddr,
    stop: CancellationToken,
    status: Arc<SupervisorStatus>,
) -> Result<()> {
    let mut backoff = Duration::ZERO;
    loop {
        let started = Instant::now();
        let Some((cause, detail)) = watch(&mut child, addr, &stop).await? else {
            // `stop` asked for a drain; give it time, then insist.
            return match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(exit) => {
                    say(&format!("zone server {}", describe(exit?)));
                    Ok(())
                }
                Err(_) => Ok(child.kill().await?),
            };
        };
        if stop.is_cancelled() {
            return Ok(());
        }
        // Only a process that dies within a second of starting is in a crash
        // loop; anything that ran longer is restarted at once.
        if started.elapsed() > Duration::from_secs(1) {
            backoff = Duration::ZERO;
        }
        say(&format!(
            "zone server {detail} after {:.1} s; restarting{}",
            started.elapsed().as_secs_f64(),
            if backoff.is_zero() { " now".to_owned() } else { format!(" in {} ms", backoff.as_millis()) }
        ));
        tracing::warn!(cause, detail = %detail, "zone server died; restarting");
        tokio::time::sleep(backoff).await;
        // A crash loop backs off; a single crash restarts at once.
        backoff = (backoff * 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
        let mut attempts = 0;
        child = loop {
            match spec.spawn(addr).await {
                Ok((child, _)) => break child,
                Err(e) if attempts < 5 => {
                    attempts += 1;
                    say(&format!("zone server restart failed ({e}); retrying"));
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(e),
            }
        };
        status.child_pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
        status.restarts.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut causes) = status.causes.lock() {
            causes.push(cause);
        }
        say(&format!("zone server restarted on {addr}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_metric_counts_by_cause() {
        let status = SupervisorStatus::default();
        status.causes.lock().expect("lock").push("killed");
        let text = status.render();
        assert!(text.contains("respawn_supervisor_restarts_total{cause=\"killed\"} 1"));
        assert!(text.contains("respawn_supervisor_restarts_total{cause=\"unresponsive\"} 0"));
    }
}
