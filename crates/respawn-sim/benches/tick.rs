//! Criterion benches of `Zone::tick` alone (no replication) for 1k, 5k and
//! 10k players, each sending a move every tick, at 100 m² of field per player.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use respawn_sim::geom::isqrt;
use respawn_sim::rng::Rng;
use respawn_sim::{Command, CommandKind, Point, Zone, ZoneConfig};

fn populated_zone(players: u64) -> Zone {
    let side = (isqrt(players as i64 * 100) * 100) as i32;
    let mut config = ZoneConfig::standard(1, "bench", 7).resized(side, side);
    config.npc_count = (players / 50) as u32;
    config.max_items = (players / 10) as u32;
    let mut zone = Zone::new(config).expect("valid config");
    let joins: Vec<Command> = (1..=players)
        .map(|p| Command { player: p, seq: 0, kind: CommandKind::join_fresh(format!("bot{p}")) })
        .collect();
    zone.tick(&joins);
    zone
}

fn bench_tick(c: &mut Criterion) {
    let mut group = c.benchmark_group("zone_tick");
    group.sample_size(20);
    for players in [1_000u64, 5_000, 10_000] {
        let mut zone = populated_zone(players);
        let mut rng = Rng::new(1);
        let moves: Vec<Command> = (1..=players)
            .map(|p| {
                let v = Point::new(rng.range_i32(-20, 20), rng.range_i32(-20, 20));
                Command { player: p, seq: 1, kind: CommandKind::Move { velocity: v } }
            })
            .collect();
        group.throughput(Throughput::Elements(players));
        group.bench_with_input(BenchmarkId::from_parameter(players), &moves, |b, moves| {
            b.iter(|| zone.tick(moves));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_tick);
criterion_main!(benches);
