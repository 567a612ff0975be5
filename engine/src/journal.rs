//! The round journal of [`crate::wal::SledLog`]: the value a flush makes durable, and what is held
//! in memory until it is folded into the per-event trees. It never decides what is written or
//! when a flush happens, and it never holds the only copy of a flushed write: everything staged
//! here is in a journal value of its round.
//!
//! Why: sled rewrites (encodes, compresses, writes and fsyncs) every leaf a flush dirtied, and a
//! segment or outbox entry dirties its event's own leaf. A round of 70 records over 28 events
//! (200 events of 500 tickets, 1,000 shoppers: five shoppers per event, so two or three records
//! per event per round) dirtied about 60 leaves, and the commit thread spent most of its time,
//! and 30-40% of the process's CPU, rewriting them. With the journal a round writes one value,
//! and an event's records of many rounds reach its leaves together, a few events per round.
//!
//! A value: `crc32: u32 LE` of the rest, then entries of `kind: u8` (0 a segment, 1 an outbox
//! entry), `key: [u8; 24]` (event ++ first lsn or seq, as in the trees), `len: u32 LE`, the
//! bytes. Since data format 7 a value is a frame of the journal files (`journal_files`), appended
//! and synced by the round's flush, and the trees are flushed by sled every 100 ms (the
//! checkpoint); in format 6 it was a value of sled tree `journal` (key = round number, u64
//! big-endian), written and flushed with the trees. Opening the log folds every value of both
//! into the trees (outbox entries the broker acknowledged are skipped) before anything reads
//! it, so recovery reads only the trees.
//!
//! A journal file is given up only once every round it holds is in the trees and sled flushed
//! them: an event's writes stay in the journal until the checkpoint after its fold. Folding
//! again what was folded rewrites the same bytes; a segment whose records a snapshot covers,
//! written again, is skipped by recovery and dropped by the next compaction.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::inventory::EventId;
use crate::wal::{StorageError, segment_count, set_segment_count};

/// An event folded into the trees once its oldest staged write is this many journal values old.
pub const FOLD_AGE_ROUNDS: u64 = 32;
/// Events folded per flush at least; more when more events have staged writes, so that each is
/// folded within about `FOLD_AGE_ROUNDS` more flushes.
pub const FOLD_EVENTS_PER_ROUND: usize = 8;
/// An event with this many bytes staged goes to the trees at this flush: a busy event fills a
/// leaf by itself, and staging it longer only holds memory.
pub const FOLD_EVENT_BYTES: usize = 64 << 10;
/// Bounds on what is staged in all: past either, a flush folds every event.
pub const MAX_STAGED_BYTES: usize = 64 << 20;
pub const MAX_JOURNAL_VALUES: u64 = 4_096;
/// Consecutive segments of an event are folded into one, up to this size.
pub const MAX_FOLDED_SEGMENT_BYTES: usize = 256 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Segment = 0,
    Outbox = 1,
}

/// One event's writes not yet in the trees.
#[derive(Default)]
pub struct Unfolded {
    pub segments: BTreeMap<u64, Vec<u8>>,
    pub outbox: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    /// The oldest journal value holding some of them; `None` while they are only this round's.
    since: Option<u64>,
}

impl Unfolded {
    fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.outbox.is_empty()
    }
}

/// Writes staged in memory: this round's, and earlier rounds' not yet folded (each in a journal
/// value). Shared by every clone of the log, behind one mutex.
#[derive(Default)]
pub struct Staged {
    pub events: BTreeMap<EventId, Unfolded>,
    bytes: usize,
    /// This round's writes in order, for its journal value.
    round: Vec<(Kind, EventId, u64)>,
    /// The oldest journal value still needed, and the number of the next.
    pub journal_first: u64,
    pub journal_next: u64,
}

/// What a flush does, decided under the lock: the round's journal value (if any), the events to
/// fold, and the journal values no longer needed once the trees with those folds are flushed
/// (`journal_first` is then the end of that range).
pub struct FlushPlan {
    pub journal: Option<(u64, Vec<u8>)>,
    pub folded: Vec<(EventId, Unfolded)>,
    pub released: std::ops::Range<u64>,
}

