//! The container image the Dockerfile makes, and the compose stack, run:
//! `scripts/image build` builds the Dockerfile's runtime stage from this
//! run's binary on a Debian base made from Debian's packages, and
//! `scripts/image local-images` the stack's other images from what is at
//! hand (scripts/test does both, naming the image in `RESPAWN_TEST_IMAGE`,
//! and exports podman's configuration and podman-compose). The image must
//! answer its health and readiness checks, play a bot game and stop cleanly
//! on SIGTERM; the stack must play one too and store its events.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use respawn_api::http;
use respawn_api::overview::Status;
use respawn_harness::process::free_port;
use respawn_harness::{unique_suffix, wait_until};
use serde_json::Value;

/// Podman with the configuration scripts/image writes (`CONTAINERS_CONF`:
/// runc and cgroupfs, the containers' limits).
fn podman(args: &[&str]) -> Result<Output> {
    Command::new("podman").args(args).output().context("cannot run podman: scripts/image install installs it")
}

fn image() -> Result<String> {
    std::env::var("RESPAWN_TEST_IMAGE").context("run through scripts/test: it builds the image")
}

/// The `--json` report of `respawn loadgen` (run here or in a container):
/// every client connected and got updates, and played.
fn a_game_was_played(report: &[u8], clients: u64) -> Result<()> {
    let r: Value = serde_json::from_slice(report).context("loadgen's report")?;
    assert_eq!((r["connected"].as_u64(), r["failed_connects"].as_u64()), (Some(clients), Some(0)), "{r}");
    assert!(r["updates_per_client_per_s_min"].as_f64().is_some_and(|u| u > 0.0), "every client got updates: {r}");
    assert!(r["commands_sent"].as_u64().is_some_and(|c| c > 0), "{r}");
    assert_eq!(r["commands_rejected"].as_u64(), Some(0), "{r}");
    Ok(())
}

/// A started container, removed however the test ends.
struct Container {
    name: String,
}

impl Container {
    fn logs(&self) -> String {
        podman(&["logs", &self.name]).map_or_else(
            |e| e.to_string(),
            |o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "1", &self.name]);
    }
}

async fn answers(addr: &str, path: &str) -> Result<bool> {
    Ok(http::exchange(addr, "GET", path, None, None).await.is_ok_and(|a| a.status == 200))
}

#[tokio::test]
async fn the_image_answers_health_and_readiness_plays_a_bot_game_and_stops_on_sigterm() -> Result<()> {
    let image = image()?;
    let (web, zone) = (format!("127.0.0.1:{}", free_port()?), format!("127.0.0.1:{}", free_port()?));
    let name = format!("respawn-test-{}", unique_suffix());
    let started = podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        &image,
        "up",
        "--bots",
        "2",
        "--listen",
        &web,
        "--zone-listen",
        &zone,
        "--data-dir",
        "/var/lib/respawn/data",
    ])?;
    if !started.status.success() {
        bail!("podman run failed: {}", String::from_utf8_lossy(&started.stderr));
    }
    let container = Container { name };

    // The zone server and the platform server, each healthy and then ready.
    for addr in [&zone, &web] {
        let ready = wait_until(&format!("{addr} ready"), Duration::from_secs(60), || async {
            Ok(answers(addr, "/healthz").await? && answers(addr, "/readyz").await?)
        })
        .await;
        if let Err(e) = ready {
            bail!("{e}; the container's logs:\n{}", container.logs());
        }
    }

    // A bot game from outside the container: ten players sign in as guests
    // through the platform and play on the zone server.
    let game = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["loadgen", "--addr", &zone, "--platform", &web, "--clients", "10", "--ramp-secs", "1"])
        .args(["--hold-secs", "3", "--zone", "meadow", "--zone", "caverns", "--json"])
        .output()?;
    let said = String::from_utf8_lossy(&game.stderr);
    assert!(game.status.success(), "loadgen against the image: {said}\n{}", container.logs());
    a_game_was_played(&game.stdout, 10)?;

    // SIGTERM: `up` stops its bots, drains the zone server and exits 0.
    let stopped = podman(&["stop", "--time", "60", &container.name])?;
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &container.name])?;
    let logs = container.logs();
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "0", "exit code after SIGTERM; logs:\n{logs}");
    assert!(logs.contains("Respawn is up.") && logs.contains("stopped"), "{logs}");
    Ok(())
}

