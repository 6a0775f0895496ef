//! Any bytes a client sends as a WebSocket frame: the zone server decodes
//! them with `decode_client`, and the game commands among them go into a
//! tick. Neither may panic, and what decodes must encode back to the same
//! message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use respawn_proto::client_message::Body;
use respawn_sim::{Command, CommandKind, Point, Zone, ZoneConfig};

fuzz_target!(|frame: &[u8]| {
    let Ok(body) = respawn_proto::decode_client(frame) else { return };
    let again = respawn_proto::decode_client(&respawn_proto::encode_client(body.clone()));
    assert!(again.is_ok_and(|b| b == body), "a decoded message encodes back to itself");
    // What the zone server makes of a game command (conn.rs), played in a zone.
    let kind = match body {
        Body::Move(m) => CommandKind::Move { velocity: Point::new(m.vx, m.vy) },
        Body::Attack(a) => CommandKind::Attack { target: a.target },
        Body::Pickup(p) => CommandKind::Pickup { item: p.item },
        _ => return,
    };
    let Ok(mut zone) = Zone::new(ZoneConfig::standard(1, "fuzz", 7)) else { return };
    zone.tick(&[Command { player: 1, seq: 1, kind: CommandKind::join_fresh("fuzz") }]);
    zone.tick(&[Command { player: 1, seq: 2, kind }]);
});
