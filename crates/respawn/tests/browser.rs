//! End-to-end: headless Chromium opens the play page served by `respawn up`,
//! joins, moves with the keyboard, and the server confirms the movement.
//! Also: `up` restarts a zone server that was killed, and stops cleanly.
//!
//! Needs Debian's `chromium` (scripts/test installs it), driven over the
//! DevTools protocol by chromiumoxide. Screenshots are saved to `target/e2e/`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chromiumoxide::browser::BrowserConfig;
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::input::{DispatchKeyEventParams, DispatchKeyEventType};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::layout::Point;
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::Page;
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::TempDir;

/// `respawn up` on free ports; killed on drop.
struct Up {
    child: Child,
    play: String,
    zone_addr: String,
    /// The dashboard's URL and the operator token `up` printed.
    dashboard: (String, String),
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    _data: TempDir,
}

impl Up {
    fn start(bots: u32) -> Result<Self> {
        Self::start_with(bots, None)
    }

    /// `respawn up` with the zones of `zones` (a zone config file's text).
    fn start_with(bots: u32, zones: Option<&str>) -> Result<Self> {
        let data = TempDir::new("up")?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_respawn"));
        command
            .args(["up", "--listen", "127.0.0.1:0", "--zone-listen", "127.0.0.1:0", "--bots", &bots.to_string()])
            .arg("--data-dir")
            .arg(data.path());
        if let Some(zones) = zones {
            let path = data.path().join("zones.toml");
            std::fs::write(&path, zones)?;
            command.arg("--zone-config").arg(path);
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (mut play, mut zone_addr, mut dashboard) = (None, None, None);
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(url) = line.trim().strip_prefix("play:") {
                play = Some(url.trim().to_owned());
            }
            if let Some(rest) = line.trim().strip_prefix("dashboard:") {
                let mut words = rest.split_whitespace();
                let url = words.next().unwrap_or_default().to_owned();
                let token = words.last().unwrap_or_default().trim_end_matches(')').to_owned();
                dashboard = Some((url, token));
            }
            if let Some(rest) = line.trim().strip_prefix("metrics:") {
                let url = rest.split_whitespace().next().unwrap_or_default();
                zone_addr = url.strip_prefix("http://").and_then(|u| u.strip_suffix("/metrics")).map(str::to_owned);
            }
            if line.starts_with("Ctrl-C") {
                break;
            }
        }
        let (Some(play), Some(zone_addr), Some(dashboard)) = (play, zone_addr, dashboard) else {
            bail!(
                "respawn up did not print its URLs; stderr:\n{}",
                stderr.lock().map(|s| s.clone()).unwrap_or_default()
            );
        };
        Ok(Self { child, play, zone_addr, dashboard, stderr, _data: data })
    }

    fn log(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{needle:?} not logged within {limit:?}; log:\n{}", self.log())
    }

    /// The zone server child process.
    fn zone_pid(&self) -> Result<u32> {
        // Children are listed per spawning thread; look through every thread.
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()))?;
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
                return Ok(pid);
            }
        }
        bail!("no child process")
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> Result<std::process::ExitStatus> {
        signal("TERM", self.child.id())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("respawn up did not stop; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(name: &str, pid: u32) -> Result<()> {
    let ok = Command::new("kill").args([format!("-{name}"), pid.to_string()]).status()?.success();
    if ok {
        Ok(())
    } else {
        bail!("kill -{name} {pid} failed")
    }
}

async fn metric(zone_addr: &str, series: &str) -> Result<f64> {
    let text = respawn_api::http::scrape(zone_addr).await?;
    Ok(support::metric(&text, series).unwrap_or(0.0))
}

/// A headless Chromium driven over the DevTools protocol by chromiumoxide.
struct Browser {
    browser: chromiumoxide::Browser,
    /// Drives the DevTools connection; ends with the browser.
    handler: tokio::task::JoinHandle<()>,
    _profile: TempDir,
}

impl Browser {
    async fn launch() -> Result<Self> {
        let profile = TempDir::new("chromium")?;
        let chromium = std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("chromium")).find(|p| p.is_file()))
            .context("no chromium on PATH: install Debian's chromium package (scripts/test does)")?;
        // Debian's chromium, with nothing of its own reaching out: this
        // machine's network is closed, and refused connections are noise.
        let config = BrowserConfig::builder()
            .chrome_executable(chromium)
            .no_sandbox()
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .window_size(1000, 700)
            .user_data_dir(profile.path())
            .build()
            .map_err(|e| anyhow!("chromium configuration: {e}"))?;
        let (browser, mut handler) = chromiumoxide::Browser::launch(config)
            .await
            .context("cannot start chromium: install Debian's chromium package (scripts/test does)")?;
        let handler = tokio::spawn(async move { while handler.next().await.is_some_and(|event| event.is_ok()) {} });
        Ok(Self { browser, handler, _profile: profile })
    }

    /// Opens `url` in a new tab.
    async fn open(&self, url: &str) -> Result<Page> {
        Ok(self.browser.new_page(url).await?)
    }

    /// Polls `expr` until it is true (`limit` at most). A page being
    /// navigated (a reload) cannot evaluate for a moment: that is retried too.
    async fn wait_for(&self, page: &Page, expr: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.eval(page, expr).await;
            match seen {
                Ok(Value::Bool(true)) => return Ok(()),
                Ok(_) if Instant::now() > deadline => {
                    // What the page told its player, if it has a log: the reason, usually.
                    let said = self.eval(page, "document.getElementById('log')?.innerText ?? ''").await;
                    bail!("never true in the page: {expr}; the page's log: {}", said.unwrap_or_default())
                }
                Err(e) if Instant::now() > deadline => bail!("never true in the page: {expr}: {e}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn screenshot(&self, page: &Page, name: &str) -> Result<()> {
        let png = page.screenshot(ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).build()).await?;
        assert!(png.starts_with(b"\x89PNG"), "a real PNG screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/e2e");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), &png)?;
        Ok(())
    }

    /// `expr`'s value (null when it has none), evaluated as a script in the page.
    async fn eval(&self, page: &Page, expr: &str) -> Result<Value> {
        Ok(page.evaluate_expression(expr).await?.value().cloned().unwrap_or(Value::Null))
    }

    /// A left click at (`x`, `y`), in the page's viewport coordinates.
    async fn click(&self, page: &Page, x: f64, y: f64) -> Result<()> {
        page.click(Point { x, y }).await?;
        Ok(())
    }

    async fn key(&self, page: &Page, kind: DispatchKeyEventType, key: &str, code: &str, vk: i64) -> Result<()> {
        let event = DispatchKeyEventParams::builder()
            .r#type(kind)
            .key(key)
            .code(code)
            .windows_virtual_key_code(vk)
            .build()
            .map_err(|e| anyhow!("key event: {e}"))?;
        page.execute(event).await?;
        Ok(())
    }

    /// The page's viewport, `width` × `height` CSS pixels.
    async fn viewport(&self, page: &Page, width: i64, height: i64) -> Result<()> {
        page.execute(SetDeviceMetricsOverrideParams::new(width, height, 1.0, false)).await?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Dropping chromiumoxide's Browser kills the process it launched.
        self.handler.abort();
    }
}

