//! `--report FILE.md`: a drill's report as markdown (figures, problems,
//! timeline, verdict) with a chart of the tick duration and the CCU over the
//! drill, drawn as an SVG file next to it. The chart's points come from a
//! sampler that reads the zone servers' metrics four times a second.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use respawn_api::http;
use respawn_api::prom::{self, Histogram};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::deployment::max_bucket_ms;
use crate::findings::{ChartPoint, Findings};
use crate::TICK_BUDGET_MS;

/// Reads the zone servers' metrics every 250 ms until finished.
#[derive(Debug)]
pub struct Sampler {
    points: Arc<Mutex<Vec<ChartPoint>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Samples the servers at `addrs` (`host:port`); times count from `started`.
    pub fn start(addrs: Vec<String>, started: Instant) -> Self {
        let points = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample(addrs, started, points.clone(), stop.clone()));
        Self { points, stop, task }
    }

    /// Stops sampling; the points so far.
    pub async fn finish(self) -> Vec<ChartPoint> {
        self.stop.cancel();
        let _ = self.task.await;
        self.points.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

async fn sample(addrs: Vec<String>, started: Instant, points: Arc<Mutex<Vec<ChartPoint>>>, stop: CancellationToken) {
    let mut last: Vec<Option<Histogram>> = vec![None; addrs.len()];
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let (mut ccu, mut tick_ms, mut answered) = (0.0, 0.0_f64, false);
        for (addr, last) in addrs.iter().zip(last.iter_mut()) {
            let Ok(text) = http::scrape(addr).await else {
                // A restarted server starts its histogram over.
                *last = None;
                continue;
            };
            let samples = prom::parse(&text);
            answered = true;
            ccu += prom::sum(&samples, "respawn_zone_players", &[]);
            if let Some(h) = Histogram::read(&samples, "respawn_zone_tick_duration_seconds", &[]) {
                let interval = match last.as_ref() {
                    Some(prev) if h.count() >= prev.count() => h.since(prev),
                    _ => h.clone(),
                };
                if interval.count() > 0.0 {
                    tick_ms = tick_ms.max(max_bucket_ms(&interval));
                }
                *last = Some(h);
            }
        }
        let point = ChartPoint { at_s: started.elapsed().as_secs_f64(), ccu, tick_ms: answered.then_some(tick_ms) };
        if let Ok(mut p) = points.lock() {
            p.push(point);
        }
    }
}

/// Writes `path` (markdown) and the chart beside it (same name, `.svg`).
pub fn write(path: &Path, title: &str, report: &Value, findings: &Findings, chart: &[ChartPoint]) -> Result<()> {
    let svg_path = path.with_extension("svg");
    let svg_name = svg_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::write(&svg_path, svg(chart)).with_context(|| format!("cannot write {}", svg_path.display()))?;
    let mut md = format!("# {title}\n\n**Verdict: {}**\n\n", findings.verdict.as_str().to_uppercase());
    md.push_str(&format!("![Tick duration and CCU over the drill]({svg_name})\n\n"));
    md.push_str("## Figures\n\n| figure | value |\n|---|---|\n");
    if let Value::Object(fields) = report {
        for (name, value) in fields {
            let shown = match value {
                Value::Number(n) if n.is_f64() => n.as_f64().map(|f| format!("{f:.1}")),
                Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
                Value::String(s) => Some(s.clone()),
                _ => None,
            };
            if let Some(shown) = shown.filter(|_| name != "verdict") {
                md.push_str(&format!("| {name} | {shown} |\n"));
            }
        }
    }
    md.push_str("\n## Problems\n\n");
    if findings.problems.is_empty() {
        md.push_str("None: every figure met its target.\n");
    }
    for p in &findings.problems {
        md.push_str(&format!("- {p}\n"));
    }
    md.push_str("\n## Timeline\n\n```\n");
    for line in &findings.timeline {
        md.push_str(line);
        md.push('\n');
    }
    md.push_str("```\n");
    std::fs::write(path, md).with_context(|| format!("cannot write {}", path.display()))
}

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// Tick duration (left axis, red) and CCU (right axis, blue) against time.
pub fn svg(chart: &[ChartPoint]) -> String {
    let end = chart.last().map_or(1.0, |p| p.at_s.max(1.0));
    let tick_max = chart.iter().filter_map(|p| p.tick_ms).fold(TICK_BUDGET_MS, f64::max);
    let ccu_max = chart.iter().map(|p| p.ccu).fold(1.0, f64::max);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: f64| LEFT + t / end * plot_w;
    let y = |v: f64, max: f64| TOP + plot_h - v / max * plot_h;
    // Gaps (no server answered) break the tick line.
    let mut tick_lines = Vec::new();
    let mut run = Vec::new();
    for p in chart {
        match p.tick_ms {
            Some(ms) => run.push(format!("{:.1},{:.1}", x(p.at_s), y(ms.min(tick_max), tick_max))),
            None if !run.is_empty() => tick_lines.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        tick_lines.push(run);
    }
    let ccu_line: Vec<String> = chart.iter().map(|p| format!("{:.1},{:.1}", x(p.at_s), y(p.ccu, ccu_max))).collect();
    let mut out = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>
<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>
<line x1="{LEFT}" x2="{right}" y1="{budget:.1}" y2="{budget:.1}" stroke="#d33" stroke-dasharray="4 4"/>
<text x="{LEFT}" y="{label_y}" fill="#d33">slowest tick per 250 ms (ms, max {tick_max:.1}; dashed: {TICK_BUDGET_MS} ms budget)</text>
<text x="{right}" y="{label_y}" fill="#36c" text-anchor="end">CCU (max {ccu_max:.0})</text>
<text x="{mid}" y="{bottom_label}" text-anchor="middle">seconds since the drill started (0 to {end:.1})</text>
<text x="{tick_label_x}" y="{top_value}" text-anchor="end" fill="#d33">{tick_max:.0}</text>
<text x="{tick_label_x}" y="{zero_y}" text-anchor="end" fill="#d33">0</text>
<text x="{ccu_label_x}" y="{top_value}" fill="#36c">{ccu_max:.0}</text>
<text x="{ccu_label_x}" y="{zero_y}" fill="#36c">0</text>
<polyline fill="none" stroke="#36c" stroke-width="1.5" points="{ccu_points}"/>
"##,
        right = WIDTH - RIGHT,
        budget = y(TICK_BUDGET_MS, tick_max),
        label_y = TOP - 10.0,
        mid = LEFT + plot_w / 2.0,
        bottom_label = HEIGHT - 10.0,
        tick_label_x = LEFT - 6.0,
        ccu_label_x = WIDTH - RIGHT + 6.0,
        top_value = TOP + 4.0,
        zero_y = TOP + plot_h,
        ccu_points = ccu_line.join(" "),
    );
    for line in tick_lines {
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"#d33\" stroke-width=\"1.5\" points=\"{}\"/>\n",
            line.join(" ")
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_both_series_and_breaks_the_tick_line_where_no_server_answered() {
        let point = |at_s, ccu, tick_ms| ChartPoint { at_s, ccu, tick_ms };
        let chart = [
            point(0.0, 0.0, Some(1.0)),
            point(1.0, 12.0, Some(2.0)),
            point(2.0, 0.0, None),
            point(3.0, 12.0, Some(80.0)),
        ];
        let svg = svg(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 3, "CCU, and the tick line in two runs around the gap: {svg}");
        assert!(svg.contains("max 80.0"), "the axis grows past the budget: {svg}");
        assert!(svg.contains("CCU (max 12)"));
    }
}
