//! Prometheus metrics of the zone server. Labels stay low-cardinality: zone
//! names and small fixed reason sets, never players.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric family the server exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    players: IntGaugeVec,
    tick_duration: HistogramVec,
    tick_lateness: HistogramVec,
    tick_number: IntGaugeVec,
    ticks_overrun: IntCounterVec,
    ticks_paused: IntCounterVec,
    queue_length: IntGaugeVec,
    commands_accepted: IntCounterVec,
    commands_rejected: IntCounterVec,
    packets_in: IntCounterVec,
    packets_out: IntCounterVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    rtt: HistogramVec,
    updates_dropped: IntCounterVec,
    disconnects: IntCounterVec,
    events: IntCounterVec,
    client_errors: IntCounterVec,
    connections: IntGauge,
    /// The listener guard's counters (per-IP cap, slow and idle connections).
    guard: respawn_net::GuardMetrics,
    ready: IntGauge,
    cpu_seconds: prometheus::Counter,
    resident_memory: IntGauge,
    persist: PersistFamilies,
}

/// Metric families of state persistence (snapshots, journal, restores).
#[derive(Debug, Clone)]
struct PersistFamilies {
    snapshot_bytes: IntGaugeVec,
    snapshot_duration: HistogramVec,
    snapshots: IntCounterVec,
    failures_in_row: IntGaugeVec,
    journal_length: IntGaugeVec,
    journal_pending: IntGaugeVec,
    journal_failures: IntCounterVec,
    events_recorded: IntCounterVec,
    events_unrecorded: IntGaugeVec,
    outbox_write_failures: IntCounterVec,
    events_withdrawn: IntCounterVec,
    rpo_ticks: IntGaugeVec,
    restores: IntCounterVec,
    restore_duration: HistogramVec,
    outbox_bytes: IntGaugeVec,
    outbox_pending: IntGaugeVec,
    outbox_oldest_age: prometheus::GaugeVec,
    outbox_dropped: IntGaugeVec,
    leases_lost: IntCounterVec,
    taken_over: IntCounterVec,
    published: IntCounterVec,
    publish_failures: IntCounterVec,
    history_segments: IntCounterVec,
    history_retained_bytes: IntGaugeVec,
    history_retained_seconds: IntGaugeVec,
    history_ticks_dropped: IntCounterVec,
}

/// One zone's persistence metrics. `store` is `hot` or `cold`.
#[derive(Debug, Clone)]
pub struct PersistMetrics {
    zone: String,
    families: PersistFamilies,
    pub snapshot_bytes: IntGauge,
    pub journal_length: IntGauge,
    pub journal_pending: IntGauge,
    pub journal_failures: IntCounter,
    /// Events of this process's ticks appended to the durable outbox.
    pub events_recorded: IntCounter,
    /// Events generated but not in the outbox yet (held while it refuses writes).
    pub events_unrecorded: IntGauge,
    /// Outbox appends that failed (a full or failing disk); retried.
    pub outbox_write_failures: IntCounter,
    /// Recorded events of ticks a restore took back, left out of the event log.
    pub events_withdrawn: IntCounter,
    pub rpo_ticks: IntGauge,
}

impl PersistMetrics {
    pub fn snapshot(&self, store: &str, ok: bool, seconds: f64) {
        let z = self.zone.as_str();
        self.families.snapshot_duration.with_label_values(&[z, store]).observe(seconds);
        self.families.snapshots.with_label_values(&[z, store, if ok { "ok" } else { "failed" }]).inc();
    }

    /// Consecutive failures of one store (the "snapshot failed 3 times in a row" alert reads it).
    pub fn failures_in_row(&self, store: &str, n: u64) {
        self.families.failures_in_row.with_label_values(&[self.zone.as_str(), store]).set(n as i64);
    }

    pub fn outbox(&self, stats: respawn_store::outbox::OutboxStats) {
        let z = &[self.zone.as_str()];
        let f = &self.families;
        f.outbox_bytes.with_label_values(z).set(stats.bytes as i64);
        f.outbox_pending.with_label_values(z).set(stats.pending as i64);
        f.outbox_oldest_age.with_label_values(z).set(stats.oldest_age_ms as f64 / 1_000.0);
        f.outbox_dropped.with_label_values(z).set(stats.dropped as i64);
    }