/// One step of the page's player towards (`dx`, `dy`) away with an arrow
/// key, along the longer axis unless that one was blocked last time (an
/// obstacle); answers which axis is blocked now, if any.
async fn step_toward(b: &Browser, s: &Page, dx: f64, dy: f64, blocked: Option<bool>) -> Result<Option<bool>> {
    let horizontal = (dx.abs() >= dy.abs()) != (blocked == Some(dx.abs() >= dy.abs()));
    let (key, code, vk) = match (horizontal, dx >= 0.0, dy >= 0.0) {
        (true, true, _) => ("ArrowRight", "ArrowRight", 39),
        (true, false, _) => ("ArrowLeft", "ArrowLeft", 37),
        (false, _, true) => ("ArrowDown", "ArrowDown", 40),
        (false, _, false) => ("ArrowUp", "ArrowUp", 38),
    };
    let before = position(b, s).await?;
    let along = if horizontal { dx.abs() } else { dy.abs() };
    // 600 cm/s at most: hold the key about as long as the way there takes.
    let hold = Duration::from_millis((along / 0.6).clamp(100.0, 400.0) as u64);
    b.key(s, DispatchKeyEventType::KeyDown, key, code, vk).await?;
    tokio::time::sleep(hold).await;
    b.key(s, DispatchKeyEventType::KeyUp, key, code, vk).await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let after = position(b, s).await?;
    let moved = (after.0 - before.0).abs() + (after.1 - before.1).abs();
    Ok((moved < 10.0).then_some(horizontal))
}

