//! Snapshot bytes from a store: `Zone::decode_snapshot` refuses what is not
//! a valid zone with an error, never a panic, and a zone it accepts encodes
//! back to the same zone and can be ticked. Odd first bytes take the input
//! as a payload and wrap it in a valid header (magic, version, length,
//! CRC-32), so the fuzzer reaches the payload parser past the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use respawn_sim::snapshot::framed;
use respawn_sim::Zone;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode % 2 == 0 { rest.to_vec() } else { framed(rest) };
    let Ok(mut zone) = Zone::decode_snapshot(&bytes) else { return };
    let again = Zone::decode_snapshot(&zone.encode_snapshot()).expect("an accepted zone encodes to a valid snapshot");
    assert!(again == zone, "a decoded zone encodes back to itself");
    zone.tick(&[]);
});
