//! A log segment from arbitrary bytes: `decode_segment` must refuse anything but a count header
//! and that many intact frames (`len`, `crc32`, postcard record) with an error naming the event,
//! and `recover` must refuse such a log, never panic. Frames with a wrong crc are almost all that
//! mutation makes here; `log_records` frames its records with a right one.

#![no_main]

use engine::inventory::EventId;
use engine::wal::{self, StorageError};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// The event every seed's log belongs to (`seeds` writes them for it).
const EVENT: EventId = EventId(Uuid::from_u128(0xb0c5_0ff1_ce00_0000_0000_0000_0000_0001));

fuzz_target!(|data: &[u8]| {
    let decoded = wal::decode_segment(EVENT, data);
    if let Err(e) = &decoded {
        assert!(
            matches!(e, StorageError::Corrupt { event, .. } if *event == EVENT),
            "{e}"
        );
    }
    match wal::recover(EVENT, None, vec![(0, data.to_vec())], |_, _| Ok(())) {
        Ok(inventory) => {
            assert!(decoded.is_ok(), "a segment that does not decode recovered");
            assert_eq!(inventory.id(), EVENT);
        }
        Err(e) => assert!(
            matches!(&e, StorageError::Corrupt { event, .. } if *event == EVENT),
            "{e}"
        ),
    }
});
