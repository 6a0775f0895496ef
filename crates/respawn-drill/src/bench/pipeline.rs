//! `respawn bench pipeline`: events/s from a zone's outbox to the broker
//! (the real publisher and idempotent producer) and from the broker into
//! MariaDB (the real platform consumer: one transaction per batch with the
//! player records). It starts Tansu and MariaDB itself unless given others,
//! and reads each process's CPU time over each stage, so Respawn's own cost
//! (this process: the publisher, then the consumer) stands apart from the
//! broker's and the database's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use prost::Message as _;
use respawn_api::prom;
use respawn_platform::{run_consumer, ConsumerConfig, Ledger, PlatformMetrics};
use respawn_proto::events::{self as ev, event::Kind, Event, EVENT_SCHEMA_VERSION, TOPIC};
use respawn_store::kafka::{EventLog, KafkaEventLog};
use respawn_store::outbox::Outbox;
use respawn_zone::metrics::Metrics;
use respawn_zone::persist::PersistState;
use respawn_zone::publish::{run_publisher, PublishGate};
use respawn_zone::ServerConfig;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::services::{create_database, start_mariadb, start_tansu};
use respawn_harness::process::{free_port, Service};
use respawn_harness::TempDir;

#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Events pushed through each stage.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// An existing Kafka-compatible broker (its topic game.events.player must exist)
    /// instead of a Tansu started for the benchmark.
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// An existing MySQL/MariaDB server, e.g. mysql://root@127.0.0.1:3306 (a database is
    /// created on it) instead of a MariaDB started for the benchmark.
    #[arg(long)]
    mysql_url: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct PipelineReport {
    events: u64,
    event_bytes_mean: f64,
    broker: String,
    database: String,
    /// Outbox → broker, acknowledged (acks=all, idempotent).
    produced_per_s: f64,
    produce_seconds: f64,
    produce_cpu: StageCpu,
    /// Broker → MariaDB, committed, from the first stored batch to the last.
    persisted_per_s: f64,
    persist_seconds: f64,
    persist_cpu: StageCpu,
    batches: u64,
    batch_p50_ms: f64,
    batch_p99_ms: f64,
}

/// CPU seconds each process spent over one stage. The broker's and the
/// database's are known only for those started here.
#[derive(Debug, Serialize)]
struct StageCpu {
    /// This process: the zone's publisher, or the platform's consumer.
    respawn_seconds: f64,
    broker_seconds: Option<f64>,
    database_seconds: Option<f64>,
    /// Events of the stage per CPU-second of Respawn's own work.
    respawn_events_per_core_s: f64,
}

/// CPU time read at a stage's start, for the processes that can be read.
struct CpuMark {
    respawn: f64,
    broker: Option<f64>,
    database: Option<f64>,
}

fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    match pid {
        None => respawn_zone::process::read_usage().map(|u| u.cpu_seconds),
        Some(pid) => respawn_zone::process::read_usage_of(pid).map(|u| u.cpu_seconds),
    }
}

impl CpuMark {
    fn now(broker: Option<u32>, database: Option<u32>) -> Result<Self> {
        Ok(CpuMark {
            respawn: cpu_seconds(None).context("this process's CPU time (/proc/self/stat)")?,
            broker: broker.and_then(|pid| cpu_seconds(Some(pid))),
            database: database.and_then(|pid| cpu_seconds(Some(pid))),
        })
    }

    fn since(&self, events: u64, broker: Option<u32>, database: Option<u32>) -> Result<StageCpu> {
        let end = CpuMark::now(broker, database)?;
        let spent = |from: Option<f64>, to: Option<f64>| from.zip(to).map(|(a, b)| b - a);
        let respawn_seconds = end.respawn - self.respawn;
        Ok(StageCpu {
            respawn_seconds,
            broker_seconds: spent(self.broker, end.broker),
            database_seconds: spent(self.database, end.database),
            respawn_events_per_core_s: events as f64 / respawn_seconds.max(0.01),
        })
    }
}