/// Walks the page's player to gold with the arrow keys and picks it up with
/// `e`, as a player would, until the character has some (`limit` at most).
async fn earn_gold(b: &Browser, s: &Page, limit: Duration) -> Result<u64> {
    let deadline = Instant::now() + limit;
    let mut blocked = None;
    loop {
        let gold = b.eval(s, "window.respawn.gold() || 0").await?.as_u64().unwrap_or(0);
        if gold > 0 {
            return Ok(gold);
        }
        if Instant::now() > deadline {
            bail!("no gold picked up within {limit:?}");
        }
        let target = b.eval(s, "window.respawn.nearestGold()").await?;
        let (Some(dx), Some(dy), Some(d), Some(range)) =
            (target["dx"].as_f64(), target["dy"].as_f64(), target["d"].as_f64(), target["range"].as_f64())
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if d < range * 0.8 {
            b.key(s, DispatchKeyEventType::KeyDown, "e", "KeyE", 69).await?;
            b.key(s, DispatchKeyEventType::KeyUp, "e", "KeyE", 69).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        blocked = step_toward(b, s, dx, dy, blocked).await?;
    }
}

/// Walks the page's player into the nearest exit, as a player would, until
/// the page has followed it to another zone; answers that zone.
async fn walk_through_exit(b: &Browser, s: &Page, limit: Duration) -> Result<String> {
    let deadline = Instant::now() + limit;
    let (from, mut blocked) = (b.eval(s, "window.respawn.zone()").await?, None);
    loop {
        let zone = b.eval(s, "window.respawn.joined() && window.respawn.zone()").await?;
        if zone.is_string() && zone != from {
            return Ok(zone.as_str().unwrap_or_default().to_owned());
        }
        if Instant::now() > deadline {
            bail!("never walked out of {from} within {limit:?}");
        }
        let exit = b.eval(s, "window.respawn.nearestExit()").await?;
        match (exit["dx"].as_f64(), exit["dy"].as_f64()) {
            (Some(dx), Some(dy)) => blocked = step_toward(b, s, dx, dy, blocked).await?,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn position(b: &Browser, s: &Page) -> Result<(f64, f64)> {
    let v = b.eval(s, "window.respawn.position()").await?;
    Ok((v["x"].as_f64().unwrap_or(f64::NAN), v["y"].as_f64().unwrap_or(f64::NAN)))
}

#[tokio::test]
async fn browser_joins_moves_and_the_server_sees_it() -> Result<()> {
    let up = Up::start_with(2, Some(respawn_harness::zone::SMALL_ZONES_WITH_EXITS))?;
    let browser = Browser::launch().await?;
    let s = browser.open(&format!("{}?zone=meadow", up.play)).await?;

    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.eval(&s, "!!(window.respawn && window.respawn.joined())").await? != json!(true) {
        if Instant::now() > deadline {
            bail!("the page never joined; up log:\n{}", up.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(browser.eval(&s, "window.respawn.zone()").await?, json!("meadow"));
    let series = r#"respawn_zone_commands_received_total{zone="meadow"}"#;
    let commands_before = metric(&up.zone_addr, series).await?;
    let start = position(&browser, &s).await?;

    // Hold a direction for a second; try the others if a wall is in the way.
    // Up and down first: meadow's exit is a strip along its east edge, which
    // walking east could reach (a travel, not a move).
    let mut moved = None;
    for (key, code, vk) in [("s", "KeyS", 83), ("w", "KeyW", 87), ("a", "KeyA", 65), ("d", "KeyD", 68)] {
        let before = position(&browser, &s).await?;
        browser.key(&s, DispatchKeyEventType::KeyDown, key, code, vk).await?;
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        browser.key(&s, DispatchKeyEventType::KeyUp, key, code, vk).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = position(&browser, &s).await?;
        if (after.0 - before.0).abs() + (after.1 - before.1).abs() > 200.0 {
            moved = Some((key, before, after));
            break;
        }
    }
    let (key, before, after) = moved.ok_or_else(|| anyhow!("no key moved the player from {start:?}"))?;
    assert_eq!(browser.eval(&s, "window.respawn.zone()").await?, json!("meadow"), "a move, not a travel");
    // Positions on the page come only from the server's state updates, so a
    // changed position is the server's own account of the movement.
    let max_step = 30.0 * 20.0 * 1.5; // max speed (cm/tick) x ticks in the hold, with slack
    let dist = ((after.0 - before.0).powi(2) + (after.1 - before.1).powi(2)).sqrt();
    assert!(dist <= max_step, "moved {dist} cm with {key:?}, faster than the speed limit allows");
    let commands_after = metric(&up.zone_addr, series).await?;
    assert!(commands_after > commands_before, "the zone server received the page's move commands");

    browser.screenshot(&s, "play.png").await?;

    // The player picks up gold; it stays through a reload, a switch to
    // another zone (the character leaves meadow, is saved, and arrives in
    // caverns) and a walk through an exit back to meadow.
    let gold = earn_gold(&browser, &s, Duration::from_secs(60)).await?;
    browser.eval(&s, "window.beforeReload = true; location.reload(); 0").await?;
    let reloaded = "!window.beforeReload && !!(window.respawn && window.respawn.joined())";
    browser.wait_for(&s, reloaded, Duration::from_secs(20)).await?;
    browser.wait_for(&s, &format!("window.respawn.gold() === {gold}"), Duration::from_secs(5)).await?;
    let switch = "const z = document.getElementById('zone'); z.value = 'caverns'; \
                  z.dispatchEvent(new Event('change')); 0";
    browser.eval(&s, switch).await?;
    let in_caverns = format!("window.respawn.zone() === 'caverns' && window.respawn.gold() === {gold}");
    browser.wait_for(&s, &in_caverns, Duration::from_secs(20)).await?;
    // The player walks into caverns' exit; the page follows the character back to meadow.
    assert_eq!(walk_through_exit(&browser, &s, Duration::from_secs(30)).await?, "meadow");
    let travelled = format!("window.respawn.travels() === 1 && window.respawn.gold() === {gold}");
    browser.wait_for(&s, &travelled, Duration::from_secs(5)).await?;
    browser.screenshot(&s, "travelled.png").await?;

    // The page made a guest account: a reload signs in to the same character,
    // which can then be kept with a username and password and signed in to.
    let character = browser.eval(&s, "window.respawn.character()").await?;
    assert!(character.as_str().is_some_and(|c| c.starts_with("guest-")), "{character}");
    browser.eval(&s, "window.beforeReload = true; location.reload(); 0").await?;
    browser.wait_for(&s, reloaded, Duration::from_secs(20)).await?;
    assert_eq!(browser.eval(&s, "window.respawn.character()").await?, character, "the same character after a reload");
    let keep = "document.querySelector('#account a').click();                 document.getElementById('su-user').value = 'e2e.player';                 document.getElementById('su-pass').value = 'browser password';                 document.getElementById('signup').requestSubmit(); 0";
    browser.eval(&s, keep).await?;
    let kept = "JSON.parse(localStorage.getItem('respawn.account')).username === 'e2e.player'";
    browser.wait_for(&s, kept, Duration::from_secs(10)).await?;
    let platform = up.play.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let signed_in = respawn_api::players::PlayerApi::new(platform)
        .sign_in(&respawn_api::players::SignIn::password("E2E.player", "browser password"))
        .await?;
    assert_eq!(json!(signed_in.character), character, "the password signs in to the page's character");
    // Signed out, the page forgets the account; its sign-in form brings the character back.
    browser
        .eval(
            &s,
            "Array.from(document.querySelectorAll('#account a')).find((a) => a.textContent === 'sign out').click(); 0",
        )
        .await?;
    let signed_out = "localStorage.getItem('respawn.account') === null && !window.respawn.joined()";
    browser.wait_for(&s, signed_out, Duration::from_secs(5)).await?;
    let sign_in = "document.getElementById('si-user').value = 'e2e.player'; \
                   document.getElementById('si-pass').value = 'browser password'; \
                   document.getElementById('signin').requestSubmit(); 0";
    browser.eval(&s, sign_in).await?;
    let back = format!("window.respawn.joined() && window.respawn.character() === {character}");
    browser.wait_for(&s, &back, Duration::from_secs(10)).await?;

    drop(browser);
    let status = up.terminate()?;
    assert!(status.success(), "respawn up exits 0 on SIGTERM");
    Ok(())
}

/// The page's CCU cell for `zone`, or -1 while the row is missing.
/// The dashboard page and its script are loaded.
const DASHBOARD_READY: &str = "document.readyState === 'complete' && !!document.getElementById('token')";

fn ccu_expr(zone: &str) -> String {
    format!(
        r#"Number((document.querySelector('#zones tr[data-zone="{zone}"] .ccu') || {{textContent: "-1"}}).textContent)"#
    )
}

#[tokio::test]
async fn the_dashboard_shows_ccu_live_and_its_announcement_reaches_a_player() -> Result<()> {
    let up = Up::start(0)?;
    let platform = up.play.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let (url, token) = up.dashboard.clone();
    let browser = Browser::launch().await?;
    let s = browser.open(&url).await?;
    // Loaded, its script too: the form is there before dashboard.js wires it.
    browser.wait_for(&s, DASHBOARD_READY, Duration::from_secs(10)).await?;
    // A wrong token is refused on the page.
    browser
        .eval(&s, "document.getElementById('token').value = 'not-a-token'; document.getElementById('login').click(); 0")
        .await?;
    browser
        .wait_for(&s, "document.getElementById('signin-error').textContent.includes('401')", Duration::from_secs(5))
        .await?;
    let sign_in = format!(
        "document.getElementById('token').value = {}; document.getElementById('login').click(); 0",
        json!(token)
    );
    browser.eval(&s, &sign_in).await?;
    browser.wait_for(&s, &format!("{} === 0", ccu_expr("meadow")), Duration::from_secs(10)).await?;

    // Players log in through the platform; the page follows without a reload.
    let mut watcher_account = respawn_client::GuestSession::sign_up(&platform).await?;
    let grant = watcher_account.play("meadow").await?;
    let mut watcher = respawn_client::Connection::connect(&grant.address).await?;
    watcher.join(grant.token, None, &grant.character_ticket, "meadow", Duration::from_secs(5)).await?;
    let mut bots = respawn_client::Fleet::spawn(
        respawn_client::Access::Login { platform: platform.clone() },
        &["meadow".to_owned()],
        3,
        "dashbot",
    );
    browser.wait_for(&s, &format!("{} === 4", ccu_expr("meadow")), Duration::from_secs(15)).await?;
    let ticking =
        r#"document.querySelector('#zones tr[data-zone="meadow"] td:nth-child(3)').textContent === 'running'"#;
    browser.wait_for(&s, ticking, Duration::from_secs(5)).await?;
    the_charts_draw_the_last_hour(&browser, &s).await?;

    // Announce from the page: nothing is sent before the confirmation.
    browser
        .eval(&s, "document.getElementById('announce-text').value = 'Dashboard says hi'; document.getElementById('announce').click(); 0")
        .await?;
    browser.wait_for(&s, "document.getElementById('confirm').style.display === 'flex'", Duration::from_secs(5)).await?;
    browser.screenshot(&s, "dashboard.png").await?;
    browser.eval(&s, "document.getElementById('confirm-yes').click(); 0").await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, watcher.next()).await.map_err(|_| anyhow!("no announcement"))??;
        match event {
            respawn_client::Event::Message(respawn_proto::server_message::Body::Notice(n))
                if n.kind == respawn_proto::NoticeKind::Announcement as i32 =>
            {
                break n.text;
            }
            respawn_client::Event::Closed { code, reason } => bail!("closed: {code} {reason}"),
            _ => {}
        }
    };
    assert_eq!(text, "Dashboard says hi");
    // The page shows the audited action.
    browser
        .wait_for(&s, "document.querySelector('#audit tbody').textContent.includes('announce')", Duration::from_secs(5))
        .await?;

    // The watcher's account, found by id and disabled from the page (it asks first): the player is kicked.
    let find = format!(
        "document.getElementById('account-name').value = '{}'; document.getElementById('account-find').click(); 0",
        watcher_account.account_id()
    );
    browser.eval(&s, &find).await?;
    browser
        .wait_for(&s, "document.getElementById('account').textContent.includes('active')", Duration::from_secs(5))
        .await?;
    let disable = "document.getElementById('account-reason').value = 'dashboard test'; \
                   document.getElementById('account-disable').click(); 0";
    browser.eval(&s, disable).await?;
    browser.wait_for(&s, "document.getElementById('confirm').style.display === 'flex'", Duration::from_secs(5)).await?;
    browser.eval(&s, "document.getElementById('confirm-yes').click(); 0").await?;
    let shown = "document.getElementById('account').textContent.includes('disabled: dashboard test')";
    browser.wait_for(&s, shown, Duration::from_secs(5)).await?;
    browser.screenshot(&s, "dashboard-account.png").await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watcher.next()).await.map_err(|_| anyhow!("the watcher was not kicked"))?? {
            respawn_client::Event::Closed { code, .. } => break code,
            _ => continue,
        }
    };
    assert_eq!(code, respawn_proto::CloseCode::Kicked.code());

    bots.halt().await;
    drop(browser);
    let status = up.terminate()?;
    assert!(status.success(), "respawn up exits 0 on SIGTERM");
    Ok(())
}

/// The dashboard's charts, in `respawn up` (embedded ledger, 4 players in
/// meadow): the CCU chart's last points are the 4 players, and its line is
/// drawn on the canvas; events stored per second were charted; the events
/// panel names the embedded ledger, not Kafka. Then, at 1280 and 1920 px
/// wide, nothing sticks out of its card (screenshots in target/e2e).
async fn the_charts_draw_the_last_hour(browser: &Browser, s: &Page) -> Result<()> {
    let ccu_charted = r#"(() => { const c = window.dashboardCharts.ccu; if (!c) return false;
        const i = c.series.findIndex((s) => s.label === 'meadow'); if (i < 1) return false;
        const v = c.data[i].filter((x) => x != null); return v.length >= 2 && v[v.length - 1] === 4; })()"#;
    browser.wait_for(s, ccu_charted, Duration::from_secs(20)).await?;
    // Where meadow's last point (4 players) belongs on the canvas, the
    // canvas has meadow's colour (its legend marker's): the point is drawn.
    let drawn = r#"(() => { const c = window.dashboardCharts.ccu;
        const i = c.series.findIndex((s) => s.label === 'meadow');
        const rgb = getComputedStyle(c.root.querySelectorAll('.u-series')[i].querySelector('.u-marker')).borderColor
          .match(/\d+/g).map(Number);
        const times = c.data[0], last = c.data[i].length - 1;
        const x = Math.round(c.valToPos(times[last], 'x', true)), y = Math.round(c.valToPos(4, 'y', true));
        const px = c.ctx.getImageData(x - 4, y - 4, 9, 9).data; let n = 0;
        for (let p = 0; p < px.length; p += 4)
          if (px[p + 3] > 0 && [0, 1, 2].every((k) => Math.abs(px[p + k] - rgb[k]) < 40)) n++;
        return n; })()"#;
    let pixels = browser.eval(s, drawn).await?.as_u64().unwrap_or(0);
    assert!(pixels > 4, "meadow's last CCU point is drawn where 4 players belong: {pixels} pixels of its colour");
    let events_charted = r#"(() => { const c = window.dashboardCharts.events;
        return !!c && c.series[1].label === 'stored in the embedded ledger' && c.data[1].some((v) => v > 0); })()"#;
    browser.wait_for(s, events_charted, Duration::from_secs(20)).await?;
    let panel = browser.eval(s, "document.getElementById('pipeline').innerText").await?;
    let panel = panel.as_str().unwrap_or_default();
    assert!(panel.contains("embedded ledger (SQLite)") && !panel.contains("Kafka"), "{panel}");

    for width in [1280, 1920] {
        browser.viewport(s, width, 1500).await?;
        // The charts follow the width (a resize event), then nothing may stick out.
        let sticking_out = r#"(() => { const out = [];
            if (document.documentElement.scrollWidth > window.innerWidth) out.push('the page scrolls sideways');
            for (const sec of document.querySelectorAll('#board section')) {
              const edge = sec.getBoundingClientRect().right, name = sec.querySelector('h2').textContent;
              if (sec.scrollWidth > sec.clientWidth + 1) out.push(name + ': ' + sec.scrollWidth + ' > ' + sec.clientWidth);
              for (const el of sec.querySelectorAll('table, .uplot, canvas'))
                if (el.getBoundingClientRect().right > edge + 1) out.push(name + ': a ' + el.tagName + ' past the edge');
            }
            return out; })()"#;
        let fits = format!("{sticking_out}.length === 0");
        if let Err(e) = browser.wait_for(s, &fits, Duration::from_secs(5)).await {
            bail!("at {width} px: {}: {e}", browser.eval(s, sticking_out).await?);
        }
        browser.screenshot(s, &format!("dashboard-{width}.png")).await?;
    }
    Ok(())
}

