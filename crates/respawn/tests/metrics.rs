//! Every metric docs/metrics.md lists for the zone server and the platform
//! server is exported, with the documented type: a real deployment (zone
//! server, platform server, Tansu, MariaDB) with a player, scraped.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use support::{Client, Database, Platform, ZoneProcess, TEST_CONFIG};

/// (metric, type) rows of the table under `heading` in docs/metrics.md.
fn documented(heading: &str) -> Result<Vec<(String, String)>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md"))?;
    let section = doc.split("\n## ").find(|s| s.starts_with(heading)).context("the section")?;
    let rows: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_owned(), (*cells.get(2)?).to_owned()))
        })
        .collect();
    if rows.len() < 10 {
        bail!("only {} rows under {heading}", rows.len());
    }
    Ok(rows)
}

fn missing(scrape: &str, rows: &[(String, String)]) -> Vec<String> {
    rows.iter()
        .filter(|(name, kind)| !scrape.contains(&format!("# TYPE {name} {kind}\n")))
        .map(|(n, k)| format!("{n} ({k})"))
        .collect()
}

#[tokio::test]
async fn every_documented_metric_is_exported() -> Result<()> {
    let brokers = std::env::var("RESPAWN_TEST_KAFKA_BROKERS").context("run through scripts/test")?;
    let db = Database::create("metrics").await?;
    let platform = Platform::start_with(
        &brokers,
        &db.url(),
        &format!("platform-metrics-{}", std::process::id()),
        &["--server-token", "metrics-server-token"],
    )?;
    platform.wait_healthy().await?;
    let zone = ZoneProcess::start_with_args(
        TEST_CONFIG,
        &[
            "--kafka-brokers",
            &brokers,
            "--platform",
            &platform.addr.to_string(),
            "--server-token",
            "metrics-server-token",
        ],
    )?;
    let (mut client, _) = Client::join(&zone.ws_url(), 4242, "counted", "meadow").await?;
    client.send(respawn_proto::client_message::Body::Move(respawn_proto::MoveInput { seq: 1, vx: 5, vy: 0 })).await?;
    // A routed API call, so the API's series exist.
    respawn_client::http::request(&platform.addr.to_string(), "GET", "/v1/lobby", None).await?;

    let (zone_rows, platform_rows) = (documented("Zone server")?, documented("Platform server")?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let zone_missing = missing(&support::scrape(zone.addr).await?, &zone_rows);
        let platform_missing = missing(&support::scrape(platform.addr).await?, &platform_rows);
        if zone_missing.is_empty() && platform_missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not exported as documented: zone server {zone_missing:?}; platform server {platform_missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// GitHub's anchor of a markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_section_that_exists() -> Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
    let rules = std::fs::read_to_string(format!("{root}deploy/prometheus/alerts.yml"))?;
    let runbook = std::fs::read_to_string(format!("{root}docs/runbook.md"))?;
    let anchors: Vec<String> = runbook
        .lines()
        .filter_map(|l| l.trim_start_matches('#').strip_prefix(' ').filter(|_| l.starts_with('#')))
        .map(anchor)
        .collect();
    let alerts: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert_eq!(alerts.len(), 14, "the guide's 5 critical, 5 warning and 4 info conditions");
    for alert in alerts {
        let name = alert.lines().next().unwrap_or_default();
        let severity = alert.lines().find_map(|l| l.trim().strip_prefix("severity: ")).context("a severity")?;
        assert!(["critical", "warning", "info"].contains(&severity), "{name}: {severity}");
        let target =
            alert.lines().find_map(|l| l.trim().strip_prefix("runbook: docs/runbook.md#")).context("a runbook")?;
        assert!(anchors.iter().any(|a| a == target), "{name} points at #{target}, which docs/runbook.md lacks");
    }
    Ok(())
}
