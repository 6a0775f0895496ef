//! The last hour behind the dashboard's charts. Every [`SAMPLE_PERIOD`] the
//! platform takes a point from the fleet view (each zone's players, tick
//! durations, outbox and events published, as its server's `/metrics`
//! last said) and from its own metrics (events stored, consumer lag, API
//! responses), and keeps the last [`KEPT`] in memory. Rates and quantiles
//! are over the interval since the point before, from counters and
//! histograms, so nothing between two points is missed. Each platform
//! instance keeps its own hour; a restart starts a new one.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use respawn_api::overview::{EventPath, Trends, ZoneTrend};
use respawn_api::prom::Histogram;
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, FleetView};
use crate::metrics::PlatformMetrics;

/// How often a point is taken.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);
/// Points kept: an hour of them.
pub const KEPT: usize = 3_600 / SAMPLE_PERIOD.as_secs() as usize;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ZonePoint {
    ccu: u64,
    tick_p50_ms: Option<f64>,
    tick_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Point {
    at: u64,
    stored_per_second: Option<f64>,
    published_per_second: Option<f64>,
    consumer_lag: Option<i64>,
    outbox_pending: Option<u64>,
    api_p50_ms: Option<f64>,
    api_p99_ms: Option<f64>,
    api_requests_per_second: Option<f64>,
    api_errors_per_second: Option<f64>,
    zones: BTreeMap<String, ZonePoint>,
}

/// What the platform's own metrics read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
struct OwnReading {
    stored: u64,
    consumer_lag: i64,
    /// API responses so far: (all, 5xx).
    responses: (f64, f64),
    api: Histogram,
}

impl OwnReading {
    fn of(metrics: &PlatformMetrics) -> Self {
        Self {
            stored: metrics.stored.get(),
            consumer_lag: metrics.lag_total(),
            responses: metrics.http_totals(),
            api: metrics.http_histogram(),
        }
    }
}

/// A zone on one server: counters restart with the server, so each is compared with its own.
type ZoneKey = (String, String);

/// The readings of the point before, to take intervals from.
#[derive(Debug, Default)]
struct Before {
    at: Option<Instant>,
    own: OwnReading,
    published: HashMap<ZoneKey, f64>,
    ticks: HashMap<ZoneKey, Histogram>,
}

/// The kept points, shared by the sampler and the API.
#[derive(Debug, Default)]
pub struct TrendLog {
    points: Mutex<VecDeque<Point>>,
}

impl TrendLog {
    fn push(&self, point: Point) {
        if let Ok(mut points) = self.points.lock() {
            if points.len() == KEPT {
                points.pop_front();
            }
            points.push_back(point);
        }
    }

    /// The kept points as columns.
    pub fn trends(&self, path: EventPath) -> Trends {
        let points: Vec<Point> = self.points.lock().map(|p| p.iter().cloned().collect()).unwrap_or_default();
        let column = |f: fn(&Point) -> Option<f64>| points.iter().map(f).collect::<Vec<_>>();
        let names: BTreeSet<&String> = points.iter().flat_map(|p| p.zones.keys()).collect();
        let zones = names
            .into_iter()
            .map(|name| {
                let of = |p: &Point| p.zones.get(name).copied();
                ZoneTrend {
                    name: name.clone(),
                    ccu: points.iter().map(|p| of(p).map(|z| z.ccu)).collect(),
                    tick_p50_ms: points.iter().map(|p| of(p).and_then(|z| z.tick_p50_ms)).collect(),
                    tick_p99_ms: points.iter().map(|p| of(p).and_then(|z| z.tick_p99_ms)).collect(),
                }
            })
            .collect();
        Trends {
            period_secs: SAMPLE_PERIOD.as_secs(),
            path,
            times: points.iter().map(|p| p.at).collect(),
            events_stored_per_second: column(|p| p.stored_per_second),
            events_published_per_second: column(|p| p.published_per_second),
            consumer_lag: points.iter().map(|p| p.consumer_lag).collect(),
            outbox_pending: points.iter().map(|p| p.outbox_pending).collect(),
            api_p50_ms: column(|p| p.api_p50_ms),
            api_p99_ms: column(|p| p.api_p99_ms),
            api_requests_per_second: column(|p| p.api_requests_per_second),
            api_errors_per_second: column(|p| p.api_errors_per_second),
            zones,
        }
    }
}

/// Takes a point every [`SAMPLE_PERIOD`] until `stop`; the first at once.
pub async fn watch(
    log: Arc<TrendLog>,
    fleet: Arc<Fleet>,
    metrics: Arc<PlatformMetrics>,
    path: EventPath,
    stop: CancellationToken,
) {
    let mut before = Before::default();
    let mut every = tokio::time::interval(SAMPLE_PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        let elapsed = before.at.map(|at| now.duration_since(at).as_secs_f64());
        let own = OwnReading::of(&metrics);
        log.push(point(respawn_api::clock::unix_secs(), elapsed, path, &fleet.view(), own, &mut before));
        before.at = Some(now);
    }
}

/// One point from this moment's readings and the ones `elapsed` seconds
/// before (none for the first), which it replaces.
fn point(
    at: u64,
    elapsed: Option<f64>,
    path: EventPath,
    view: &FleetView,
    own: OwnReading,
    before: &mut Before,
) -> Point {
    let per_second = |delta: f64| elapsed.filter(|s| *s > 0.0).map(|s| round(delta / s));
    let mut published = 0.0;
    let mut outbox = 0;
    let mut zones: BTreeMap<String, ZonePoint> = BTreeMap::new();
    let (mut published_now, mut ticks_now) = (HashMap::new(), HashMap::new());
    for z in &view.zones {
        let key = (z.server.clone(), z.name.clone());
        let entry = zones.entry(z.name.clone()).or_default();
        // A zone briefly on two servers (a hand-off) counts its players on both.
        entry.ccu += z.players;
        if z.status == "unreachable" {
            continue;
        }
        outbox += z.outbox_pending;
        if let Some(then) = before.published.get(&key) {
            // A counter that went back belongs to a restarted server: all of it is new.
            published += if z.events_published >= *then { z.events_published - then } else { z.events_published };
        }
        published_now.insert(key.clone(), z.events_published);
        if let Some(now) = &z.tick_histogram {
            if let Some(then) = before.ticks.get(&key) {
                let interval = now.since(then);
                let ms = |q| interval.quantile(q).map(|s| round(s * 1_000.0));
                entry.tick_p50_ms = max(entry.tick_p50_ms, ms(0.5));
                entry.tick_p99_ms = max(entry.tick_p99_ms, ms(0.99));
            }
            ticks_now.insert(key, now.clone());
        }
    }
    let stored = match path {
        EventPath::Kafka => per_second(own.stored.saturating_sub(before.own.stored) as f64),
        EventPath::Embedded => per_second(published),
    };
    let api = elapsed.map(|_| own.api.since(&before.own.api));
    let api_ms = |q| api.as_ref().and_then(|h| h.quantile(q)).map(|s| round(s * 1_000.0));
    let point = Point {
        at,
        stored_per_second: stored,
        published_per_second: (path == EventPath::Kafka).then(|| per_second(published)).flatten(),
        consumer_lag: (path == EventPath::Kafka).then_some(own.consumer_lag),
        outbox_pending: (!view.zones.is_empty()).then_some(outbox),
        api_p50_ms: api_ms(0.5),
        api_p99_ms: api_ms(0.99),
        api_requests_per_second: per_second(own.responses.0 - before.own.responses.0),
        api_errors_per_second: per_second(own.responses.1 - before.own.responses.1),
        zones,
    };
    *before = Before { at: before.at, own, published: published_now, ticks: ticks_now };
    point
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Two decimals: what a chart shows.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ZoneView;

    fn zone(name: &str, server: &str, players: u64, published: f64, ticks: &[(f64, f64)]) -> ZoneView {
        ZoneView {
            name: name.into(),
            server: server.into(),
            address: String::new(),
            version: String::new(),
            status: "running",
            players,
            tick: 1,
            tick_p50_ms: None,
            tick_p99_ms: None,
            outbox_pending: 3,
            events_published: published,
            tick_histogram: Some(Histogram { buckets: ticks.to_vec() }),
        }
    }

    fn view(zones: Vec<ZoneView>) -> FleetView {
        FleetView { zones, ..FleetView::default() }
    }

    #[test]
    fn rates_and_quantiles_are_over_the_interval_since_the_point_before() {
        let mut before = Before::default();
        let first = view(vec![zone("meadow", "a", 4, 100.0, &[(0.001, 10.0), (0.01, 10.0), (f64::INFINITY, 10.0)])]);
        let p = point(1_000, None, EventPath::Embedded, &first, OwnReading::default(), &mut before);
        assert_eq!((p.stored_per_second, p.zones["meadow"].ccu, p.zones["meadow"].tick_p99_ms), (None, 4, None));

        // 5 s later: 50 more events stored, 100 more ticks, all slow.
        let second = view(vec![zone("meadow", "a", 6, 150.0, &[(0.001, 10.0), (0.01, 110.0), (f64::INFINITY, 110.0)])]);
        let p = point(1_005, Some(5.0), EventPath::Embedded, &second, OwnReading::default(), &mut before);
        assert_eq!(p.stored_per_second, Some(10.0));
        assert_eq!(p.zones["meadow"].ccu, 6);
        // Every tick of the interval took 1-10 ms: its p50 is mid-bucket, not the earlier fast ones'.
        assert_eq!(p.zones["meadow"].tick_p50_ms, Some(5.5));
        assert_eq!((p.published_per_second, p.consumer_lag, p.outbox_pending), (None, None, Some(3)));
    }

    #[test]
    fn a_restarted_server_counts_from_zero_and_kafka_rates_come_from_the_consumer() {
        let mut before = Before::default();
        let own = |stored, all, errors| OwnReading {
            stored,
            consumer_lag: 7,
            responses: (all, errors),
            api: Histogram { buckets: vec![(0.001, all), (f64::INFINITY, all)] },
        };
        let z = |published| view(vec![zone("meadow", "a", 1, published, &[(f64::INFINITY, 1.0)])]);
        point(0, None, EventPath::Kafka, &z(500.0), own(100, 10.0, 0.0), &mut before);
        let p = point(2, Some(2.0), EventPath::Kafka, &z(40.0), own(300, 30.0, 4.0), &mut before);
        assert_eq!(p.published_per_second, Some(20.0), "the restarted server's 40 events in 2 s");
        assert_eq!(p.stored_per_second, Some(100.0), "the consumer's 200 in 2 s");
        assert_eq!(
            (p.consumer_lag, p.api_requests_per_second, p.api_errors_per_second),
            (Some(7), Some(10.0), Some(2.0))
        );
        assert_eq!(p.api_p99_ms, Some(0.99));
    }

    #[test]
    fn an_hour_is_kept_as_columns_with_gaps_where_a_zone_was_absent() {
        let log = TrendLog::default();
        let mut before = Before::default();
        for i in 0..KEPT as u64 + 2 {
            let zones = if i % 2 == 0 { vec![zone("meadow", "a", i, 0.0, &[])] } else { Vec::new() };
            log.push(point(i, Some(5.0), EventPath::Embedded, &view(zones), OwnReading::default(), &mut before));
        }
        let t = log.trends(EventPath::Embedded);
        assert_eq!(t.times.len(), KEPT);
        assert_eq!((t.times[0], t.times[KEPT - 1]), (2, KEPT as u64 + 1));
        assert_eq!(t.zones.len(), 1);
        assert_eq!(&t.zones[0].ccu[..3], &[Some(2), None, Some(4)]);
        assert_eq!(t.outbox_pending[1], None, "no zone seen, nothing measured");
    }
}
