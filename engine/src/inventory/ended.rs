//! Notes of how recently ended holds ended (released or expired), so that a late confirm or
//! release hears "expired" or "released" rather than "not found". Bounded in time and in count.
//!
//! The notes are kept in chunks of at most `CHUNK_NOTES`: no table ever grows past that, so adding
//! a note never rehashes millions of entries in the middle of a drop, and forgetting the oldest
//! notes drops a whole chunk at once. Chunks sit behind an `Arc`: a copy of the notes (a
//! snapshot's) shares them, and a new note copies only the last chunk, if the copy shares it.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{HashMap, HoldEnd, HoldId};

const CHUNK_NOTES: usize = 65_536;
/// Room a chunk starts with when it is the only one. It grows by doubling, each growth rehashing
/// at most a chunk's notes; a chunk after a full one starts full-sized. Pre-sizing every event's
/// first chunk cost each event about 2.4 MB, which the kernel zeroed page by page when its first
/// holds ended: 200 events whose holds expired together stalled the engine for about a second
/// (`boxoffice-bench run`, 200 events, 5 s holds; perf: `clear_page_erms` under
/// `HashMap::insert`).
const FIRST_CHUNK_NOTES: usize = 256;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Chunk {
    /// When the newest note of the chunk was taken.
    newest_at_ms: u64,
    notes: HashMap<HoldId, HoldEnd>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct EndedNotes {
    chunks: VecDeque<Arc<Chunk>>,
    total: usize,
}

impl EndedNotes {
    pub fn note(&mut self, hold: HoldId, end: HoldEnd, at_ms: u64) {
        if self
            .chunks
            .back()
            .is_none_or(|c| c.notes.len() >= CHUNK_NOTES)
        {
            let room = if self.chunks.is_empty() {
                FIRST_CHUNK_NOTES
            } else {
                CHUNK_NOTES
            };
            self.chunks.push_back(Arc::new(Chunk {
                newest_at_ms: at_ms,
                notes: HashMap::with_capacity_and_hasher(room, Default::default()),
            }));
        }
        let chunk = Arc::make_mut(self.chunks.back_mut().expect("just ensured"));
        chunk.newest_at_ms = chunk.newest_at_ms.max(at_ms);
        if chunk.notes.insert(hold, end).is_none() {
            self.total += 1;
        }
    }

    pub fn get(&self, hold: &HoldId) -> Option<HoldEnd> {
        self.chunks
            .iter()
            .rev()
            .find_map(|c| c.notes.get(hold).copied())
    }

    /// Forgets chunks whose newest note is older than `retention_ms`, and the oldest chunks while
    /// there are more than `max_notes` notes. A note lives at least `retention_ms` unless the
    /// count bound pushes it out first.
    pub fn prune(&mut self, now_ms: u64, retention_ms: u64, max_notes: usize) {
        while let Some(front) = self.chunks.front() {
            let stale = front.newest_at_ms.saturating_add(retention_ms) < now_ms;
            let crowded = self.total > max_notes && self.chunks.len() > 1;
            if !stale && !crowded {
                break;
            }
            self.total -= front.notes.len();
            self.chunks.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.total
    }

    /// The count kept is the notes' (`prune` takes chunks off it); part of `check_state`.
    pub fn check(&self) -> Result<(), String> {
        let notes: usize = self.chunks.iter().map(|c| c.notes.len()).sum();
        ensure!(
            notes == self.total,
            "{} ended-hold notes counted, {notes} kept",
            self.total
        );
        Ok(())
    }

    /// Notes the chunks have room for.
    pub fn capacity(&self) -> usize {
        self.chunks.iter().map(|c| c.notes.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn notes_are_found_then_forgotten_by_age_and_by_count() {
        let mut notes = EndedNotes::default();
        let id = |n: u128| HoldId(Uuid::from_u128(n));
        for n in 0..(CHUNK_NOTES as u128 * 3) {
            notes.note(
                id(n),
                HoldEnd::Expired,
                1_000 + (n as u64 / CHUNK_NOTES as u64),
            );
        }
        notes.note(id(7), HoldEnd::Released, 1_003);
        assert_eq!(notes.get(&id(7)), Some(HoldEnd::Released));
        assert_eq!(notes.get(&id(8)), Some(HoldEnd::Expired));
        assert_eq!(notes.len(), CHUNK_NOTES * 3 + 1);
        // Over the count bound: the oldest chunks go, until the rest fit (the last chunk holds
        // just the note of hold 7).
        notes.prune(1_003, 1_000_000, CHUNK_NOTES * 2);
        assert_eq!(notes.len(), CHUNK_NOTES + 1);
        assert_eq!(notes.get(&id(8)), None);
        assert_eq!(notes.get(&id(7)), Some(HoldEnd::Released));
        // Past the retention: everything older goes.
        notes.prune(1_002 + 10 + 1, 10, usize::MAX);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes.get(&id(7)), Some(HoldEnd::Released));
    }

    #[test]
    fn an_event_with_few_ended_holds_keeps_little_room_for_notes() {
        let mut notes = EndedNotes::default();
        notes.note(HoldId(Uuid::from_u128(1)), HoldEnd::Expired, 1_000);
        assert!(notes.chunks[0].notes.capacity() < 1_024);
        // A chunk after a full one starts full-sized: no growth while a busy event fills it.
        for n in 2..=(CHUNK_NOTES as u128 + 1) {
            notes.note(HoldId(Uuid::from_u128(n)), HoldEnd::Expired, 1_000);
        }
        assert_eq!(notes.chunks.len(), 2);
        assert!(notes.chunks[1].notes.capacity() >= CHUNK_NOTES);
    }
}