impl Staged {
    pub fn stage(&mut self, kind: Kind, event: EventId, n: u64, bytes: &[u8]) {
        let u = self.events.entry(event).or_default();
        let map = match kind {
            Kind::Segment => &mut u.segments,
            Kind::Outbox => &mut u.outbox,
        };
        if let Some(old) = map.insert(n, bytes.to_vec()) {
            u.bytes -= old.len();
            self.bytes -= old.len();
        }
        u.bytes += bytes.len();
        self.bytes += bytes.len();
        self.round.push((kind, event, n));
    }

    /// Removes the staged writes of `event` that `doomed` picks; returns how many.
    pub fn remove(
        &mut self,
        kind: Kind,
        event: EventId,
        mut doomed: impl FnMut(u64, &[u8]) -> bool,
    ) -> u64 {
        let Some(u) = self.events.get_mut(&event) else {
            return 0;
        };
        let map = match kind {
            Kind::Segment => &mut u.segments,
            Kind::Outbox => &mut u.outbox,
        };
        let mut removed = 0;
        map.retain(|n, bytes| {
            let drop = doomed(*n, bytes);
            if drop {
                u.bytes -= bytes.len();
                self.bytes -= bytes.len();
                removed += 1;
            }
            !drop
        });
        if u.is_empty() {
            self.events.remove(&event);
        }
        removed
    }

    /// Takes this round's writes into a journal value, picks the events to fold and the journal
    /// values their folding frees. The caller writes the plan in its order, then flushes.
    pub fn plan_flush(&mut self) -> FlushPlan {
        let round = std::mem::take(&mut self.round);
        let next = self.journal_next;
        let over = self.bytes > MAX_STAGED_BYTES || next - self.journal_first > MAX_JOURNAL_VALUES;
        let mut fold: Vec<EventId> = Vec::new();
        if over {
            fold.extend(self.events.keys().copied());
        } else {
            let mut old: Vec<(u64, EventId)> = Vec::new();
            for (event, u) in &self.events {
                if u.bytes >= FOLD_EVENT_BYTES {
                    fold.push(*event);
                } else if let Some(since) = u.since.filter(|s| next - s >= FOLD_AGE_ROUNDS) {
                    old.push((since, *event));
                }
            }
            old.sort_unstable();
            let per_round = FOLD_EVENTS_PER_ROUND
                .max(self.events.len() / FOLD_AGE_ROUNDS as usize + 1)
                .saturating_sub(fold.len());
            fold.extend(old.into_iter().take(per_round).map(|(_, e)| e));
        }
        fold.sort_unstable();
        let mut value = vec![0u8; 4];
        let mut journaled: Vec<EventId> = Vec::new();
        // Every write of the round, those of events folded now too: the trees are flushed
        // later, at a checkpoint.
        for (kind, event, n) in round {
            let Some(u) = self.events.get(&event) else {
                continue; // removed since (a compaction, an acknowledgement)
            };
            let bytes = match kind {
                Kind::Segment => u.segments.get(&n),
                Kind::Outbox => u.outbox.get(&n),
            };
            let Some(bytes) = bytes else { continue };
            value.push(kind as u8);
            value.extend_from_slice(&key(event, n));
            value.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            value.extend_from_slice(bytes);
            journaled.push(event);
        }
        let journal = (value.len() > 4).then(|| {
            let crc = crc32fast::hash(&value[4..]);
            value[..4].copy_from_slice(&crc.to_le_bytes());
            for event in journaled {
                if let Some(u) = self.events.get_mut(&event) {
                    u.since.get_or_insert(next);
                }
            }
            self.journal_next += 1;
            (next, value)
        });
        let mut folded = Vec::with_capacity(fold.len());
        for event in fold {
            if let Some(u) = self.events.remove(&event) {
                self.bytes -= u.bytes;
                folded.push((event, u));
            }
        }
        let keep_from = self
            .events
            .values()
            .filter_map(|u| u.since)
            .min()
            .unwrap_or(self.journal_next);
        let released = self.journal_first..keep_from.max(self.journal_first);
        self.journal_first = released.end;
        FlushPlan {
            journal,
            folded,
            released,
        }
    }
}

