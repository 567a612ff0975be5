//! Snapshot files from arbitrary bytes. The raw input is read as a file (`wal::decode_snapshot`:
//! header and crc32), which must refuse anything cut short or altered. Then, past the crc check,
//! the input is taken as `lsn: u64 LE` and a postcard-encoded state and recovered
//! (`wal::recover`), as a snapshot whose crc matched: recovery must rebuild a state that passes
//! the audit or refuse it with a `Corrupt` error naming the event, never panic.

#![no_main]

use engine::inventory::EventId;
use engine::wal::{self, StorageError};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// The event every seed's snapshot belongs to (`seeds` writes them for it).
const EVENT: EventId = EventId(Uuid::from_u128(0xb0c5_0ff1_ce00_0000_0000_0000_0000_0001));

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
        Ok(inventory) => {
            assert_eq!(inventory.id(), EVENT);
            assert_eq!(inventory.applied(), lsn);
        }
        Err(e) => assert!(
            matches!(&e, StorageError::Corrupt { event, .. } if *event == EVENT),
            "{e}"
        ),
    }
});
