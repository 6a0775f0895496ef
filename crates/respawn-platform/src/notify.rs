//! Alert notifications to a webhook, as a Slack-compatible payload
//! (`{"text": ...}`; Slack incoming webhooks and most chat tools take it).
//!
//! Each transition (an alert firing, or resolving) is one notification, with
//! an id made of the alert, its key, when it became true and the new state.
//! Only transitions this instance was the first to make reach it (the alert
//! states agreed in the operations store: [`crate::alerts::Alerts::publish`]),
//! so several platform instances send each once. A failed delivery is
//! retried with backoff; the id also travels in the
//! `X-Respawn-Notification-Id` header so a receiver can drop a retry of
//! something it did get.

use std::sync::Arc;
use std::time::Duration;

use respawn_api::http::{post_json, Url};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, AlertState};
use crate::metrics::PlatformMetrics;

/// Notifications waiting to be sent; past this, new ones are dropped (logged).
pub const QUEUE: usize = 1_000;
/// Delivery attempts per notification.
const ATTEMPTS: u32 = 6;

/// The notification's id.
pub fn id(alert: &Alert) -> String {
    let state = match alert.state {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    };
    format!("{}|{}|{}|{state}", alert.name, alert.key, alert.since_ms)
}

/// The Slack-compatible payload.
pub fn payload(alert: &Alert) -> String {
    let state = if alert.state == AlertState::Resolved { "RESOLVED" } else { "FIRING" };
    let severity = match alert.severity {
        crate::alerts::Severity::Critical => "critical",
        crate::alerts::Severity::Warning => "warning",
        crate::alerts::Severity::Info => "info",
    };
    let text = format!("[{state}] {severity} {}: {} (runbook: {})", alert.name, alert.summary, alert.runbook);
    serde_json::json!({ "text": slack_escaped(&text), "username": "respawn" }).to_string()
}

/// Slack's escaping: its mentions (`<!channel>`, `<@U1>`) and links
/// (`<url|label>`) live between `<` and `>`, so escaping those and `&`
/// keeps names that servers registered (zones, addresses) plain text.
fn slack_escaped(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Sends what arrives on `queue` to `webhook` until `stop`.
pub async fn run(
    webhook: Url,
    mut queue: mpsc::Receiver<Alert>,
    metrics: Arc<PlatformMetrics>,
    stop: CancellationToken,
) {
    loop {
        let alert = tokio::select! {
            a = queue.recv() => match a { Some(a) => a, None => return },
            _ = stop.cancelled() => return,
        };
        let id = id(&alert);
        let body = payload(&alert);
        let mut wait = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let sent = post_json(&webhook, &body, &[("X-Respawn-Notification-Id", &id)]).await;
            match sent {
                Ok(r) if (200..300).contains(&r.status) => {
                    metrics.notification("sent");
                    break;
                }
                outcome => {
                    let why = outcome.map_or_else(|e| e.to_string(), |r| format!("status {}", r.status));
                    if attempt == ATTEMPTS {
                        metrics.notification("failed");
                        tracing::error!(notification = %id, error = %why, "alert notification not delivered");
                        break;
                    }
                    metrics.notification("retried");
                    tracing::warn!(notification = %id, attempt, error = %why, "alert notification failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.cancelled() => return,
                    }
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Severity;

    #[test]
    fn payloads_are_slack_text_and_ids_name_the_transition() {
        let alert = Alert {
            name: "TickOver100ms".into(),
            severity: Severity::Critical,
            key: "ws://a/ws meadow".into(),
            summary: "Zone meadow on ws://a/ws: tick p99 150 ms, over 100 ms for 30 s".into(),
            runbook: "docs/runbook.md#slow-ticks".into(),
            state: AlertState::Firing,
            since_ms: 7,
            at_ms: 37,
        };
        let v: serde_json::Value = serde_json::from_str(&payload(&alert)).expect("json");
        assert_eq!(
            v["text"],
            "[FIRING] critical TickOver100ms: Zone meadow on ws://a/ws: tick p99 150 ms, over 100 ms for 30 s (runbook: docs/runbook.md#slow-ticks)"
        );
        let hostile = Alert { summary: "Zone <!channel> on <http://x.example|login> & more".into(), ..alert.clone() };
        let v: serde_json::Value = serde_json::from_str(&payload(&hostile)).expect("json");
        assert!(
            v["text"]
                .as_str()
                .is_some_and(|t| t.contains("Zone &lt;!channel&gt; on &lt;http://x.example|login&gt; &amp; more")),
            "{v}"
        );
        let resolved = Alert { state: AlertState::Resolved, ..alert.clone() };
        assert_ne!(id(&alert), id(&resolved));
        assert_eq!(id(&alert), "TickOver100ms|ws://a/ws meadow|7|firing");
    }
}