/// An event's staged segments as few segments: runs of consecutive lsns joined, each at most
/// `MAX_FOLDED_SEGMENT_BYTES` unless one segment alone is larger.
pub fn joined_segments(
    event: EventId,
    segments: BTreeMap<u64, Vec<u8>>,
) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
    let mut out: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    for (first, segment) in segments {
        let count = segment_count(event, &segment)?;
        match out.last_mut() {
            Some((f, c, joined))
                if *f + u64::from(*c) == first
                    && joined.len() + segment.len() - 4 <= MAX_FOLDED_SEGMENT_BYTES =>
            {
                joined.extend_from_slice(&segment[4..]);
                *c += count;
            }
            _ => out.push((first, count, segment)),
        }
    }
    Ok(out
        .into_iter()
        .map(|(first, count, mut joined)| {
            set_segment_count(&mut joined, count);
            (first, joined)
        })
        .collect())
}

/// Outbox entries of one event as runs, the value of tree `outbox_runs`: `count: u32 LE`, then
/// per entry `seq: u64 BE`, `len: u32 LE`, the bytes; seqs ascending, each run at most
/// `MAX_FOLDED_SEGMENT_BYTES` unless one entry alone is larger. Keyed by its first seq. One
/// value for many entries: with one key per entry, a leaf of 4 entries was rewritten for every
/// few entries folded.
pub fn outbox_runs(entries: impl IntoIterator<Item = (u64, Vec<u8>)>) -> Vec<(u64, Vec<u8>)> {
    let mut runs: Vec<(u64, u32, Vec<u8>)> = Vec::new();
    for (seq, entry) in entries {
        match runs.last_mut() {
            Some((_, count, run)) if run.len() + 12 + entry.len() <= MAX_FOLDED_SEGMENT_BYTES => {
                *count += 1;
                push_run_entry(run, seq, &entry);
            }
            _ => {
                let mut run = vec![0u8; 4];
                push_run_entry(&mut run, seq, &entry);
                runs.push((seq, 1, run));
            }
        }
    }
    runs.into_iter()
        .map(|(first, count, mut run)| {
            run[..4].copy_from_slice(&count.to_le_bytes());
            (first, run)
        })
        .collect()
}

fn push_run_entry(run: &mut Vec<u8>, seq: u64, entry: &[u8]) {
    run.extend_from_slice(&seq.to_be_bytes());
    run.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    run.extend_from_slice(entry);
}

/// The entries of an outbox run, checked against its own lengths.
pub fn decode_run(event: EventId, run: &[u8]) -> Result<Vec<(u64, &[u8])>, StorageError> {
    let corrupt = |why: &str| StorageError::Corrupt {
        event,
        detail: format!("outbox run: {why}"),
    };
    let count = run.get(..4).ok_or_else(|| corrupt("no count"))?;
    let count = u32::from_le_bytes(count.try_into().expect("4 bytes"));
    let mut entries = Vec::with_capacity((count as usize).min(run.len() / 12));
    let mut at = 4;
    for _ in 0..count {
        let head = run
            .get(at..at + 12)
            .ok_or_else(|| corrupt("entry header cut short"))?;
        let seq = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[8..].try_into().expect("4 bytes")) as usize;
        let entry = run
            .get(at + 12..at + 12 + len)
            .ok_or_else(|| corrupt("entry cut short"))?;
        entries.push((seq, entry));
        at += 12 + len;
    }
    if at != run.len() {
        return Err(corrupt("bytes after the last entry"));
    }
    Ok(entries)
}

pub fn key(event: EventId, n: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(event.0.as_bytes());
    key[16..].copy_from_slice(&n.to_be_bytes());
    key
}

/// One entry of a journal value: its kind, event, first lsn (segment) or seq (outbox), bytes.
pub type JournalEntry<'a> = (Kind, EventId, u64, &'a [u8]);