/// deploy/compose.yaml with deploy/compose/local.yaml's images, started
/// under a project of its own, taken down (volumes too) however the test ends.
struct Stack {
    project: String,
    env: Vec<(&'static str, String)>,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Result<Output> {
        let tool =
            std::env::var("RESPAWN_PODMAN_COMPOSE").context("run through scripts/test: it installs podman-compose")?;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Command::new(tool)
            .current_dir(repo)
            .args(["--project-name", &self.project, "-f", "deploy/compose.yaml", "-f", "deploy/compose/local.yaml"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .context("cannot run podman-compose")
    }

    fn logs(&self, service: &str) -> String {
        self.compose(&["logs", service]).map_or_else(
            |e| e.to_string(),
            |o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--volumes", "--timeout", "5"]);
    }
}

/// The services the stack runs here: all but Grafana, which has no local
/// image (its provisioning is checked by scripts/check-deploy).
const SERVICES: [&str; 9] =
    ["redis", "mongodb", "kafka", "kafka-topics", "mysql", "platform", "zone-1", "zone-2", "prometheus"];

#[tokio::test]
async fn the_compose_stack_on_local_images_plays_a_bot_game_and_stores_its_events() -> Result<()> {
    let image = image()?;
    let secret = || respawn_token::random_hex(32);
    let server_key = secret()?;
    let credentials = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["server-credential", "--key", &server_key, "zone-1", "zone-2"])
        .output()?;
    let credentials = String::from_utf8(credentials.stdout)?;
    let mut credentials = credentials.lines().map(str::to_owned);
    let operator = secret()?;
    let stack = Stack {
        project: format!("respawn-test-{}", unique_suffix()),
        env: vec![
            ("RESPAWN_IMAGE", image.clone()),
            ("RESPAWN_TOKEN_KEY", secret()?),
            ("RESPAWN_SERVER_KEY", server_key.clone()),
            ("RESPAWN_OPERATOR_TOKEN", operator.clone()),
            ("RESPAWN_MYSQL_PASSWORD", secret()?),
            ("GRAFANA_ADMIN_PASSWORD", secret()?),
            ("RESPAWN_ZONE_1_SERVER_TOKEN", credentials.next().context("zone-1's credential")?),
            ("RESPAWN_ZONE_2_SERVER_TOKEN", credentials.next().context("zone-2's credential")?),
        ],
    };
    // podman 4.3 cannot wait for a healthy dependency: every service starts
    // at once, and each retries what it needs until it answers.
    let up = stack.compose(&[&["up", "--detach", "--no-deps"][..], &SERVICES[..]].concat())?;
    assert!(up.status.success(), "podman-compose up: {}", String::from_utf8_lossy(&up.stderr));

    // Published on this machine: the platform (ready once MySQL answers) and both zone servers.
    for addr in ["127.0.0.1:7360", "127.0.0.1:7350", "127.0.0.1:7351"] {
        let ready = wait_until(&format!("{addr} ready"), Duration::from_secs(120), || async {
            Ok(answers(addr, "/healthz").await? && answers(addr, "/readyz").await?)
        })
        .await;
        if let Err(e) = ready {
            bail!("{e}\nplatform:\n{}\nzone-1:\n{}", stack.logs("platform"), stack.logs("zone-1"));
        }
    }
    let ctl = |args: &[&str]| -> Result<String> {
        let out = Command::new(env!("CARGO_BIN_EXE_respawn"))
            .args(["ctl", "--endpoint", "127.0.0.1:7360", "--token", &operator])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("ctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    wait_until("both zone servers registered, the zones hosted", Duration::from_secs(60), || async {
        let status: Status = serde_json::from_str(&ctl(&["status", "--json"])?)?;
        Ok(status.servers == 2 && status.zones == 2 && status.ledger == "mysql")
    })
    .await?;

    // A bot game from inside the stack's network, as players reach it: signed
    // in through the platform, sent to the zone servers by their names.
    let network = format!("--network={}_default", stack.project);
    let game = podman(&[
        "run",
        "--rm",
        &network,
        &image,
        "loadgen",
        "--addr",
        "zone-1:7350",
        "--platform",
        "platform:7360",
        "--clients",
        "8",
        "--ramp-secs",
        "1",
        "--hold-secs",
        "3",
        "--zone",
        "meadow",
        "--zone",
        "caverns",
        "--json",
    ])?;
    assert!(game.status.success(), "loadgen in the stack: {}", String::from_utf8_lossy(&game.stderr));
    a_game_was_played(&game.stdout, 8)?;

    // Its players' joins went zone → outbox → Kafka (Tansu) → the platform's consumer → MySQL (MariaDB).
    wait_until("the game's joins stored in MySQL", Duration::from_secs(60), || async {
        let page: Value =
            serde_json::from_str(&ctl(&["events", "--kind", "player_joined", "--limit", "50", "--json"])?)?;
        Ok(page["events"].as_array().is_some_and(|e| e.len() >= 8))
    })
    .await?;

    // Prometheus scrapes all three servers by their names and loaded the guide's alerts.
    let prometheus = "127.0.0.1:9090";
    wait_until("Prometheus scraping every server", Duration::from_secs(60), || async {
        let answer = http::exchange(prometheus, "GET", "/api/v1/targets", None, None).await?;
        let targets: Value = serde_json::from_str(&answer.body)?;
        let up =
            targets["data"]["activeTargets"].as_array().map_or(0, |t| t.iter().filter(|t| t["health"] == "up").count());
        Ok(up == 3)
    })
    .await?;
    let rules: Value =
        serde_json::from_str(&http::exchange(prometheus, "GET", "/api/v1/rules", None, None).await?.body)?;
    let groups = rules["data"]["groups"].as_array().map_or(0, Vec::len);
    assert!(groups > 0, "the alert rules are loaded: {rules}");
    Ok(())
}
