//! Snapshot files from arbitrary bytes. The raw input is read as a file (`wal::decode_snapshot`:
//! header and crc32), which must refuse anything cut short or altered. Then, past the crc check,
//! the input is taken as `lsn: u64 LE` and a postcard-encoded state and recovered
//! (`wal::recover`), as a snapshot whose crc matched: recovery must rebuild a state that passes
//! the audit or refuse it with a `Corrupt` error naming the event, never panic; and a state it
//! accepts must be one the engine can go on from (`carry_on`).

#![no_main]

use engine::inventory::{EventId, Inventory, Limits};
use engine::wal::{self, StorageError};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// The event every seed's snapshot belongs to (`seeds` writes them for it).
const EVENT: EventId = EventId(Uuid::from_u128(0xb0c5_0ff1_ce00_0000_0000_0000_0000_0001));

/// What the actor does with a recovered state before and after its first request: reads it,
/// forgets old keys and notes, releases due holds and cancels unpaid orders, far in the future so
/// that everything is due. None of it may panic, and the state must still pass `check_state`.
fn carry_on(inventory: &mut Inventory) {
    let _ = inventory.summary();
    let _ = inventory.seat_availability(None);
    let _ = inventory.memory_bytes();
    let now = inventory
        .spec()
        .starts_at_ms
        .saturating_add(365 * 86_400_000);
    inventory.prune(now, &Limits::default());
    while inventory.expire_due(now, 64).is_some() {}
    while inventory.expire_unpaid(now).is_some() {}
    inventory
        .check_state()
        .expect("a recovered state stays whole when it goes on");
}

fuzz_target!(|data: &[u8]| {
    match wal::decode_snapshot(EVENT, data) {
        Ok((lsn, state)) => {
            assert_eq!(lsn.to_le_bytes(), data[..8]);
            assert_eq!(state, data[12..]);
        }
        Err(e) => assert!(
            matches!(&e, StorageError::Corrupt { event, .. } if *event == EVENT),
            "{e}"
        ),
    }
    if data.len() < 8 {
        return;
    }
    let lsn = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    match wal::recover(
        EVENT,
        Some((lsn, data[8..].to_vec())),
        vec![],
        |_, _| Ok(()),
    ) {
        Ok(mut inventory) => {
            assert_eq!(inventory.id(), EVENT);
            assert_eq!(inventory.applied(), lsn);
            carry_on(&mut inventory);
        }
        Err(e) => assert!(
            matches!(&e, StorageError::Corrupt { event, .. } if *event == EVENT),
            "{e}"
        ),
    }
});