    /// A history segment stored (or not), and what the zone's kept history
    /// then takes and reaches back over.
    pub fn history_segment(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.families.history_segments.with_label_values(&[self.zone.as_str(), result]).inc();
    }

    pub fn history_retained(&self, bytes: u64, reach: std::time::Duration) {
        let f = &self.families;
        f.history_retained_bytes.with_label_values(&[self.zone.as_str()]).set(bytes as i64);
        f.history_retained_seconds.with_label_values(&[self.zone.as_str()]).set(reach.as_secs() as i64);
    }

    pub fn history_ticks_dropped(&self, ticks: u64) {
        self.families.history_ticks_dropped.with_label_values(&[self.zone.as_str()]).inc_by(ticks);
    }

    pub fn published(&self, events: u64) {
        self.families.published.with_label_values(&[self.zone.as_str()]).inc_by(events);
    }

    pub fn publish_failed(&self) {
        self.families.publish_failures.with_label_values(&[self.zone.as_str()]).inc();
    }

    pub fn restored(&self, source: &str, seconds: f64) {
        self.families.restores.with_label_values(&[self.zone.as_str(), source]).inc();
        self.families.restore_duration.with_label_values(&[self.zone.as_str()]).observe(seconds);
    }
}

/// The handles one zone's tick thread and connections update, resolved once.
#[derive(Debug, Clone)]
pub struct ZoneMetrics {
    pub players: IntGauge,
    pub tick_duration: Histogram,
    pub tick_lateness: Histogram,
    pub tick_number: IntGauge,
    pub ticks_overrun: IntCounter,
    pub ticks_paused: IntCounter,
    pub queue_length: IntGauge,
    pub commands_accepted: IntCounter,
    pub packets_in: IntCounter,
    pub packets_out: IntCounter,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub rtt: Histogram,
    pub updates_dropped: IntCounter,
    rejected: IntCounterVec,
    disconnects: IntCounterVec,
    events: IntCounterVec,
    zone: String,
}

impl ZoneMetrics {
    /// `reason` is a [`respawn_sim::RejectReason`] name or a server-side one
    /// (`rate_limited`, `queue_full`).
    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[self.zone.as_str(), reason]).inc();
    }

    pub fn disconnected(&self, reason: &str) {
        self.disconnects.with_label_values(&[self.zone.as_str(), reason]).inc();
    }

    pub fn event(&self, kind: &str) {
        self.events.with_label_values(&[self.zone.as_str(), kind]).inc();
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn plain_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    labeled_histogram(registry, name, help, buckets, &["zone"])
}

