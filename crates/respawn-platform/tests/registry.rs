//! The registry's trust boundary: each game server holds a credential bound
//! to its id, so one stolen credential (a compromised zone pod) cannot
//! re-register, remove, claim for or evacuate another server, and the
//! platform's admin calls to a hostile address carry nothing that works
//! on any other server.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Result};
use respawn_api::http;
use respawn_api::registry::{Heartbeat, ServerState};
use respawn_platform::http::HttpContext;
use respawn_platform::PlatformServer;
use respawn_token::ServerKey;

/// An HTTP listener that answers 404 to everything and keeps the bearer
/// token of every request it got.
struct Recorder {
    addr: String,
    bearers: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let bearers = Arc::new(Mutex::new(Vec::new()));
        let seen = bearers.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().map_while(Result::ok) {
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => continue,
                });
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    let lower = line.to_ascii_lowercase();
                    if let Some(token) = lower.strip_prefix("authorization: bearer ") {
                        // The original case: credentials are lowercase hex anyway.
                        let at = line.len() - token.len();
                        seen.lock().expect("recorder").push(line[at..].trim().to_owned());
                    }
                    line.clear();
                }
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Ok(Self { addr, bearers })
    }

    fn bearers(&self) -> Vec<String> {
        self.bearers.lock().expect("recorder").clone()
    }
}

fn beat(address: &str, zones: &[&str]) -> String {
    let beat = Heartbeat {
        address: address.to_owned(),
        zones: zones.iter().map(|z| (*z).to_owned()).collect(),
        state: ServerState::Ready,
        version: "1".into(),
        bans_version: 0,
        admin_address: None,
        fences: Default::default(),
    };
    serde_json::to_string(&beat).expect("heartbeat")
}

#[tokio::test]
async fn a_stolen_server_credential_cannot_take_over_another_servers_zones() -> Result<()> {
    let key = ServerKey::new(b"the-platform-server-key-of-this-test")?;
    let mut context = HttpContext::with_stores(None, "registry-test")?;
    context.server_key = Some(key.clone());
    let registry = context.registry.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let platform = PlatformServer::new(context).without_fleet_watcher().start(listener)?;
    let addr = platform.addr().to_string();

    // zone-1 hosts meadow at its own address, under its own credential.
    let (zone_1, attacker) = (Recorder::start()?, Recorder::start()?);
    let zone_1_credential = key.credential("zone-1")?;
    let own = beat(&format!("ws://{}/ws", zone_1.addr), &["meadow"]);
    let (status, body) = http::request_json(&addr, "PUT", "/v1/servers/zone-1", Some(&zone_1_credential), &own).await?;
    ensure!(status == 200, "zone-1's own heartbeat: {status} {body}");

    // The attacker holds zone-2's credential (read from a compromised pod).
    let stolen = key.credential("zone-2")?;
    let hostile = beat(&format!("ws://{}/ws", attacker.addr), &["meadow"]);
    let attempts = [
        ("PUT", "/v1/servers/zone-1", Some(hostile.as_str())),
        ("POST", "/v1/servers/zone-1/evacuate", None),
        ("POST", "/v1/servers/zone-1/claim", Some(r#"{"zones":["meadow"]}"#)),
        ("DELETE", "/v1/servers/zone-1", None),
    ];
    for (method, path, json) in attempts {
        let (status, body) = match json {
            Some(json) => http::request_json(&addr, method, path, Some(&stolen), json).await?,
            None => http::request(&addr, method, path, Some(&stolen)).await?,
        };
        ensure!(status == 403, "{method} {path} with zone-2's credential: {status} {body}");
        ensure!(body.contains("may act only as itself"), "{body}");
    }
    // Nor does a credential this platform did not issue, or the old shared-token shape.
    let forged = ServerKey::new(b"a-key-the-attacker-made-up-itself")?.credential("zone-1")?;
    for bearer in [forged.as_str(), "a-fleet-wide-server-token-0123456789"] {
        let (status, _) = http::request_json(&addr, "PUT", "/v1/servers/zone-1", Some(bearer), &hostile).await?;
        ensure!(status == 401, "{bearer}: {status}");
    }
    let servers = registry.servers().await?;
    ensure!(servers.len() == 1 && servers[0].address == format!("ws://{}/ws", zone_1.addr), "{servers:?}");

    // As itself, the attacker may register its address and ask for its own
    // evacuation: the platform then calls it, with zone-2's credential only.
    let caverns = beat(&format!("ws://{}/ws", attacker.addr), &["caverns"]);
    let (status, body) = http::request_json(&addr, "PUT", "/v1/servers/zone-2", Some(&stolen), &caverns).await?;
    ensure!(status == 200, "zone-2's own heartbeat: {status} {body}");
    let (status, body) = http::request(&addr, "POST", "/v1/servers/zone-2/evacuate", Some(&stolen)).await?;
    ensure!(status == 202, "zone-2's own evacuation: {status} {body}");
    respawn_harness::wait_until("the platform calls the attacker", Duration::from_secs(10), || async {
        Ok(!attacker.bearers().is_empty())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for bearer in attacker.bearers() {
        ensure!(key.verify(&bearer)? == "zone-2", "the attacker was sent {bearer}");
    }
    ensure!(zone_1.bearers().iter().all(|b| *b == zone_1_credential), "zone-1 got another server's credential");
    platform.shutdown().await.map_err(anyhow::Error::msg)
}
