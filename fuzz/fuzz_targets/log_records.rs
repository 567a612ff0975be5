//! Recovery from a log of records that pass every frame check: arbitrary postcard-decoded records,
//! framed with a right crc32 into contiguous segments, recovered by `wal::recover`. Recovery must
//! either rebuild a state that passes the audit or refuse the log with a `Corrupt` error naming
//! the event (and the lsn of the record it refused), never panic. A recovered state must also
//! survive its own snapshot: encoded, read back and recovered again, it is the same state.
//!
//! Input: one byte, records per segment (1 + byte % 8), then chunks of `len: u16 LE` and that many
//! bytes, each decoded as a `Record` (chunks that do not decode are skipped).

#![no_main]

use engine::inventory::{EventId, Record};
use engine::wal::{self, StorageError};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// The event every seed's log belongs to (`seeds` writes them for it).
const EVENT: EventId = EventId(Uuid::from_u128(0xb0c5_0ff1_ce00_0000_0000_0000_0000_0001));

fuzz_target!(|data: &[u8]| {
    let Some((&per_segment, mut rest)) = data.split_first() else {
        return;
    };
    let per_segment = 1 + usize::from(per_segment % 8);
    let mut records = Vec::new();
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        if let Ok(record) = postcard::from_bytes::<Record>(&rest[2..2 + len]) {
            records.push(record);
        }
        rest = &rest[2 + len..];
    }
    let mut segments = Vec::new();
    for (i, chunk) in records.chunks(per_segment).enumerate() {
        let mut frames = Vec::new();
        wal::encode_records(chunk, &mut frames);
        let segment = wal::finish_segment(chunk.len() as u32, &frames);
        segments.push(((i * per_segment) as u64, segment));
    }
    let mut replayed = 0u64;
    match wal::recover(EVENT, None, segments, |_, _| {
        replayed += 1;
        Ok(())
    }) {
        Ok(inventory) => {
            assert_eq!(inventory.id(), EVENT);
            assert_eq!(inventory.applied(), replayed);
            let state = postcard::to_stdvec(&inventory).expect("a state encodes");
            let again = wal::recover(EVENT, Some((inventory.applied(), state)), vec![], |_, _| {
                Ok(())
            })
            .expect("a recovered state's snapshot recovers");
            assert_eq!(again.applied(), inventory.applied());
            assert_eq!(
                format!("{:?}", again.summary()),
                format!("{:?}", inventory.summary())
            );
        }
        Err(e) => assert!(
            matches!(&e, StorageError::Corrupt { event, .. } if *event == EVENT),
            "{e}"
        ),
    }
});