/// Signs the dashboard page in with `token`, once it is loaded.
async fn sign_in(browser: &Browser, s: &Page, token: &str) -> Result<()> {
    browser.wait_for(s, DASHBOARD_READY, Duration::from_secs(10)).await?;
    let sign_in = format!(
        "document.getElementById('token').value = {}; document.getElementById('login').click(); 0",
        json!(token)
    );
    browser.eval(s, &sign_in).await?;
    browser.wait_for(s, "!document.getElementById('board').hidden", Duration::from_secs(10)).await
}

/// The dashboard's time machine, from the event search: a bot's
/// `gold_changed` event is watched again, replayed from the zone's journal.
/// The page opens at the event's tick; scrubbed away and back to it, a click
/// on that player's dot shows the gold total the ledger recorded live and
/// the position an independent replay (`respawn replay --player`) finds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_machine_shows_a_searched_events_moment_from_the_journal() -> Result<()> {
    let zones = format!("[persistence]\nhistory_segment_secs = 1\n{}", respawn_harness::zone::SMALL_ZONES_WITH_EXITS);
    let up = Up::start_with(3, Some(&zones))?;
    let platform: std::net::SocketAddr = up.play.trim_start_matches("http://").trim_end_matches('/').parse()?;
    let (url, token) = up.dashboard.clone();
    let get = |path: String| {
        let token = token.clone();
        async move {
            let (status, body) = support::http(platform, "GET", &path, Some(&token)).await?;
            anyhow::Ok((status, body))
        }
    };

    // A bot finds gold: the ledger says at which tick, and its total then.
    let deadline = Instant::now() + Duration::from_secs(90);
    let event = loop {
        let (status, body) = get("/v1/events?kind=gold_changed&limit=1".into()).await?;
        let page: Value = serde_json::from_str(&body).unwrap_or_default();
        if status == 200 && page["events"][0].is_object() {
            break page["events"][0].clone();
        }
        ensure_before(deadline, "no bot found gold")?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (zone, tick, player) = (
        event["zone"].as_u64().unwrap_or(0),
        event["tick"].as_u64().unwrap_or(0),
        event["player"].as_u64().unwrap_or(0),
    );
    let detail = event["detail"].as_str().unwrap_or_default();
    let gold: u64 = detail
        .split("total: ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| anyhow!("no total in {detail:?}"))?;
    // Archived into the history within a second or so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(format!("/v1/zones/{zone}/film?from={tick}&to={tick}")).await?;
        if status == 200 {
            break;
        }
        ensure_before(deadline, &format!("tick {tick} never replayable: {status} {body}"))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Bad windows are refused with a reason.
    for (path, status, says) in [
        (format!("/v1/zones/{zone}/film?from=soon&to={tick}"), 400, "from"),
        (format!("/v1/zones/{zone}/film?from={tick}"), 400, "to"),
        (format!("/v1/zones/{zone}/film?from={tick}&to=1"), 400, "after"),
        (format!("/v1/zones/{zone}/state?tick=noon"), 400, "tick"),
        ("/v1/zones/nowhere/film?from=1&to=2".to_owned(), 404, "nowhere"),
    ] {
        let (got, body) = get(path.clone()).await?;
        assert!(got == status && body.contains(says), "{path}: {got} {body}");
    }
    // Where the player was, by the command line's replay of the same history.
    let data = up._data.path();
    let out = Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["replay", "--zone", &zone.to_string(), "--from", &tick.to_string(), "--to", &tick.to_string()])
        .args(["--player", &player.to_string(), "--json", "--config"])
        .arg(data.join("zones.toml"))
        .arg("--data-dir")
        .arg(data)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let shown: Value = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["tick"] == json!(tick) && line["players"][0].is_object())
        .ok_or_else(|| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            anyhow!("respawn replay did not show player {player} at tick {tick}: {stdout}{stderr}")
        })?;
    let (x, y) = (shown["players"][0]["x"].clone(), shown["players"][0]["y"].clone());
    assert_eq!(shown["players"][0]["gold"], json!(gold), "the replay agrees with the ledger: {shown}");

    let browser = Browser::launch().await?;
    let s = browser.open(&url).await?;
    sign_in(&browser, &s, &token).await?;
    // The event search finds the event; watching it opens the time machine at its tick.
    let search = format!(
        "document.getElementById('events-player').value = '{player}'; \
         document.getElementById('events-kind').value = 'gold_changed'; document.getElementById('events-find').click(); 0"
    );
    browser.eval(&s, &search).await?;
    let id = event["id"].as_str().unwrap_or_default().to_owned();
    let row = format!(r#"document.querySelector('#events tr[data-event="{id}"] button.watch')"#);
    browser.wait_for(&s, &format!("!!{row}"), Duration::from_secs(10)).await?;
    browser.eval(&s, &format!("{row}.click(); 0")).await?;
    let shows = |t: u64| format!("document.getElementById('tm-tick').textContent === '{t}'");
    browser.wait_for(&s, &shows(tick), Duration::from_secs(30)).await?;
    let listed = format!(r#"!!document.querySelector('#tm-events li[data-event="{id}"]')"#);
    if let Err(e) = browser.wait_for(&s, &listed, Duration::from_secs(5)).await {
        let shown = browser.eval(&s, "document.getElementById('tm-events').innerHTML").await?;
        bail!("{e}; the tick's events: {shown}");
    }

    // Scrubbed to the window's first tick, then back to the event's.
    let scrub = |index: u64| {
        format!(
            "(() => {{ const slider = document.getElementById('tm-slider'); slider.value = '{index}'; \
             slider.dispatchEvent(new Event('input')); return Number(document.getElementById('tm-tick').textContent); }})()"
        )
    };
    let first = browser.eval(&s, &scrub(0)).await?.as_u64().ok_or_else(|| anyhow!("no tick shown"))?;
    assert!(first < tick, "the window starts before the event: {first} vs {tick}");
    let back = browser.eval(&s, &scrub(tick - first)).await?;
    assert_eq!(back, json!(tick), "scrubbed back to the event's tick");

    // A click on the player's dot: its state at that tick, replayed from the journal.
    browser.eval(&s, "document.getElementById('tm-map').scrollIntoView({ block: 'center' }); 0").await?;
    let point = browser.eval(&s, &format!("window.timeMachine.pointOf('players', {player})")).await?;
    let (px, py) = (point["x"].as_f64(), point["y"].as_f64());
    let (Some(px), Some(py)) = (px, py) else { bail!("player {player} is not on the map: {point}") };
    browser.click(&s, px, py).await?;
    let state = format!(
        r#"(() => {{ const e = document.getElementById('tm-entity'), t = e.textContent;
            return e.dataset.tick === '{tick}' && t.startsWith('player {player} ') && t.includes('"gold": {gold}')
              && t.includes('"x": {x},') && t.includes('"y": {y},'); }})()"#
    );
    let seen = browser.wait_for(&s, &state, Duration::from_secs(20)).await;
    browser.screenshot(&s, "time-machine.png").await?;
    if let Err(e) = seen {
        let shown = browser.eval(&s, "document.getElementById('tm-entity').textContent").await?;
        bail!("{e}; the page shows: {shown}; expected gold {gold} at ({x}, {y})");
    }
    // Scrubbed on, the selection follows: its state at the tick the slider rests on.
    assert_eq!(browser.eval(&s, &scrub(0)).await?, json!(first));
    let followed = format!(
        "(() => {{ const e = document.getElementById('tm-entity'); \
            return e.dataset.tick === '{first}' && e.textContent.includes('player {player} '); }})()"
    );
    browser.wait_for(&s, &followed, Duration::from_secs(10)).await?;
    drop(browser);
    let status = up.terminate()?;
    assert!(status.success());
    Ok(())
}