/// The entries of a journal value, checked.
pub fn decode(round: u64, value: &[u8]) -> Result<Vec<JournalEntry<'_>>, StorageError> {
    let corrupt = |why: &str| StorageError::Io(format!("journal value {round} is corrupt: {why}"));
    let crc = value.get(..4).ok_or_else(|| corrupt("no checksum"))?;
    if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != crc32fast::hash(&value[4..]) {
        return Err(corrupt("checksum mismatch"));
    }
    let mut entries = Vec::new();
    let mut at = 4;
    while at < value.len() {
        let head = value
            .get(at..at + 29)
            .ok_or_else(|| corrupt("entry header cut short"))?;
        let kind = match head[0] {
            0 => Kind::Segment,
            1 => Kind::Outbox,
            _ => return Err(corrupt("unknown entry kind")),
        };
        let event = EventId(Uuid::from_bytes(head[1..17].try_into().expect("16 bytes")));
        let n = u64::from_be_bytes(head[17..25].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[25..29].try_into().expect("4 bytes")) as usize;
        let bytes = value
            .get(at + 29..at + 29 + len)
            .ok_or_else(|| corrupt("entry cut short"))?;
        entries.push((kind, event, n, bytes));
        at += 29 + len;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::finish_segment;

    const E: EventId = EventId(Uuid::from_u128(7));

    #[test]
    fn a_round_becomes_one_checked_value_and_consecutive_segments_join() {
        let mut staged = Staged::default();
        staged.stage(Kind::Segment, E, 0, &finish_segment(2, b"ab"));
        staged.stage(Kind::Outbox, E, 1, b"entry");
        let plan = staged.plan_flush();
        let (round, value) = plan.journal.unwrap();
        assert_eq!(round, 0);
        assert!(plan.folded.is_empty(), "young and small: staged");
        assert_eq!(plan.released, 0..0);
        let entries = decode(round, &value).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            (entries[1].0, entries[1].2, entries[1].3),
            (Kind::Outbox, 1, &b"entry"[..])
        );
        let mut flipped = value.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(decode(round, &flipped).is_err());

        staged.stage(Kind::Segment, E, 2, &finish_segment(1, b"c"));
        for _ in 0..FOLD_AGE_ROUNDS {
            staged.stage(Kind::Outbox, EventId(Uuid::from_u128(8)), 0, b"x");
            let plan = staged.plan_flush();
            if let Some((_, u)) = plan.folded.into_iter().find(|(e, _)| *e == E) {
                // Value 0 held only this event's writes; value 1 also holds the other's.
                assert_eq!(plan.released, 0..1);
                let joined = joined_segments(E, u.segments).unwrap();
                assert_eq!(joined, vec![(0, finish_segment(3, b"abc"))]);
                return;
            }
        }
        panic!("an old event is folded");
    }

    #[test]
    fn outbox_runs_read_back() {
        let entries: Vec<(u64, Vec<u8>)> = (1..=3).map(|s| (s, vec![s as u8; 5])).collect();
        let runs = outbox_runs(entries.clone());
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].0, 1);
        let read: Vec<(u64, Vec<u8>)> = decode_run(E, &runs[0].1)
            .unwrap()
            .into_iter()
            .map(|(s, e)| (s, e.to_vec()))
            .collect();
        assert_eq!(read, entries);
        assert!(decode_run(E, &runs[0].1[..runs[0].1.len() - 1]).is_err());
    }

    #[test]
    fn a_busy_event_goes_to_the_trees_at_once_and_its_round_to_the_journal() {
        let mut staged = Staged::default();
        staged.stage(Kind::Segment, E, 0, &vec![0; FOLD_EVENT_BYTES]);
        let plan = staged.plan_flush();
        let (round, value) = plan.journal.expect("the round's value");
        assert_eq!(decode(round, &value).unwrap().len(), 1);
        assert_eq!(plan.folded.len(), 1);
        assert!(staged.events.is_empty());
        assert_eq!(staged.journal_first, 1, "nothing staged holds the value");
    }
}
