//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/seed-*`): inputs of
//! every kind the targets take, made by this build. The test checks that the
//! committed seeds are still valid inputs (a format change would turn them
//! into noise the fuzzer starts from); `RESPAWN_BLESS_FUZZ_SEEDS=1` rewrites
//! them. The rest of each corpus is what `cargo fuzz` found and kept.

use std::path::PathBuf;

use respawn_proto::client_message::Body;
use respawn_proto::events::Event;
use respawn_sim::{Command, CommandKind, Point, Zone, ZoneConfig};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

/// A zone played by three players for 400 ticks: moves, attacks, pickups.
fn played_zone() -> (Zone, Vec<Vec<u8>>) {
    let mut zone = Zone::new(ZoneConfig::standard(1, "seed", 7)).expect("standard zone");
    let mut events = Vec::new();
    let joins: Vec<Command> =
        (1..=3).map(|p| Command { player: p, seq: 1, kind: CommandKind::join_fresh(format!("seed{p}")) }).collect();
    events.extend(respawn_zone::events::encode_all(&zone.tick(&joins).events));
    for t in 0..400u32 {
        let mut commands = Vec::new();
        for p in 1..=3u64 {
            let seq = t + 2;
            let kind = match t % 3 {
                0 => CommandKind::Move { velocity: Point::new((t as i32 % 7 - 3) * 40, (p as i32 - 2) * 50) },
                1 => match zone.npcs().keys().next() {
                    Some(&target) => CommandKind::Attack { target },
                    None => continue,
                },
                _ => match zone.items().keys().next() {
                    Some(&item) => CommandKind::Pickup { item },
                    None => continue,
                },
            };
            commands.push(Command { player: p, seq, kind });
        }
        events.extend(respawn_zone::events::encode_all(&zone.tick(&commands).events));
    }
    (zone, events)
}

fn client_frames() -> Vec<Vec<u8>> {
    let join = respawn_proto::Join {
        protocol_version: respawn_proto::PROTOCOL_VERSION,
        token: "v1.eyJwbGF5ZXJfaWQiOjF9.c2ln".into(),
        zone: "meadow".into(),
        resume_token: "r".into(),
        character_ticket: "character.7b7d.00".into(),
    };
    [
        Body::Join(join),
        Body::Move(respawn_proto::MoveInput { seq: 2, vx: 120, vy: -80 }),
        Body::Attack(respawn_proto::Attack { seq: 3, target: 9 }),
        Body::Pickup(respawn_proto::Pickup { seq: 4, item: 12 }),
        Body::Ping(respawn_proto::Ping { client_time: 1_700_000_000_000 }),
        Body::Leave(respawn_proto::Leave {}),
    ]
    .into_iter()
    .map(|b| respawn_proto::encode_client(b).to_vec())
    .collect()
}

/// Seeds per target. The snapshot target's first byte picks raw bytes (even)
/// or a payload it wraps in a valid header (odd).
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let (zone, events) = played_zone();
    let snapshot = zone.encode_snapshot();
    let fresh = Zone::new(ZoneConfig::standard(2, "fresh", 1)).expect("zone").encode_snapshot();
    let snapshots = vec![
        [&[0u8][..], &snapshot].concat(),
        [&[1u8][..], &snapshot[16..]].concat(),
        [&[1u8][..], &fresh[16..]].concat(),
    ];
    // One event of each kind the game made, in order of first appearance.
    let mut seen = Vec::new();
    let mut kinds = Vec::new();
    for e in events {
        let kind = Event::decode_checked(&e).expect("the game's events decode").kind.map(|k| k.name());
        if !seen.contains(&kind) {
            seen.push(kind);
            kinds.push(e);
        }
    }
    vec![("client_frame", client_frames()), ("snapshot", snapshots), ("event", kinds)]
}

#[test]
fn the_committed_seeds_are_inputs_this_build_accepts() {
    let bless = std::env::var_os("RESPAWN_BLESS_FUZZ_SEEDS").is_some();
    for (target, made) in seeds() {
        assert!(made.len() >= 3, "{target}: seeds of several kinds");
        let dir = corpus(target);
        if bless {
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for (i, seed) in made.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), seed).expect("write seed");
            }
        }
        let mut committed = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus is committed") {
            let path = entry.expect("entry").path();
            if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
                continue;
            }
            let bytes = std::fs::read(&path).expect("seed");
            let accepted = match target {
                "client_frame" => respawn_proto::decode_client(&bytes).is_ok(),
                "event" => Event::decode_checked(&bytes).is_ok(),
                _ => match bytes.split_first() {
                    Some((0, raw)) => Zone::decode_snapshot(raw).is_ok(),
                    Some((_, payload)) => Zone::decode_snapshot(&respawn_sim::snapshot::framed(payload)).is_ok(),
                    None => false,
                },
            };
            assert!(accepted, "{} is no longer a valid input: rerun with RESPAWN_BLESS_FUZZ_SEEDS=1", path.display());
            committed += 1;
        }
        assert_eq!(committed, made.len(), "{target}: every seed is committed");
    }
}
