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
        &["--server-key", support::SERVER_KEY],
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
            &support::credential("metrics-zone"),
        ],
    )?;
    let (mut client, _) = Client::join(&zone.ws_url(), 4242, "counted", "meadow").await?;
    client.send(respawn_proto::client_message::Body::Move(respawn_proto::MoveInput { seq: 1, vx: 5, vy: 0 })).await?;
    // A routed API call, so the API's series exist.
    respawn_api::http::request(&platform.addr.to_string(), "GET", "/v1/lobby", None).await?;

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

/// Metric names a PromQL expression reads (`respawn_*`, `process_*`, `up`),
/// histogram series folded into their family.
fn metrics_read(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("respawn_") || w.starts_with("process_"))
        .map(|w| w.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_owned())
        .collect()
}

#[test]
fn the_grafana_dashboard_reads_documented_metrics_with_valid_queries() -> Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}deploy/grafana/respawn.json"))?)?;
    let docs = std::fs::read_to_string(format!("{root}docs/metrics.md"))?;
    let panels = dashboard["panels"].as_array().context("panels")?;
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "CCU per zone",
        "Tick p50 / p99 per zone",
        "Zone status",
        "Kafka messages/s",
        "Consumer lag",
        "API latency",
        "API error rate",
        "DB pool usage",
    ] {
        assert!(titles.contains(&wanted), "the guide's panel {wanted:?} is missing");
    }
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 15);
    for expr in &exprs {
        for metric in metrics_read(expr) {
            assert!(docs.contains(&format!("`{metric}`")), "{metric} (in {expr}) is not in docs/metrics.md");
        }
    }
    // Every query parses: promtool checks them as recording rules.
    let dir = support::TempDir::new("grafana")?;
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!("      - record: panel_{i}\n        expr: {}\n", serde_json::to_string(e).unwrap_or_default())
        })
        .collect();
    let path = dir.path().join("panels.yml");
    std::fs::write(&path, format!("groups:\n  - name: panels\n    rules:\n{rules}"))?;
    let out = std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
        .context("promtool (scripts/test installs Debian's prometheus)")?;
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// `30s`, `1m`, `2m` as in alerts.yml.
fn duration(text: &str) -> Option<Duration> {
    let (n, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

#[test]
fn built_in_alerting_has_the_rules_of_alerts_yml() -> Result<()> {
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/alerts.yml"))?;
    let blocks: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert_eq!(blocks.len(), respawn_platform::alerts::RULES.len());
    for block in blocks {
        let name = block.lines().next().unwrap_or_default().trim();
        let rule = respawn_platform::alerts::RULES
            .iter()
            .find(|r| r.name == name)
            .with_context(|| format!("no built-in {name}"))?;
        let hold = block.lines().find_map(|l| l.trim().strip_prefix("for: ")).map_or(Some(Duration::ZERO), duration);
        assert_eq!(hold, Some(rule.hold), "{name}: same duration");
        let severity = block.lines().find_map(|l| l.trim().strip_prefix("severity: ")).unwrap_or_default();
        assert_eq!(serde_json::to_value(rule.severity)?, severity, "{name}: same severity");
        assert!(
            block.contains(&format!("runbook: docs/runbook.md#{}\n", rule.runbook)),
            "{name}: same runbook section"
        );
    }
    Ok(())
}