fn ensure_before(deadline: Instant, what: &str) -> Result<()> {
    if Instant::now() > deadline {
        bail!("{what}");
    }
    Ok(())
}

#[tokio::test]
async fn up_restarts_a_killed_zone_server_and_bots_come_back() -> Result<()> {
    let up = Up::start(4)?;
    let players = |addr: String| async move {
        let a = metric(&addr, r#"respawn_zone_players{zone="meadow"}"#).await.unwrap_or(0.0);
        let b = metric(&addr, r#"respawn_zone_players{zone="caverns"}"#).await.unwrap_or(0.0);
        a + b
    };
    let wait_players = |want: f64| {
        let addr = up.zone_addr.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if players(addr.clone()).await == want {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("never reached {want} players");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_players(4.0).await?;
    let first = up.zone_pid()?;
    signal("KILL", first)?;
    up.wait_log("was killed by signal 9", Duration::from_secs(10)).await?;
    up.wait_log("zone server restarted", Duration::from_secs(20)).await?;
    assert_ne!(up.zone_pid()?, first, "a new zone server process runs");
    wait_players(4.0).await.map_err(|e| anyhow!("bots did not reconnect: {e}\n{}", up.log()))?;
    let status = up.terminate()?;
    assert!(status.success());
    Ok(())
}

#[tokio::test]
async fn up_restarts_an_unresponsive_zone_server() -> Result<()> {
    let up = Up::start(2)?;
    let frozen = up.zone_pid()?;
    // A stopped process keeps its socket but answers nothing: a hang.
    signal("STOP", frozen)?;
    up.wait_log("health checks in a row", Duration::from_secs(10)).await?;
    up.wait_log("zone server restarted", Duration::from_secs(20)).await?;
    assert_ne!(up.zone_pid()?, frozen);
    let play = up.play.trim_end_matches('/').trim_start_matches("http://").to_owned();
    let metrics = respawn_api::http::scrape(&play).await?;
    assert_eq!(support::metric(&metrics, r#"respawn_supervisor_restarts_total{cause="unresponsive"}"#), Some(1.0));
    let status = up.terminate()?;
    assert!(status.success());
    Ok(())
}

/// The play page follows its zone across a live hand-off: a rollout moves
/// the zone to a standby server of the second build, the page gets the
/// migrate notice, joins the new server with its resume token and keeps its
/// character. The page is served by `respawn platform` (at `/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_play_page_follows_its_zone_to_another_server() -> Result<()> {
    use support::{Platform, ZoneProcess, TEST_CONFIG};
    const OPERATOR: &str = "browser-test-operator-token";
    let next = support::next_build();
    let platform = Platform::for_rollouts(OPERATOR).await?;
    let data = TempDir::new("browser-handoff")?;
    let zone = |bin: &str, outbox: &str, standby: bool| {
        let (addr, credential) = (platform.addr.to_string(), support::credential(outbox));
        let outbox = data.path().join(outbox).display().to_string();
        let mut args = vec!["--platform", &addr, "--server-token", &credential, "--outbox-dir", &outbox];
        if standby {
            args.push("--standby");
        }
        ZoneProcess::start_build(bin, TEST_CONFIG, &data.path().join("state"), &args)
    };
    let old = zone(env!("CARGO_BIN_EXE_respawn"), "outbox-old", false)?;
    let new = zone(&next, "outbox-new", true)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while respawn_api::http::request(&platform.addr.to_string(), "GET", "/v1/lobby", None)
        .await?
        .1
        .matches("\"name\"")
        .count()
        < 2
    {
        if Instant::now() > deadline {
            bail!("the zones never opened for login");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let browser = Browser::launch().await?;
    let s = browser.open(&format!("http://{}/?zone=meadow", platform.addr)).await?;
    browser.wait_for(&s, "!!(window.respawn && window.respawn.joined())", Duration::from_secs(20)).await?;
    assert_eq!(browser.eval(&s, "window.respawn.server()").await?, json!(old.ws_url()));

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_respawn"))
        .args(["ctl", "rollout", "--handoff", "--to", &new.ws_url()])
        .env("RESPAWN_PLATFORM_URL", platform.addr.to_string())
        .env("RESPAWN_OPERATOR_TOKEN", OPERATOR)
        .output()
        .await?;
    assert!(
        out.status.success(),
        "rollout: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let followed = format!(
        "window.respawn.migrations() === 1 && window.respawn.joined() && window.respawn.resumed() && window.respawn.server() === {}",
        json!(new.ws_url())
    );
    browser.wait_for(&s, &followed, Duration::from_secs(10)).await?;
    assert_eq!(browser.eval(&s, "window.respawn.zone()").await?, json!("meadow"));
    // Still playing: updates keep arriving from the new server.
    let updates = browser.eval(&s, "window.respawn.updates()").await?.as_f64().unwrap_or(0.0);
    browser.wait_for(&s, &format!("window.respawn.updates() > {}", updates + 20.0), Duration::from_secs(5)).await?;
    browser.screenshot(&s, "handoff.png").await?;
    Ok(())
}

/// The play page's server falls silent (its process stopped: the socket
/// stays open and says nothing, as when a host dies): the page leaves it
/// after a second, a spare started with `--take-over` adopts the zone once
/// the stopped server's lease runs out, the platform sends the page there
/// (the newest lease holder) and the page gets its character back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_play_page_finds_its_zone_on_a_spare_when_its_server_falls_silent() -> Result<()> {
    use support::{Platform, ZoneProcess, TEST_CONFIG};
    let platform = Platform::for_rollouts("browser-failover-operator-token").await?;
    let data = TempDir::new("browser-failover")?;
    let zone = |name: &str, spare: bool| {
        let (addr, credential) = (platform.addr.to_string(), support::credential(name));
        let outbox = data.path().join(name).display().to_string();
        let mut args = vec!["--platform", &addr, "--server-token", &credential, "--outbox-dir", &outbox];
        if spare {
            args.extend(["--standby", "--take-over"]);
        }
        ZoneProcess::start_build(env!("CARGO_BIN_EXE_respawn"), TEST_CONFIG, &data.path().join("state"), &args)
    };
    let owner = zone("zone-owner", false)?;
    let spare = zone("zone-spare", true)?;
    let browser = Browser::launch().await?;
    let s = browser.open(&format!("http://{}/?zone=meadow", platform.addr)).await?;
    browser.wait_for(&s, "!!(window.respawn && window.respawn.joined())", Duration::from_secs(20)).await?;
    assert_eq!(browser.eval(&s, "window.respawn.server()").await?, json!(owner.ws_url()));

    let between_writes = support::lock_every_zone(&data.path().join("state"))?;
    signal("STOP", owner.pid())?;
    drop(between_writes);
    let moved = format!(
        "window.respawn.losses() === 1 && window.respawn.joined() && window.respawn.resumed() && window.respawn.server() === {}",
        json!(spare.ws_url())
    );
    let wait = browser.wait_for(&s, &moved, Duration::from_secs(15)).await;
    signal("KILL", owner.pid())?;
    wait?;
    let updates = browser.eval(&s, "window.respawn.updates()").await?.as_f64().unwrap_or(0.0);
    browser.wait_for(&s, &format!("window.respawn.updates() > {}", updates + 20.0), Duration::from_secs(5)).await?;
    Ok(())
}

/// Markup someone hostile sends never runs: the registry refuses it in a
/// zone name, a version or an address; text an admin typed (a disable
/// reason) reaches the dashboard as text; both pages' Content-Security-Policy
/// refuses inline code even where markup got in; and the operator token sits
/// nowhere the play page, of the same origin, can read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_run_no_script_in_the_dashboard_or_the_play_page() -> Result<()> {
    use support::{Platform, ZoneProcess, TEST_CONFIG};
    const OPERATOR: &str = "browser-hostile-operator-token";
    const HOSTILE: &str = r#"<img src=x onerror="window.pwned=1">"#;
    let platform = Platform::for_rollouts(OPERATOR).await?;
    let addr = platform.addr.to_string();
    let credential = support::credential("hostile");
    let beats = [
        json!({ "address": "ws://127.0.0.1:1/ws", "zones": [HOSTILE], "state": "ready", "version": "1" }),
        json!({ "address": "ws://127.0.0.1:1/ws", "zones": ["meadow"], "state": "ready", "version": HOSTILE }),
        json!({ "address": format!("ws://{HOSTILE}/ws"), "zones": [], "state": "ready", "version": "1" }),
    ];
    for beat in beats {
        let (status, body) =
            respawn_api::http::request_json(&addr, "PUT", "/v1/servers/hostile", Some(&credential), &beat.to_string())
                .await?;
        assert_eq!(status, 400, "registered {beat}: {body}");
    }
    let claim = json!({ "zones": [HOSTILE] }).to_string();
    let (status, _) =
        respawn_api::http::request_json(&addr, "POST", "/v1/servers/hostile/claim", Some(&credential), &claim).await?;
    assert_eq!(status, 400, "a hostile zone claimed");
    let zone_credential = support::credential("zone-1");
    let _zone = ZoneProcess::start_with_args(TEST_CONFIG, &["--platform", &addr, "--server-token", &zone_credential])?;
    support::wait_registered(&addr, 1).await?;

    // An admin disables an account with markup for a reason: it is text.
    let guest = respawn_client::GuestSession::sign_up(&addr).await?;
    let path = format!("/v1/accounts/{}/disable", guest.account_id());
    let reason = json!({ "reason": HOSTILE }).to_string();
    let (status, body) = respawn_api::http::request_json(&addr, "POST", &path, Some(OPERATOR), &reason).await?;
    assert_eq!(status, 200, "{body}");

    for page in ["/", "/dashboard"] {
        let response = respawn_api::http::exchange(&addr, "GET", page, None, None).await?;
        let policy = response.header("content-security-policy").unwrap_or_default();
        assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe"), "{page}: {policy:?}");
    }
    let browser = Browser::launch().await?;
    let s = browser.open(&format!("http://{addr}/dashboard")).await?;
    // Loaded, its script too: the form is there before dashboard.js wires it.
    browser.wait_for(&s, DASHBOARD_READY, Duration::from_secs(10)).await?;
    let sign_in = format!(
        "document.getElementById('token').value = {}; document.getElementById('login').click(); 0",
        json!(OPERATOR)
    );
    browser.eval(&s, &sign_in).await?;
    browser.wait_for(&s, "!document.getElementById('board').hidden", Duration::from_secs(10)).await?;
    let find = format!(
        "document.getElementById('account-name').value = '{}'; document.getElementById('account-find').click(); 0",
        guest.account_id()
    );
    browser.eval(&s, &find).await?;
    let shown = format!("document.getElementById('account').textContent.includes({})", json!(HOSTILE));
    browser.wait_for(&s, &shown, Duration::from_secs(5)).await?;
    assert_eq!(browser.eval(&s, "document.querySelectorAll('#account img').length").await?, json!(0));
    // The token is in the page's memory, not in storage the play page shares.
    let stored = "JSON.stringify([Object.values(sessionStorage), Object.values(localStorage)])";
    let stored = browser.eval(&s, stored).await?;
    assert!(!stored.to_string().contains(OPERATOR), "the operator token is stored: {stored}");

    // Markup that got in anyway runs nothing: no inline handler, no inline script.
    let play = browser.open(&format!("http://{addr}/")).await?;
    browser.wait_for(&play, "document.getElementById('zone').options.length > 0", Duration::from_secs(15)).await?;
    for session in [&s, &play] {
        let inject = "document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.pwned=1\">'); \
                      const s = document.createElement('script'); s.textContent = 'window.pwned = 2'; \
                      document.body.append(s); 0";
        browser.eval(session, inject).await?;
    }
    // The image fails to load at once; give its handler time to run, were it allowed to.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for session in [&s, &play] {
        assert_eq!(browser.eval(session, "typeof window.pwned").await?, json!("undefined"), "a script ran");
    }
    let stored =
        browser.eval(&play, "JSON.stringify([Object.values(sessionStorage), Object.values(localStorage)])").await?;
    assert!(!stored.to_string().contains(OPERATOR), "the play page can read the operator token");
    Ok(())
}
