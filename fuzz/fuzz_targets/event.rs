//! A record from the events topic: the platform decodes it with
//! `Event::decode_checked`, which refuses what it cannot store with an
//! error, never a panic; what it accepts encodes back to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use respawn_proto::events::Event;

fuzz_target!(|record: &[u8]| {
    let Ok(event) = Event::decode_checked(record) else { return };
    let again = Event::decode_checked(&event.encode_to_vec()).expect("an accepted event encodes to a valid one");
    assert!(again == event, "a decoded event encodes back to itself");
    let _ = event.id();
});