fn labeled_histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric");
    registry.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Metrics {
    pub fn new(version: &str) -> Self {
        let r = Registry::new();
        let build = gauge(&r, "respawn_build_info", "Build of the running server (value 1).", &["version"]);
        build.with_label_values(&[version]).set(1);
        let ms = |v: &[f64]| v.iter().map(|x| x / 1_000.0).collect::<Vec<_>>();
        let metrics = Metrics {
            players: gauge(&r, "respawn_zone_players", "Players connected to the zone (CCU).", &["zone"]),
            tick_duration: histogram(
                &r,
                "respawn_zone_tick_duration_seconds",
                "Time to simulate one tick and encode every client's update.",
                ms(&[
                    0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 40.0, 50.0,
                    70.0, 100.0, 200.0, 500.0,
                ]),
            ),
            tick_lateness: histogram(
                &r,
                "respawn_zone_tick_lateness_seconds",
                "How late each tick started against the zone's fixed tick schedule.",
                ms(&[0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, 250.0, 1_000.0]),
            ),
            tick_number: gauge(&r, "respawn_zone_tick", "Last simulated tick number.", &["zone"]),
            ticks_overrun: counter(
                &r,
                "respawn_zone_ticks_overrun_total",
                "Ticks that took longer than the tick period.",
                &["zone"],
            ),
            ticks_paused: counter(
                &r,
                "respawn_zone_ticks_paused_total",
                "Ticks not run because the persister was a full queue behind (the world waited for its stores).",
                &["zone"],
            ),
            queue_length: gauge(
                &r,
                "respawn_zone_command_queue_length",
                "Commands waiting for the next tick.",
                &["zone"],
            ),
            commands_accepted: counter(
                &r,
                "respawn_zone_commands_received_total",
                "Commands accepted into the zone's queue.",
                &["zone"],
            ),
            commands_rejected: counter(
                &r,
                "respawn_zone_commands_rejected_total",
                "Commands refused, by reason (validation, rate_limited, queue_full).",
                &["zone", "reason"],
            ),
            packets_in: counter(&r, "respawn_zone_packets_received_total", "WebSocket frames received.", &["zone"]),
            packets_out: counter(
                &r,
                "respawn_zone_packets_sent_total",
                "WebSocket frames queued to clients.",
                &["zone"],
            ),
            bytes_in: counter(&r, "respawn_zone_received_bytes_total", "Bytes received in client frames.", &["zone"]),
            bytes_out: counter(&r, "respawn_zone_sent_bytes_total", "Bytes queued to clients.", &["zone"]),
            rtt: histogram(
                &r,
                "respawn_zone_rtt_seconds",
                "Round-trip time measured with WebSocket pings.",
                ms(&[1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
            ),
            updates_dropped: counter(
                &r,
                "respawn_zone_updates_dropped_total",
                "Updates not sent because a client's send buffer was full (packet loss).",
                &["zone"],
            ),
            disconnects: counter(
                &r,
                "respawn_zone_disconnects_total",
                "Connections the server closed, by reason.",
                &["zone", "reason"],
            ),
            events: counter(&r, "respawn_zone_events_total", "Domain events produced, by type.", &["zone", "type"]),
            client_errors: counter(
                &r,
                "respawn_client_errors_total",
                "Bad input from clients, by reason (malformed, oversized, invalid_token, ...).",
                &["reason"],
            ),
            connections: plain_gauge(&r, "respawn_connections", "Open WebSocket connections."),
            guard: respawn_net::GuardMetrics::register(&r, "respawn_zone").expect("unique metrics"),
            ready: plain_gauge(
                &r,
                "respawn_ready",
                "1 when the server accepts new players, 0 while starting or draining.",
            ),
            cpu_seconds: {
                let c = prometheus::Counter::new("process_cpu_seconds_total", "User and system CPU time spent.")
                    .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            resident_memory: plain_gauge(&r, "process_resident_memory_bytes", "Resident memory size in bytes."),
            persist: PersistFamilies {
                snapshot_bytes: gauge(&r, "respawn_zone_snapshot_bytes", "Size of the last snapshot taken.", &["zone"]),
                snapshot_duration: labeled_histogram(
                    &r,
                    "respawn_zone_snapshot_write_seconds",
                    "Time to write one snapshot, by store (hot or cold).",
                    ms(&[0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
                    &["zone", "store"],
                ),
                snapshots: counter(
                    &r,
                    "respawn_zone_snapshots_total",
                    "Snapshot writes, by store and result.",
                    &["zone", "store", "result"],
                ),
                failures_in_row: gauge(
                    &r,
                    "respawn_zone_snapshot_failures_in_row",
                    "Consecutive failed snapshot writes, by store (0 after a success).",
                    &["zone", "store"],
                ),
                history_segments: counter(
                    &r,
                    "respawn_zone_history_segments_total",
                    "History segments archived for replay, by result.",
                    &["zone", "result"],
                ),
                history_retained_bytes: gauge(
                    &r,
                    "respawn_zone_history_retained_bytes",
                    "Bytes of the history segments this server archived that are still kept.",
                    &["zone"],
                ),
                history_retained_seconds: gauge(
                    &r,
                    "respawn_zone_history_retained_seconds",
                    "How far back the zone's kept history reaches.",
                    &["zone"],
                ),
                history_ticks_dropped: counter(
                    &r,
                    "respawn_zone_history_ticks_dropped_total",
                    "Ticks left out of the history (the archive unreachable while ten minutes of ticks waited): a gap a replay cannot cross.",
                    &["zone"],
                ),
                journal_length: gauge(
                    &r,
                    "respawn_zone_journal_length",
                    "Journal entries stored since the last trim.",
                    &["zone"],
                ),
                journal_pending: gauge(
                    &r,
                    "respawn_zone_journal_pending",
                    "Tick batches waiting to be written to the journal.",
                    &["zone"],
                ),
                events_recorded: counter(
                    &r,
                    "respawn_zone_events_recorded_total",
                    "Events of this process's ticks written to the durable outbox (what a crash can no longer lose).",
                    &["zone"],
                ),
                events_unrecorded: gauge(
                    &r,
                    "respawn_zone_events_unrecorded",
                    "Events generated but not written to the outbox yet (held in memory while the disk refuses them).",
                    &["zone"],
                ),
                outbox_write_failures: counter(
                    &r,
                    "respawn_zone_outbox_write_failures_total",
                    "Outbox appends that failed (a full or failing disk), each cut back off and retried.",
                    &["zone"],
                ),
                events_withdrawn: counter(
                    &r,
                    "respawn_zone_events_withdrawn_total",
                    "Events a lost process recorded in the outbox for ticks the restore did not keep, never published.",
                    &["zone"],
                ),
                journal_failures: counter(
                    &r,
                    "respawn_zone_journal_failures_total",
                    "Failed journal appends.",
                    &["zone"],
                ),
                rpo_ticks: gauge(
                    &r,
                    "respawn_zone_rpo_ticks",
                    "Ticks simulated but not yet durable (journal or snapshot): what a crash now would lose.",
                    &["zone"],
                ),
                restores: counter(
                    &r,
                    "respawn_zone_restores_total",
                    "Zone starts, by where the state came from (hot, cold, fresh).",
                    &["zone", "source"],
                ),
                restore_duration: histogram(
                    &r,
                    "respawn_zone_restore_seconds",
                    "Time to load a snapshot and replay the journal at start.",
                    ms(&[1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0]),
                ),
                outbox_bytes: gauge(
                    &r,
                    "respawn_zone_outbox_bytes",
                    "Bytes of events in the durable outbox.",
                    &["zone"],
                ),
                outbox_pending: gauge(
                    &r,
                    "respawn_zone_outbox_pending_events",
                    "Events in the outbox not yet acknowledged by the broker.",
                    &["zone"],
                ),
                outbox_oldest_age: {
                    let g = prometheus::GaugeVec::new(
                        Opts::new("respawn_zone_outbox_oldest_age_seconds", "Age of the oldest unacknowledged event."),
                        &["zone"],
                    )
                    .expect("valid metric");
                    r.register(Box::new(g.clone())).expect("unique metric");
                    g
                },
                published: counter(
                    &r,
                    "respawn_zone_events_published_total",
                    "Events the broker acknowledged.",
                    &["zone"],
                ),
                publish_failures: counter(
                    &r,
                    "respawn_zone_event_publish_failures_total",
                    "Failed publish attempts (the events stay in the outbox and are sent again).",
                    &["zone"],
                ),
                outbox_dropped: gauge(
                    &r,
                    "respawn_zone_outbox_dropped_events",
                    "Events dropped because the outbox was over its quota since start (each also logged as an error).",
                    &["zone"],
                ),
                leases_lost: counter(
                    &r,
                    "respawn_zone_leases_lost_total",
                    "Zones stopped here because another server was granted their lease (this one was cut off or paused).",
                    &["zone"],
                ),
                taken_over: counter(
                    &r,
                    "respawn_zone_taken_over_total",
                    "Zones this spare adopted because their lease ran out (their server was lost).",
                    &["zone"],
                ),
            },
            registry: r,
        };
        // Every close reason starts at 0, so the series exist before the first refusal.
        for code in respawn_proto::CloseCode::ALL {
            metrics.client_errors.with_label_values(&[code.as_str()]);
        }
        metrics
    }

    pub fn zone(&self, zone: &str) -> ZoneMetrics {
        let z = &[zone];
        // Every reason starts at 0, so dashboards see the series before the first rejection.
        let reasons = respawn_sim::RejectReason::ALL.map(|r| r.as_str());
        for reason in reasons.iter().chain(&["rate_limited", "queue_full"]) {
            self.commands_rejected.with_label_values(&[zone, reason]);
        }
        for code in respawn_proto::CloseCode::ALL {
            self.disconnects.with_label_values(&[zone, code.as_str()]);
        }
        ZoneMetrics {
            players: self.players.with_label_values(z),
            tick_duration: self.tick_duration.with_label_values(z),
            tick_lateness: self.tick_lateness.with_label_values(z),
            tick_number: self.tick_number.with_label_values(z),
            ticks_overrun: self.ticks_overrun.with_label_values(z),
            ticks_paused: self.ticks_paused.with_label_values(z),
            queue_length: self.queue_length.with_label_values(z),
            commands_accepted: self.commands_accepted.with_label_values(z),
            packets_in: self.packets_in.with_label_values(z),
            packets_out: self.packets_out.with_label_values(z),
            bytes_in: self.bytes_in.with_label_values(z),
            bytes_out: self.bytes_out.with_label_values(z),
            rtt: self.rtt.with_label_values(z),
            updates_dropped: self.updates_dropped.with_label_values(z),
            rejected: self.commands_rejected.clone(),
            disconnects: self.disconnects.clone(),
            events: self.events.clone(),
            zone: zone.to_owned(),
        }
    }

    pub fn persist(&self, zone: &str) -> PersistMetrics {
        let f = &self.persist;
        for store in ["hot", "cold"] {
            f.failures_in_row.with_label_values(&[zone, store]).set(0);
        }
        f.publish_failures.with_label_values(&[zone]);
        // Exported from the start, not from the first segment (30 s on).
        for result in ["ok", "failed"] {
            f.history_segments.with_label_values(&[zone, result]);
        }
        f.history_retained_bytes.with_label_values(&[zone]);
        f.history_retained_seconds.with_label_values(&[zone]);
        f.history_ticks_dropped.with_label_values(&[zone]);
        f.leases_lost.with_label_values(&[zone]);
        f.taken_over.with_label_values(&[zone]);
        PersistMetrics {
            zone: zone.to_owned(),
            snapshot_bytes: f.snapshot_bytes.with_label_values(&[zone]),
            journal_length: f.journal_length.with_label_values(&[zone]),
            journal_pending: f.journal_pending.with_label_values(&[zone]),
            journal_failures: f.journal_failures.with_label_values(&[zone]),
            events_withdrawn: f.events_withdrawn.with_label_values(&[zone]),
            events_recorded: f.events_recorded.with_label_values(&[zone]),
            events_unrecorded: f.events_unrecorded.with_label_values(&[zone]),
            outbox_write_failures: f.outbox_write_failures.with_label_values(&[zone]),
            rpo_ticks: f.rpo_ticks.with_label_values(&[zone]),
            families: f.clone(),
        }
    }

    /// A zone stopped here because its lease went to another server.
    pub fn lease_lost(&self, zone: &str) {
        self.persist.leases_lost.with_label_values(&[zone]).inc();
    }

    /// A zone adopted here because its lease ran out.
    pub fn taken_over(&self, zone: &str) {
        self.persist.taken_over.with_label_values(&[zone]).inc();
    }

    pub fn client_error(&self, reason: &str) {
        self.client_errors.with_label_values(&[reason]).inc();
    }

    pub fn connections(&self) -> &IntGauge {
        &self.connections
    }

    pub fn guard(&self) -> &respawn_net::GuardMetrics {
        &self.guard
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Prometheus text exposition, with process figures read fresh.
    pub fn render(&self) -> String {
        if let Some(usage) = crate::process::read_usage() {
            let delta = usage.cpu_seconds - self.cpu_seconds.get();
            if delta > 0.0 {
                self.cpu_seconds.inc_by(delta);
            }
            self.resident_memory.set(usage.resident_bytes as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}