fn show_cpu(stage: &str, cpu: &StageCpu) {
    let other = |what: &str, seconds: Option<f64>| seconds.map_or(String::new(), |s| format!(", {what} {s:.1} s"));
    println!(
        "    {stage} CPU: Respawn {:.1} s ({:.0} events/s per core){}{}",
        cpu.respawn_seconds,
        cpu.respawn_events_per_core_s,
        other("broker", cpu.broker_seconds),
        other("database", cpu.database_seconds)
    );
}

/// Targets of the event-pipeline issue on the reference machine.
const PRODUCED_TARGET: f64 = 200_000.0;
const PERSISTED_TARGET: f64 = 50_000.0;

pub fn run(args: PipelineArgs) -> Result<()> {
    if args.events == 0 || args.events > 10_000_000 {
        bail!("--events must be 1..=10000000");
    }
    let report = tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(measure(&args))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("Event pipeline, {} events of {:.0} bytes on average", report.events, report.event_bytes_mean);
        println!("  broker: {}; database: {}", report.broker, report.database);
        println!(
            "  outbox → broker   {:>10.0} events/s  ({:.1} s)   target >= {PRODUCED_TARGET:.0}",
            report.produced_per_s, report.produce_seconds
        );
        show_cpu("publisher", &report.produce_cpu);
        println!(
            "  broker → MariaDB  {:>10.0} events/s  ({:.1} s)   target >= {PERSISTED_TARGET:.0}",
            report.persisted_per_s, report.persist_seconds
        );
        show_cpu("consumer", &report.persist_cpu);
        println!(
            "  batches: {}, p50 {:.1} ms, p99 {:.1} ms (transaction and offset commit)",
            report.batches, report.batch_p50_ms, report.batch_p99_ms
        );
    }
    Ok(())
}

/// A realistic mix of events: many players, several per tick.
fn synthetic(i: u64, epoch: u64) -> Event {
    let kind = match i % 5 {
        0 => Kind::GoldChanged(ev::GoldChanged { delta: 5, total: i }),
        1 => Kind::XpGained(ev::XpGained { amount: 40, total: i * 40 }),
        2 => Kind::ItemAcquired(ev::ItemAcquired { item: 2 + (i % 3) as u32, count: 1 }),
        3 => Kind::NpcKilled(ev::NpcKilled { npc: (i % 500) as u32 }),
        _ => Kind::LevelUp(ev::LevelUp { level: 2 + (i % 40) as u32 }),
    };
    Event {
        schema_version: EVENT_SCHEMA_VERSION,
        zone: 1,
        epoch,
        tick: i / 10,
        index: (i % 10) as u32,
        player: 1 + i % 1_000,
        incarnation: 0,
        kind: Some(kind),
    }
}

fn progress(json: bool, what: &str, done: u64, total: u64) {
    if !json {
        eprintln!("  {what}: {done} of {total}");
    }
}

async fn measure(args: &PipelineArgs) -> Result<PipelineReport> {
    let dir = TempDir::new("bench-pipeline")?;
    let (broker_service, brokers, broker) = match &args.kafka_brokers {
        Some(b) => (None, b.clone(), format!("external ({b})")),
        None => {
            let port = free_port()?;
            let tansu = start_tansu(&dir.path().join("broker"), port, port).await?;
            (Some(tansu), format!("127.0.0.1:{port}"), "Tansu 0.6 (SQLite storage), started here".to_owned())
        }
    };
    let (mysql_service, server, database) = match &args.mysql_url {
        Some(url) => (None, url.clone(), "external MySQL/MariaDB".to_owned()),
        None => {
            let mysql = start_mariadb(&dir.path().join("mariadb")).await?;
            let url = format!("mysql://root@127.0.0.1:{}", mysql.port);
            (Some(mysql), url, "MariaDB (64 MiB buffer pool), started here".to_owned())
        }
    };
    let broker_pid = broker_service.as_ref().and_then(Service::pid);
    let database_pid = mysql_service.as_ref().and_then(Service::pid);
    let database_url = create_database(&server, &format!("respawn_bench_{}", std::process::id())).await?;

    // The outbox, filled as zones fill it: appended in tick-sized chunks, fsync'd.
    let defaults = ServerConfig::defaults();
    let outbox =
        Arc::new(Outbox::open(&dir.path().join("outbox"), defaults.outbox_quota_bytes, defaults.outbox_segment_bytes)?);
    let epoch = respawn_api::clock::unix_nanos() as u64;
    let mut bytes = 0usize;
    let mut i = 0u64;
    while i < args.events {
        let chunk: Vec<Vec<u8>> =
            (i..(i + 10_000).min(args.events)).map(|n| synthetic(n, epoch).encode_to_vec()).collect();
        bytes += chunk.iter().map(Vec::len).sum::<usize>();
        i += chunk.len() as u64;
        outbox.append(&chunk)?;
    }

    // Stage 1: the zone's publisher drains the outbox to the broker.
    let log: Arc<dyn EventLog> = Arc::new(KafkaEventLog::new(&brokers, TOPIC, Duration::from_secs(300))?);
    let stop = CancellationToken::new();
    let started = Instant::now();
    let cpu = CpuMark::now(broker_pid, database_pid)?;
    // Every synthetic tick counts as durable.
    let (gate, durable) = (Arc::new(PublishGate::default()), Arc::new(PersistState::default()));
    durable.durable_tick.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
    gate.begin(epoch, 0, durable);
    let publisher = tokio::spawn(run_publisher(
        "bench".into(),
        outbox.clone(),
        gate,
        log,
        Metrics::new("bench").persist("bench"),
        stop.clone(),
        Duration::ZERO,
    ));
    let mut shown = Instant::now();
    while outbox.acked() < args.events {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the broker took only {} of {} events in 10 minutes", outbox.acked(), args.events);
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(args.json, "produced", outbox.acked(), args.events);
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let produce = started.elapsed();
    let produce_cpu = cpu.since(args.events, broker_pid, database_pid)?;
    stop.cancel();
    publisher.await.context("publisher")?;

    // Stage 2: the platform consumer stores them in MariaDB.
    let ledger: Arc<dyn Ledger> = Arc::new(respawn_platform::connect(&database_url, Duration::from_secs(30)).await?);
    let metrics = Arc::new(PlatformMetrics::new());
    let config = ConsumerConfig {
        brokers: brokers.clone(),
        topic: TOPIC.to_owned(),
        group: format!("respawn-bench-{epoch}"),
        batch_max: 5_000,
        batch_wait: Duration::from_millis(50),
    };
    let stop = CancellationToken::new();
    let cpu = CpuMark::now(broker_pid, database_pid)?;
    let consumer = tokio::spawn(run_consumer(ledger.clone(), config, metrics.clone(), stop.clone()));
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let mut shown = Instant::now();
    loop {
        let stored = metrics.stored.get();
        if stored > 0 && first.is_none() {
            first = Some((Instant::now(), stored));
        }
        if stored >= args.events {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {stored} of {} events stored in 10 minutes", args.events);
        }
        if shown.elapsed() >= Duration::from_secs(2) {
            progress(args.json, "persisted", stored, args.events);
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let persist = started.elapsed();
    let persist_cpu = cpu.since(args.events, broker_pid, database_pid)?;
    stop.cancel();
    consumer.await.context("consumer")??;
    let (t_first, n_first) = first.unwrap_or((started, 0));
    let sustained = args.events.saturating_sub(n_first) as f64 / t_first.elapsed().as_secs_f64().max(1e-9);
    let batches = metrics.batch_duration.get_sample_count();
    let samples = prom::parse(&metrics.render(ledger.pool_stats()));
    let histogram = prom::Histogram::read(&samples, "respawn_platform_batch_duration_seconds", &[]);
    let quantile = |q: f64| histogram.as_ref().and_then(|h| h.quantile(q)).map_or(0.0, |s| s * 1e3);
    Ok(PipelineReport {
        events: args.events,
        event_bytes_mean: bytes as f64 / args.events as f64,
        broker,
        database,
        produced_per_s: args.events as f64 / produce.as_secs_f64(),
        produce_seconds: produce.as_secs_f64(),
        produce_cpu,
        persisted_per_s: if n_first < args.events { sustained } else { args.events as f64 / persist.as_secs_f64() },
        persist_seconds: persist.as_secs_f64(),
        persist_cpu,
        batches,
        batch_p50_ms: quantile(0.5),
        batch_p99_ms: quantile(0.99),
    })
}
