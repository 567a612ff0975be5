//! The write-ahead log on disk: segments of framed records in sled, behind the small [`LogStore`]
//! trait, and one snapshot file per event. It knows bytes and sequence numbers, not what records
//! mean, and it never decides when to flush: `commit` does.
//!
//! Layout under `storage.data_dir`:
//! - `log/`, a sled database, tree `log`: key = event id (16 bytes) ++ first lsn (u64 big-endian);
//!   value = a segment: `count: u32 LE`, then `count` frames of
//!   `len: u32 LE, crc32: u32 LE, postcard(Record)`. Big-endian lsns keep an event's segments in
//!   log order under one prefix. `outbox_runs`: outbox entries, many per value; `outbox` the
//!   entries of logs of format 5; `outbox_acked`; `journal` the rounds of a log of format 6
//!   not yet folded (folded at open).
//! - `log/journal/`: the journal files, where each flush makes its round durable (see
//!   `journal` and `journal_files`) until sled has flushed the trees that hold it.
//! - `snapshots/<event id>.snapshot`: `lsn: u64 LE, crc32: u32 LE, postcard(Inventory)`, the
//!   state after the first `lsn` records. Files, not sled values: a snapshot of a million holds is
//!   tens of MB, which sled would rewrite inside a leaf at every flush that touches it, holding up
//!   every acknowledgement of that round.
//!
//! Every frame is checked before it is written (it must decode to the record it came from, in
//! debug builds) and after it is read back (length and crc32, in every build).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::inventory::{EventId, Inventory, Record};
use crate::journal::{self, Kind, Staged};
use crate::journal_files::{self, JournalFiles};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("storage i/o failed: {0}")]
    Io(String),
    #[error("log of event {event} is corrupt: {detail}")]
    Corrupt { event: EventId, detail: String },
    #[error("an earlier write failed, so the engine refuses further changes until restarted: {0}")]
    Poisoned(String),
    #[error("the log is closed")]
    Closed,
}

impl From<std::io::Error> for StorageError {
    /// sled prefixes the operating system's error with the source locations it passed through
    /// (`sled:<path>/heap.rs:907 -> ... -> No space left on device (os error 28)`); callers get
    /// the operating system's words only.
    fn from(e: std::io::Error) -> Self {
        let text = e.to_string();
        StorageError::Io(text.rsplit(" -> ").next().unwrap_or(&text).to_string())
    }
}

/// The version of what the data directory holds (records, snapshots, outbox entries), written to
/// `<data_dir>/FORMAT` when the log is made. Version 2 added payments and tickets to orders,
/// version 3 check-ins, version 4 events' time zones and orders' contacts, version 5 re-entry
/// (events' `allow_reentry`, exits among a ticket's scans), version 6 the round journal (sled
/// tree `journal`, see `journal`), version 7 the journal files (`journal_files`). A log of
/// version 5 is one of version 7 with no journal, one of version 6 one whose journal is in the
/// tree, which the open folds: either is marked 7 and opened.
pub const FORMAT_VERSION: u32 = 7;

/// The versions that `check_format` upgrades in place: their logs read as the current one.
const UPGRADED_FORMAT_VERSIONS: [u32; 2] = [5, 6];

/// Refuses a data directory written in another format, naming both; marks a new one.
pub fn check_format(data_dir: &Path) -> Result<(), StorageError> {
    let path = data_dir.join("FORMAT");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim() == FORMAT_VERSION.to_string() => Ok(()),
        // Marked before sled opens it: from then on a boxoffice of an older version, which
        // would not read the journal files, refuses it.
        Ok(text)
            if UPGRADED_FORMAT_VERSIONS
                .iter()
                .any(|v| text.trim() == v.to_string()) =>
        {
            write_format(data_dir)
        }
        Ok(text) => Err(StorageError::Io(format!(
            "{} says format {}; this boxoffice reads format {FORMAT_VERSION}",
            path.display(),
            text.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if log_dir(data_dir).exists() {
                return Err(StorageError::Io(format!(
                    "{} holds a log of format 1 (it has no FORMAT file); this boxoffice reads \
                     format {FORMAT_VERSION}: start it with an empty storage.data_dir",
                    data_dir.display()
                )));
            }
            write_format(data_dir)
        }
        Err(e) => Err(StorageError::Io(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// Writes `<data_dir>/FORMAT` with the current version, durably (a temporary file renamed).
fn write_format(data_dir: &Path) -> Result<(), StorageError> {
    let temporary = data_dir.join(".FORMAT.tmp");
    std::fs::write(&temporary, format!("{FORMAT_VERSION}\n"))?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, data_dir.join("FORMAT"))?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Where the log lives inside the data directory.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// Where the snapshots live inside the data directory.
pub fn snapshot_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// What the engine needs from durable storage. Writes become durable only at `flush`; a crash
/// before it may keep any prefix of the writes made since the last one (sled means all or none),
/// so the engine orders its writes for every prefix to recover: a segment before its outbox
/// entries, an acknowledgement mark before the entries it removes.
/// Used from one thread at a time (sled 1.0's handles are `Send`, not `Sync`): recovery reads
/// through one handle, then the group-commit thread owns another.
pub trait LogStore: Send + 'static {
    fn write_segment(
        &self,
        event: EventId,
        first_lsn: u64,
        segment: &[u8],
    ) -> Result<(), StorageError>;
    /// Removes the segments that hold only records before `lsn`.
    fn drop_segments_before(&self, event: EventId, lsn: u64) -> Result<(), StorageError>;
    /// Makes every earlier write durable against power loss.
    fn flush(&self) -> Result<(), StorageError>;
    /// Upkeep that makes nothing durable a flush has not, called by the group commit after a
    /// round's waiters ran (`SledLog`: the checkpoint); says whether it did any.
    fn checkpoint(&self) -> Result<bool, StorageError> {
        Ok(false)
    }
    /// Every event with at least one segment.
    fn events(&self) -> Result<Vec<EventId>, StorageError>;
    /// An event's segments in lsn order, as `(first lsn, segment)`.
    fn segments(&self, event: EventId) -> Result<Vec<(u64, Vec<u8>)>, StorageError>;
    /// Stores outbox entry `seq` of `event` (see `outbox`), encoded.
    fn write_outbox(&self, event: EventId, seq: u64, entry: &[u8]) -> Result<(), StorageError>;
    /// Removes the outbox entries of `event` whose seqs are in `seqs`; returns how many.
    fn remove_outbox(
        &self,
        event: EventId,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, StorageError>;
    /// Remembers `seq` as the highest outbox seq of `event` the broker acknowledged.
    fn mark_outbox_acked(&self, event: EventId, seq: u64) -> Result<(), StorageError>;
    /// The highest outbox seq of `event` the broker acknowledged; 0 for none.
    fn outbox_acked(&self, event: EventId) -> Result<u64, StorageError>;
    /// Whether outbox entry `seq` of `event` is stored.
    fn outbox_has(&self, event: EventId, seq: u64) -> Result<bool, StorageError>;

    /// Removes the outbox entries of `event` up to `seq` and remembers `seq` as acknowledged;
    /// returns how many it removed. The mark first: a crash that keeps only part of the writes
    /// must not keep entries removed without the mark, or recovery would not know they were
    /// sent (it rewrites a missing entry only for records after the snapshot) and they would
    /// never be.
    fn ack_outbox(&self, event: EventId, seq: u64) -> Result<u64, StorageError> {
        if self.outbox_acked(event)? < seq {
            self.mark_outbox_acked(event, seq)?;
        }
        self.remove_outbox(event, 0..=seq)
    }
}

/// Where the snapshots are kept: one per event, replaced whole. `write` returns once the new
/// snapshot is durable; until then `read` gives the previous one, whole, never a mix.
pub trait SnapshotStore: Send + Sync + 'static {
    /// Makes `state`, the encoded state after `lsn` records, the event's snapshot, durably.
    fn write(&self, event: EventId, lsn: u64, state: &[u8]) -> Result<(), StorageError>;
    /// The event's snapshot, checked, or `None` if it has none.
    fn read(&self, event: EventId) -> Result<Option<(u64, Vec<u8>)>, StorageError>;
    /// Every event with a snapshot.
    fn events(&self) -> Result<Vec<EventId>, StorageError>;
}

/// Leaves of 4 entries: sled rewrites a whole dirty leaf at each flush, and log keys only grow,
/// so the last leaf is rewritten every round together with the older segments it holds
/// (measured in `boxoffice-bench engine`: 13 ms per flush at 6,000 records a round with 16,
/// 1.2 ms with 4; sled's default of 1024 was worse still).
const LEAF_FANOUT: usize = 4;

/// zstd's fast level for the leaves sled compresses at every flush: records are mostly random
/// ids and compress little, and the CPU is better spent deciding (same bench: 1.5–2.1 ms per
/// flush at level 3, 1.1–1.2 ms at -5).
const ZSTD_LEVEL: i32 = -5;

/// Guards against a data-losing step of sled 1.0.0-alpha.124's open. sled opens a database by
/// writing the metadata it recovered (its snapshot and every later log) into a snapshot named
/// after the last of them, removing those, then creating a new empty log. A process killed
/// before that new log exists leaves a snapshot and no later log; sled's next open then writes
/// its snapshot under the same name and removes "the old one", which is the one just written:
/// the open after that finds no metadata and every segment is gone (`tree had no minimum
/// node`). An empty later log makes that next open name its snapshot anew.
fn keep_sled_metadata(dir: &Path) -> Result<(), StorageError> {
    let metadata = dir.join("metadata");
    let entries = match std::fs::read_dir(&metadata) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let (mut snapshot, mut log) = (None::<u64>, None::<u64>);
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let id = |prefix: &str| u64::from_str_radix(name.strip_prefix(prefix)?, 16).ok();
        if let Some(id) = id("snapshot_") {
            snapshot = snapshot.max(Some(id));
        } else if let Some(id) = id("log_") {
            log = log.max(Some(id));
        }
    }
    let Some(snapshot) = snapshot else {
        return Ok(());
    };
    if log.is_some_and(|log| log > snapshot) {
        return Ok(());
    }
    let path = metadata.join(format!("log_{:016x}", snapshot + 1));
    File::create(&path)?.sync_all()?;
    File::open(&metadata)?.sync_all()?;
    tracing::warn!(path = %path.display(), "sled's metadata had a snapshot and no later log (a process was killed while opening it); added an empty log so that opening it keeps the snapshot");
    Ok(())
}

/// [`LogStore`] on sled 1.0.0-alpha.124 and the journal files: `flush` appends the round to the
/// journal and syncs it (one `fdatasync`), and sled flushes the trees at a checkpoint. Clones share
/// the database. Boxed: the handles are large, and futures that hold a log (recovery's) grew
/// past a debug-build test thread's stack with them inline (sled's handles are not `Sync`, so
/// not an `Arc`).
#[derive(Clone)]
pub struct SledLog(Box<SledTrees>);

impl std::ops::Deref for SledLog {
    type Target = SledTrees;
    fn deref(&self) -> &SledTrees {
        &self.0
    }
}

/// The database and its trees; every clone of a [`SledLog`] has handles to the same ones.
#[derive(Clone)]
pub struct SledTrees {
    db: sled::Db<LEAF_FANOUT>,
    log: sled::Tree<LEAF_FANOUT>,
    /// Outbox entries not yet acknowledged by the broker: key = event id ++ seq.
    outbox: sled::Tree<LEAF_FANOUT>,
    /// Per event, the highest outbox seq the broker acknowledged: key = event id.
    outbox_acked: sled::Tree<LEAF_FANOUT>,
    /// Rounds that touched many events, one value each, until folded into `log` and `outbox`
    /// (see `journal`).
    journal: sled::Tree<LEAF_FANOUT>,
    /// Outbox entries folded from the journal, many per value (`journal::outbox_runs`): key =
    /// event id ++ first seq. Tree `outbox` keeps the entries of logs of format 5.
    outbox_runs: sled::Tree<LEAF_FANOUT>,
    /// Writes not yet in `log` and `outbox`: every read looks here too, under this lock.
    staged: Arc<Mutex<Staged>>,
    /// Where each round is made durable (see `journal_files`). Taken before `staged` by a
    /// flush, and held until its frame is synced, so frames go in round order.
    files: Arc<Mutex<JournalFiles>>,
    /// When sled last flushed the trees, and whether they have changed since.
    checkpoint: Arc<Mutex<Checkpoint>>,
}

/// How often sled flushes what the trees got since its last flush (a checkpoint, run by the
/// group commit after a round's waiters); once it has, the journal files whose rounds are all in
/// the trees are given up. Acknowledgement marks, removed outbox entries and compactions, which go
/// to the trees alone, are durable then too: a crash before it sends some outbox entries again and
/// leaves some segments a snapshot covers (recovery skips them; the next compaction drops them).
/// Not on a thread of its own: sled 1.0.0-alpha.124 flushing on one thread while another wrote
/// left, after a SIGKILL, a database whose reads never ended (found by the crash test).
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Default)]
pub struct Checkpoint {
    last: Option<std::time::Instant>,
    /// The trees have writes sled has not flushed.
    dirty: bool,
}

impl SledLog {
    pub fn open(dir: &Path, cache_capacity_mib: u64) -> Result<SledLog, StorageError> {
        std::fs::create_dir_all(dir)?;
        keep_sled_metadata(dir)?;
        let db: sled::Db<LEAF_FANOUT> = sled::Config::new()
            .path(dir)
            .cache_capacity_bytes((cache_capacity_mib as usize) << 20)
            // No background flusher: the group commit decides when to flush, and durability of an
            // acknowledged change never depends on a timer.
            .flush_every_ms(None)
            .zstd_compression_level(ZSTD_LEVEL)
            .open()?;
        let log = db.open_tree("log")?;
        let outbox = db.open_tree("outbox")?;
        let outbox_acked = db.open_tree("outbox_acked")?;
        let journal = db.open_tree("journal")?;
        let outbox_runs = db.open_tree("outbox_runs")?;
        // A new database's trees get their first leaves written and flushed before anything
        // else: sled 1.0.0-alpha.124 flushes only leaves written to, and a tree never written
        // (`outbox_acked` without a broker) whose database was flushed later, with writes to the
        // others, was found after a SIGKILL with a leaf its reads waited for for ever (the crash
        // test, within seconds, once flushes came every 100 ms instead of every round).
        // Done once per directory; a file says so, written after the flush.
        let journal_dir = dir.join("journal");
        let marker = journal_dir.join("trees-flushed");
        if !marker.exists() {
            for tree in [&log, &outbox, &outbox_acked, &journal, &outbox_runs] {
                tree.insert([0u8], &[][..])?;
                tree.remove([0u8])?;
            }
            db.flush()?;
            std::fs::create_dir_all(&journal_dir)?;
            File::create(&marker)?.sync_all()?;
            File::open(&journal_dir)?.sync_all()?;
        }
        let (files, frames) = JournalFiles::open(&journal_dir)?;
        let log = SledLog(Box::new(SledTrees {
            db,
            log,
            outbox,
            outbox_acked,
            journal,
            outbox_runs,
            staged: Arc::new(Mutex::new(Staged::default())),
            files: Arc::new(Mutex::new(files)),
            checkpoint: Arc::new(Mutex::new(Checkpoint::default())),
        }));
        log.fold_journal(frames)?;
        Ok(log)
    }

    /// At open: writes every journal value's entries into the trees, in round order (outbox
    /// entries the broker acknowledged are skipped: they were removed): first the values of
    /// tree `journal` (a log of format 6), then the frames of the journal files; removes the
    /// values, flushes and gives up the files, so that recovery reads the trees alone.
    fn fold_journal(&self, frames: Vec<journal_files::Frame>) -> Result<(), StorageError> {
        let mut rounds = Vec::new();
        let mut values = Vec::new();
        for entry in self.journal.iter() {
            let (key, value) = entry?;
            let round =
                u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                    StorageError::Io(format!("journal key of {} bytes", key.len()))
                })?);
            rounds.push(round);
            values.push((round, value.to_vec()));
        }
        let from_files = !frames.is_empty();
        values.extend(frames);
        let mut entries: BTreeMap<EventId, BTreeMap<u64, Vec<u8>>> = BTreeMap::new();
        for (round, value) in &values {
            for (kind, event, n, bytes) in journal::decode(*round, value)? {
                match kind {
                    Kind::Segment => {
                        self.log.insert(segment_key(event, n), bytes)?;
                    }
                    Kind::Outbox if n > self.outbox_acked(event)? => {
                        entries.entry(event).or_default().insert(n, bytes.to_vec());
                    }
                    Kind::Outbox => {}
                }
            }
        }
        if values.is_empty() {
            return Ok(());
        }
        for (event, entries) in entries {
            self.write_outbox_runs(event, entries)?;
        }
        for round in &rounds {
            self.journal.remove(round.to_be_bytes())?;
        }
        self.db.flush()?;
        if from_files {
            self.files
                .lock()
                .expect("journal files lock")
                .recycle_read()?;
        }
        Ok(())
    }

    /// Writes an event's folded outbox entries as runs. An entry already in a run (folded
    /// again at open after a crash) is left there: the new run skips it.
    fn write_outbox_runs(
        &self,
        event: EventId,
        mut entries: BTreeMap<u64, Vec<u8>>,
    ) -> Result<(), StorageError> {
        if let (Some((&first, _)), Some((&last, _))) =
            (entries.first_key_value(), entries.last_key_value())
        {
            for run in self.runs_between(event, first, last)? {
                for (seq, _) in journal::decode_run(event, &run.1)? {
                    entries.remove(&seq);
                }
            }
        }
        for (first, run) in journal::outbox_runs(entries) {
            self.outbox_runs.insert(segment_key(event, first), run)?;
        }
        Ok(())
    }

    /// The runs of `event` that may hold seqs in `first..=last`: `(first seq, run)`.
    fn runs_between(
        &self,
        event: EventId,
        first: u64,
        last: u64,
    ) -> Result<Vec<(u64, sled::InlineArray)>, StorageError> {
        let mut runs = Vec::new();
        if let Some((key, run)) = self.outbox_runs.get_lt(segment_key(event, first))?
            && key.starts_with(event.0.as_bytes())
        {
            runs.push((lsn_from_key(&key), run));
        }
        for entry in self
            .outbox_runs
            .range(segment_key(event, first)..=segment_key(event, last))
        {
            let (key, run) = entry?;
            runs.push((lsn_from_key(&key), run));
        }
        Ok(runs)
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Staged> {
        self.staged.lock().expect("staged lock")
    }

    fn checkpoint_state(&self) -> std::sync::MutexGuard<'_, Checkpoint> {
        self.checkpoint.lock().expect("checkpoint lock")
    }

    /// Up to `limit` unacknowledged outbox entries after `after` (event, seq), in key order:
    /// each event's entries in seq order, events one after another.
    pub fn outbox_after(
        &self,
        after: Option<(EventId, u64)>,
        limit: usize,
    ) -> Result<Vec<(EventId, u64, Vec<u8>)>, StorageError> {
        let staged = self.staged();
        let mut entries = BTreeMap::new();
        let start = match after {
            Some((event, seq)) => std::ops::Bound::Excluded(segment_key(event, seq)),
            None => std::ops::Bound::Unbounded,
        };
        for entry in self
            .outbox
            .range::<[u8; 24], _>((start, std::ops::Bound::Unbounded))
        {
            let (key, value) = entry?;
            entries.insert((event_from_key(&key)?, lsn_from_key(&key)), value.to_vec());
            if entries.len() >= limit {
                break;
            }
        }
        let run_start = match after {
            Some((event, _)) => segment_key(event, 0),
            None => [0u8; 24],
        };
        let mut run_entries = 0;
        'runs: for run in self.outbox_runs.range(run_start..) {
            let (key, run) = run?;
            let event = event_from_key(&key)?;
            for (seq, entry) in journal::decode_run(event, &run)? {
                if after.is_some_and(|a| (event, seq) <= a) {
                    continue;
                }
                if run_entries >= limit {
                    break 'runs;
                }
                entries.insert((event, seq), entry.to_vec());
                run_entries += 1;
            }
        }
        // The staged entries in key order, merged; the first `limit` of the union are the
        // first `limit` of the tree's (read above) and of the staged ones.
        let mut staged_entries = 0;
        'events: for (event, u) in staged
            .events
            .range(after.map_or(EventId(Uuid::nil()), |a| a.0)..)
        {
            for (seq, entry) in &u.outbox {
                if after.is_some_and(|a| (*event, *seq) <= a) {
                    continue;
                }
                if staged_entries >= limit {
                    break 'events;
                }
                entries.insert((*event, *seq), entry.clone());
                staged_entries += 1;
            }
        }
        Ok(entries
            .into_iter()
            .take(limit)
            .map(|((event, seq), entry)| (event, seq, entry))
            .collect())
    }

    /// Unacknowledged outbox entries in all.
    pub fn outbox_len(&self) -> Result<usize, StorageError> {
        let staged = self.staged();
        let staged_entries: usize = staged.events.values().map(|u| u.outbox.len()).sum();
        let mut run_entries = 0;
        for run in self.outbox_runs.iter() {
            let (key, run) = run?;
            run_entries += journal::decode_run(event_from_key(&key)?, &run)?.len();
        }
        Ok(self.outbox.len() + run_entries + staged_entries)
    }
}

fn segment_key(event: EventId, lsn: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(event.0.as_bytes());
    key[16..].copy_from_slice(&lsn.to_be_bytes());
    key
}

impl LogStore for SledLog {
    fn write_segment(
        &self,
        event: EventId,
        first_lsn: u64,
        segment: &[u8],
    ) -> Result<(), StorageError> {
        self.staged()
            .stage(Kind::Segment, event, first_lsn, segment);
        Ok(())
    }

    fn drop_segments_before(&self, event: EventId, lsn: u64) -> Result<(), StorageError> {
        // Goes to the trees alone: durable at the next checkpoint.
        self.checkpoint_state().dirty = true;
        let mut staged = self.staged();
        let mut bad = None;
        staged.remove(Kind::Segment, event, |first, segment| {
            match segment_count(event, segment) {
                Ok(count) => first + u64::from(count) <= lsn,
                Err(e) => {
                    bad = Some(e);
                    false
                }
            }
        });
        if let Some(e) = bad {
            return Err(e);
        }
        let start = segment_key(event, 0);
        let end = segment_key(event, lsn);
        let mut doomed = Vec::new();
        for entry in self.log.range(start..end) {
            let (key, value) = entry?;
            let first = lsn_from_key(&key);
            let count = segment_count(event, &value)?;
            if first + u64::from(count) <= lsn {
                doomed.push(key);
            }
        }
        for key in doomed {
            self.log.remove(key)?;
        }
        Ok(())
    }

    /// Makes the round durable: its journal value appended to the journal files and synced. The
    /// events due are folded into the trees (see `journal`), which sled flushes at the next
    /// checkpoint (`CHECKPOINT_EVERY`). The staged lock is held while the trees change, so a
    /// reader sees each write staged or in its tree, never neither; not during the sync.
    fn flush(&self) -> Result<(), StorageError> {
        let mut files = self.files.lock().expect("journal files lock");
        let (value, folded) = {
            let mut staged = self.staged();
            let plan = staged.plan_flush();
            let folded = !plan.folded.is_empty();
            for (event, u) in plan.folded {
                for (first, segment) in journal::joined_segments(event, u.segments)? {
                    self.log.insert(segment_key(event, first), segment)?;
                }
                for (first, run) in journal::outbox_runs(u.outbox) {
                    self.outbox_runs.insert(segment_key(event, first), run)?;
                }
            }
            (plan.journal, folded)
        };
        if let Some((round, value)) = value {
            files.append(round, &value)?;
        }
        drop(files);
        if folded {
            self.checkpoint_state().dirty = true;
        }
        Ok(())
    }

    /// With writes in the trees sled has not flushed and the last checkpoint `CHECKPOINT_EVERY`
    /// ago: flushes them and gives up the journal files whose rounds are all in the trees.
    fn checkpoint(&self) -> Result<bool, StorageError> {
        let mut checkpoint = self.checkpoint.lock().expect("checkpoint lock");
        let due = checkpoint
            .last
            .is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY);
        if !checkpoint.dirty || !due {
            return Ok(false);
        }
        // Every round before it is in the trees: folded under the staged lock, before now.
        let keep_from = self.staged().journal_first;
        checkpoint.dirty = false;
        checkpoint.last = Some(std::time::Instant::now());
        drop(checkpoint);
        self.db.flush()?;
        self.files
            .lock()
            .expect("journal files lock")
            .discard_before(keep_from)?;
        Ok(true)
    }

    fn events(&self) -> Result<Vec<EventId>, StorageError> {
        let staged = self.staged();
        let mut ids = Vec::new();
        // Segments are grouped by event; jump from one event's prefix to the next.
        let mut cursor = self.log.first()?;
        while let Some((key, _)) = cursor {
            let id = event_from_key(&key)?;
            ids.push(id);
            cursor = self.log.get_gt(segment_key(id, u64::MAX))?;
        }
        ids.extend(
            staged
                .events
                .iter()
                .filter(|(_, u)| !u.segments.is_empty())
                .map(|(e, _)| *e),
        );
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn write_outbox(&self, event: EventId, seq: u64, entry: &[u8]) -> Result<(), StorageError> {
        self.staged().stage(Kind::Outbox, event, seq, entry);
        Ok(())
    }

    fn remove_outbox(
        &self,
        event: EventId,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, StorageError> {
        // Goes to the trees alone: durable at the next checkpoint.
        self.checkpoint_state().dirty = true;
        let mut staged = self.staged();
        let mut removed = staged.remove(Kind::Outbox, event, |seq, _| seqs.contains(&seq));
        let mut doomed = Vec::new();
        for entry in self
            .outbox
            .range(segment_key(event, *seqs.start())..=segment_key(event, *seqs.end()))
        {
            doomed.push(entry?.0);
        }
        removed += doomed.len() as u64;
        for key in doomed {
            self.outbox.remove(key)?;
        }
        // A run that loses entries is written again, under its first remaining seq.
        for (first, run) in self.runs_between(event, *seqs.start(), *seqs.end())? {
            let entries = journal::decode_run(event, &run)?;
            let kept: Vec<(u64, Vec<u8>)> = entries
                .iter()
                .filter(|(seq, _)| !seqs.contains(seq))
                .map(|(seq, entry)| (*seq, entry.to_vec()))
                .collect();
            if kept.len() == entries.len() {
                continue;
            }
            removed += (entries.len() - kept.len()) as u64;
            self.outbox_runs.remove(segment_key(event, first))?;
            for (first, run) in journal::outbox_runs(kept) {
                self.outbox_runs.insert(segment_key(event, first), run)?;
            }
        }
        Ok(removed)
    }

    fn mark_outbox_acked(&self, event: EventId, seq: u64) -> Result<(), StorageError> {
        // Goes to the trees alone: durable at the next checkpoint.
        self.checkpoint_state().dirty = true;
        self.outbox_acked
            .insert(event.0.as_bytes(), &seq.to_be_bytes()[..])?;
        Ok(())
    }

    fn outbox_acked(&self, event: EventId) -> Result<u64, StorageError> {
        match self.outbox_acked.get(event.0.as_bytes())? {
            None => Ok(0),
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt {
                    event,
                    detail: format!("acknowledged outbox seq of {} bytes", v.len()),
                }),
        }
    }

    fn outbox_has(&self, event: EventId, seq: u64) -> Result<bool, StorageError> {
        let staged = self.staged();
        if staged
            .events
            .get(&event)
            .is_some_and(|u| u.outbox.contains_key(&seq))
        {
            return Ok(true);
        }
        for (_, run) in self.runs_between(event, seq, seq)? {
            if journal::decode_run(event, &run)?
                .iter()
                .any(|(s, _)| *s == seq)
            {
                return Ok(true);
            }
        }
        Ok(self.outbox.contains_key(segment_key(event, seq))?)
    }

    fn segments(&self, event: EventId) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let staged = self.staged();
        let mut segments = BTreeMap::new();
        for entry in self
            .log
            .range(segment_key(event, 0)..=segment_key(event, u64::MAX))
        {
            let (key, value) = entry?;
            segments.insert(lsn_from_key(&key), value.to_vec());
        }
        if let Some(u) = staged.events.get(&event) {
            segments.extend(u.segments.iter().map(|(first, s)| (*first, s.clone())));
        }
        Ok(segments.into_iter().collect())
    }
}

/// One snapshot file per event, replaced atomically: written to a temporary file, fsynced,
/// renamed over the old one, and the directory fsynced.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
}

impl SnapshotDir {
    pub fn open(dir: &Path) -> Result<SnapshotDir, StorageError> {
        std::fs::create_dir_all(dir)?;
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, event: EventId) -> PathBuf {
        self.dir.join(format!("{event}.snapshot"))
    }

    /// Makes `state`, the encoded state after `lsn` records, the event's snapshot, durably.
    pub fn write(&self, event: EventId, lsn: u64, state: &[u8]) -> Result<(), StorageError> {
        let tmp = self.dir.join(format!("{event}.snapshot.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(&snapshot_header(lsn, state))?;
        file.write_all(state)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, self.path(event))?;
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// The event's snapshot, checked, or `None` if it has none.
    pub fn read(&self, event: EventId) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let value = match std::fs::read(self.path(event)) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        decode_snapshot(event, &value).map(Some)
    }

    /// Every event with a snapshot.
    pub fn events(&self) -> Result<Vec<EventId>, StorageError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".snapshot") {
                let id = Uuid::parse_str(id)
                    .map_err(|e| StorageError::Io(format!("snapshot file {name}: {e}")))?;
                ids.push(EventId(id));
            }
        }
        Ok(ids)
    }
}

impl SnapshotStore for SnapshotDir {
    fn write(&self, event: EventId, lsn: u64, state: &[u8]) -> Result<(), StorageError> {
        SnapshotDir::write(self, event, lsn, state)
    }

    fn read(&self, event: EventId) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        SnapshotDir::read(self, event)
    }

    fn events(&self) -> Result<Vec<EventId>, StorageError> {
        SnapshotDir::events(self)
    }
}

/// What a snapshot file starts with: the lsn it covers and the crc32 of the state after it.
pub fn snapshot_header(lsn: u64, state: &[u8]) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&lsn.to_le_bytes());
    header[8..].copy_from_slice(&crc32fast::hash(state).to_le_bytes());
    header
}

/// Checks a snapshot file's bytes (header, then state) and returns the lsn and the state. A file
/// cut short or changed is refused, naming the event and, when its header is whole, the lsn.
pub fn decode_snapshot(event: EventId, file: &[u8]) -> Result<(u64, Vec<u8>), StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt { event, detail };
    if file.len() < 12 {
        return Err(corrupt(format!(
            "snapshot of {} bytes is shorter than its 12-byte header",
            file.len()
        )));
    }
    let lsn = u64::from_le_bytes(file[..8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(file[8..12].try_into().expect("4 bytes"));
    let state = &file[12..];
    if crc32fast::hash(state) != crc {
        return Err(corrupt(format!(
            "snapshot of lsn {lsn}: checksum mismatch over its {} bytes of state",
            state.len()
        )));
    }
    Ok((lsn, state.to_vec()))
}

/// The first lsn of a segment from its key; keys come only from `segment_key`, 24 bytes.
fn lsn_from_key(key: &[u8]) -> u64 {
    u64::from_be_bytes(key[16..24].try_into().expect("24-byte key"))
}

fn event_from_key(key: &[u8]) -> Result<EventId, StorageError> {
    let bytes: [u8; 16] = key
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StorageError::Io(format!("log key of {} bytes", key.len())))?;
    Ok(EventId(Uuid::from_bytes(bytes)))
}

/// The record count in a segment's header; a segment too short for one is corrupt.
pub fn segment_count(event: EventId, segment: &[u8]) -> Result<u32, StorageError> {
    segment
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or_else(|| StorageError::Corrupt {
            event,
            detail: "segment shorter than its header".into(),
        })
}

/// Appends framed records to `out`; a segment is a count header (`finish_segment`,
/// `set_segment_count`) followed by such frames.
pub fn encode_records(records: &[Record], out: &mut Vec<u8>) {
    for record in records {
        let at = out.len();
        out.extend_from_slice(&[0u8; 8]);
        // postcard appends to a writer it owns; hand it the buffer and take it back.
        *out = postcard::to_extend(record, std::mem::take(out)).expect("records always serialize");
        let len = (out.len() - at - 8) as u32;
        let crc = crc32fast::hash(&out[at + 8..]);
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(
            postcard::from_bytes::<Record>(&out[at + 8..]).as_ref(),
            Ok(record),
            "a record must read back as written"
        );
    }
}

/// Puts the count header in front of `count` frames.
pub fn finish_segment(count: u32, frames: &[u8]) -> Vec<u8> {
    let mut segment = Vec::with_capacity(4 + frames.len());
    segment.extend_from_slice(&count.to_le_bytes());
    segment.extend_from_slice(frames);
    segment
}

/// Room for the count header at the start of a segment built in place.
pub const SEGMENT_HEADER: [u8; 4] = [0; 4];

/// Writes the count header of a segment built in place (started with `SEGMENT_HEADER`).
pub fn set_segment_count(segment: &mut [u8], count: u32) {
    segment[..4].copy_from_slice(&count.to_le_bytes());
}

/// Reads a segment back, checking every frame.
pub fn decode_segment(event: EventId, segment: &[u8]) -> Result<Vec<Record>, StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt { event, detail };
    let count = segment_count(event, segment)?;
    // The count is read from disk: reserve no more records than the segment has room for frames
    // (8 bytes of header each), or a corrupt header asks for hundreds of GB and aborts.
    let room = segment.len().saturating_sub(4) / 8;
    let mut records = Vec::with_capacity((count as usize).min(room));
    let mut at = 4usize;
    for i in 0..count {
        let header = segment
            .get(at..at + 8)
            .ok_or_else(|| corrupt(format!("frame {i} header cut short")))?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let body = segment
            .get(at + 8..at + 8 + len)
            .ok_or_else(|| corrupt(format!("frame {i} body cut short")))?;
        if crc32fast::hash(body) != crc {
            return Err(corrupt(format!("frame {i} checksum mismatch")));
        }
        let record = postcard::from_bytes(body).map_err(|e| corrupt(format!("frame {i}: {e}")))?;
        records.push(record);
        at += 8 + len;
    }
    if at != segment.len() {
        return Err(corrupt(format!(
            "{} trailing bytes after {count} frames",
            segment.len() - at
        )));
    }
    Ok(records)
}

/// Rebuilds an event from what the disk holds: its snapshot, if any, then every later record of
/// its segments (in lsn order), applied by the same `Inventory::apply` that applied them live.
/// Checks that lsns are contiguous, that the snapshot is a state the audit passes, and every
/// record before it is applied (`Inventory::check_record`: a record that passed its crc can
/// still be impossible), then checks the result once. Whatever it refuses is `Corrupt`, naming
/// the event and, for a record, its lsn and kind; it never panics on what it reads. `replayed`
/// sees the state after each record applied (not those the snapshot covers), as the actor saw it
/// live.
pub fn recover(
    event: EventId,
    snapshot: Option<(u64, Vec<u8>)>,
    segments: Vec<(u64, Vec<u8>)>,
    mut replayed: impl FnMut(&Inventory, &Record) -> Result<(), StorageError>,
) -> Result<Inventory, StorageError> {
    let corrupt = |detail: String| StorageError::Corrupt { event, detail };
    let mut inventory: Option<Inventory> = match snapshot {
        Some((lsn, bytes)) => {
            let inv: Inventory =
                postcard::from_bytes(&bytes).map_err(|e| corrupt(format!("snapshot: {e}")))?;
            let inv = inv.restored();
            if inv.applied() != lsn || inv.id() != event {
                return Err(corrupt(format!(
                    "snapshot claims lsn {lsn} of {event}, holds lsn {} of {}",
                    inv.applied(),
                    inv.id()
                )));
            }
            inv.check_state()
                .map_err(|why| corrupt(format!("snapshot at lsn {lsn}: {why}")))?;
            Some(inv)
        }
        None => None,
    };
    for (first, segment) in segments {
        let records = decode_segment(event, &segment).map_err(|e| match e {
            StorageError::Corrupt { event, detail } => StorageError::Corrupt {
                event,
                detail: format!("segment from lsn {first}: {detail}"),
            },
            e => e,
        })?;
        for (i, record) in records.iter().enumerate() {
            let lsn = first
                .checked_add(i as u64)
                .ok_or_else(|| corrupt(format!("segment at lsn {first} runs past the last lsn")))?;
            let refused =
                |why: String| corrupt(format!("record at lsn {lsn} ({}): {why}", record.kind()));
            match &mut inventory {
                None if lsn == 0 => {
                    Inventory::check_created(record).map_err(refused)?;
                    let inv = Inventory::from_created(record);
                    if inv.id() != event {
                        return Err(corrupt(format!("log of {event} creates {}", inv.id())));
                    }
                    replayed(&inv, record)?;
                    inventory = Some(inv);
                }
                None => {
                    return Err(corrupt(format!(
                        "log starts at lsn {lsn} without a snapshot"
                    )));
                }
                Some(inv) if lsn < inv.applied() => {} // already in the snapshot
                Some(inv) if lsn == inv.applied() => {
                    inv.check_record(record).map_err(refused)?;
                    inv.apply(record);
                    replayed(inv, record)?;
                }
                Some(inv) => {
                    return Err(corrupt(format!(
                        "gap in the log: expected lsn {}, found {lsn}",
                        inv.applied()
                    )));
                }
            }
        }
    }
    let inventory = inventory.ok_or_else(|| corrupt("neither snapshot nor records".into()))?;
    inventory.check_state().map_err(|why| {
        corrupt(format!(
            "the state at lsn {} breaks an invariant: {why}",
            inventory.applied()
        ))
    })?;
    Ok(inventory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::EventStatus;

    #[test]
    fn frames_round_trip_and_corruption_is_caught() {
        let event = EventId(Uuid::from_u128(1));
        let records = vec![
            Record::StatusChanged {
                status: EventStatus::Paused,
                at_ms: 5,
            },
            Record::HoldsExpired {
                hold_ids: vec![],
                at_ms: 6,
            },
        ];
        let mut frames = Vec::new();
        encode_records(&records, &mut frames);
        let segment = finish_segment(2, &frames);
        assert_eq!(decode_segment(event, &segment).unwrap(), records);
        let mut flipped = segment.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decode_segment(event, &flipped),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(decode_segment(event, &segment[..segment.len() - 1]).is_err());
    }

    const EVENT: EventId = EventId(Uuid::from_u128(0xe7));

    /// A 2-tier event: GA of 4 and a row of 3 seats.
    fn created() -> Record {
        use crate::inventory::{Currency, EventSpec, RowSpec, SectionSpec, Stock, TierSpec};
        let tier = |code: &str, stock| TierSpec {
            code: code.into(),
            name: code.into(),
            price_minor: 1_000,
            fee_minor: 0,
            max_per_order: 4,
            sale_windows: vec![],
            stock,
        };
        let row = RowSpec {
            name: "1".into(),
            seats: vec!["1".into(), "2".into(), "3".into()],
        };
        Record::Created {
            spec: EventSpec {
                id: EVENT,
                name: "show".into(),
                venue: "hall".into(),
                starts_at_ms: 2_000_000,
                status: EventStatus::OnSale,
                currency: Currency::parse("EUR").unwrap(),
                customer_limit: None,
                hold_ttl_ms: 60_000,
                payment_ttl_ms: 600_000,
                tiers: vec![
                    tier("GA", Stock::General { capacity: 4 }),
                    tier(
                        "SEAT",
                        Stock::Seated {
                            sections: vec![SectionSpec {
                                name: "A".into(),
                                rows: vec![row],
                            }],
                        },
                    ),
                ],
                time_zone: "UTC".into(),
                allow_reentry: false,
            },
        }
    }

    fn hold(id: u128, tier: u16, quantity: u32, seats: Vec<u32>) -> Record {
        Record::HoldPlaced {
            hold_id: crate::inventory::HoldId(Uuid::from_u128(id)),
            customer: "ana".into(),
            lines: vec![crate::inventory::LineRecord {
                tier,
                quantity,
                seats,
                unit_price_minor: 1_000,
                unit_fee_minor: 0,
            }],
            created_at_ms: 1_000,
            expires_at_ms: 61_000,
            key: None,
        }
    }

    /// Recovers `records` framed with right crcs, one segment from lsn 0.
    fn recover_records(records: &[Record]) -> Result<Inventory, StorageError> {
        let mut frames = Vec::new();
        encode_records(records, &mut frames);
        let segment = finish_segment(records.len() as u32, &frames);
        recover(EVENT, None, vec![(0, segment)], |_, _| Ok(()))
    }

    /// Asserts `result` is a refusal of `EVENT`'s log whose detail says each of `says`.
    fn check_refused(result: Result<Inventory, StorageError>, says: &[&str]) {
        match result {
            Err(StorageError::Corrupt { event, detail }) => {
                assert_eq!(event, EVENT);
                for part in says {
                    assert!(detail.contains(part), "{detail:?} does not say {part:?}");
                }
            }
            Err(e) => panic!("refused as {e}, not as corrupt"),
            Ok(_) => panic!("recovered a log that should be refused"),
        }
    }

    #[test]
    fn a_segment_claiming_more_frames_than_it_holds_is_refused_without_reserving_them() {
        // Found by the `log_segment` fuzz target: a count header of 2,231,369,730 frames made
        // `decode_segment` reserve 339 GB for them and abort.
        let segment = finish_segment(u32::MAX, &[]);
        let err = decode_segment(EVENT, &segment).unwrap_err();
        assert_eq!(
            err,
            StorageError::Corrupt {
                event: EVENT,
                detail: "frame 0 header cut short".into()
            }
        );
        check_refused(
            recover(EVENT, None, vec![(0, segment)], |_, _| Ok(())),
            &["frame 0 header cut short"],
        );
    }

    /// The inputs that crashed a fuzz target once (`fuzz/regressions/<target>/`), each refused
    /// cleanly now, through the same calls as their target.
    #[test]
    fn fuzz_regression_inputs_are_refused_without_a_panic() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions");
        let event = EventId(Uuid::from_u128(0xb0c5_0ff1_ce00_0000_0000_0000_0000_0001));
        let inputs = |target: &str| -> Vec<(String, Vec<u8>)> {
            let mut files: Vec<_> = std::fs::read_dir(dir.join(target))
                .map(|d| d.map(|e| e.unwrap().path()).collect())
                .unwrap_or_default();
            files.sort();
            files
                .into_iter()
                .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
                .collect()
        };
        let mut checked = 0;
        for (name, bytes) in inputs("log_segment") {
            let decoded = decode_segment(event, &bytes);
            let recovered = recover(event, None, vec![(0, bytes)], |_, _| Ok(()));
            assert!(
                matches!(recovered, Err(StorageError::Corrupt { .. })) || decoded.is_ok(),
                "{name}: {recovered:?}"
            );
            checked += 1;
        }
        assert!(checked >= 1, "no regression inputs under {}", dir.display());
    }

    #[test]
    fn recovery_rebuilds_a_log_of_possible_records() {
        let inventory =
            recover_records(&[created(), hold(1, 0, 2, vec![]), hold(2, 1, 2, vec![0, 1])])
                .expect("a possible log recovers");
        assert_eq!(inventory.applied(), 3);
    }

    #[test]
    fn recovery_refuses_a_log_whose_first_record_is_not_created() {
        let first = Record::StatusChanged {
            status: EventStatus::Paused,
            at_ms: 5,
        };
        check_refused(
            recover_records(&[first]),
            &["lsn 0", "StatusChanged", "not Created"],
        );
    }

    #[test]
    fn recovery_refuses_a_second_created_naming_its_lsn() {
        check_refused(
            recover_records(&[created(), created()]),
            &["lsn 1", "Created"],
        );
    }

    #[test]
    fn recovery_refuses_a_record_about_a_hold_that_does_not_exist() {
        let confirm = Record::HoldConfirmed {
            hold_id: crate::inventory::HoldId(Uuid::from_u128(9)),
            order_id: crate::inventory::OrderId(Uuid::from_u128(10)),
            payment_ref: "p".into(),
            lines: vec![],
            at_ms: 2_000,
            payment_due_at_ms: 600_000,
            key: None,
            contact: None,
        };
        check_refused(
            recover_records(&[created(), confirm]),
            &["lsn 1", "HoldConfirmed", "not live"],
        );
        let release = Record::HoldReleased {
            hold_id: crate::inventory::HoldId(Uuid::from_u128(9)),
            at_ms: 2_000,
            key: None,
        };
        check_refused(
            recover_records(&[created(), release]),
            &["lsn 1", "not live"],
        );
    }

    #[test]
    fn recovery_refuses_a_hold_that_would_sell_a_seat_twice_or_past_capacity() {
        let twice = [created(), hold(1, 1, 1, vec![2]), hold(2, 1, 1, vec![2])];
        check_refused(
            recover_records(&twice),
            &["lsn 2", "HoldPlaced", "not free"],
        );
        let past = [created(), hold(1, 0, 3, vec![]), hold(2, 0, 2, vec![])];
        check_refused(
            recover_records(&past),
            &["lsn 2", "2 of tier 0 with 1 available"],
        );
        let no_tier = [created(), hold(1, 7, 1, vec![])];
        check_refused(recover_records(&no_tier), &["lsn 1", "tier 7"]);
        let no_seat = [created(), hold(1, 1, 1, vec![99])];
        check_refused(recover_records(&no_seat), &["lsn 1", "seat 99"]);
        let other_tier = [created(), hold(1, 0, 1, vec![0])];
        check_refused(
            recover_records(&other_tier),
            &["lsn 1", "general-admission"],
        );
    }

    #[test]
    fn recovery_refuses_a_snapshot_of_another_lsn() {
        let inventory = recover_records(&[created(), hold(1, 1, 2, vec![0, 1])]).unwrap();
        let state = postcard::to_stdvec(&inventory).unwrap();
        recover(EVENT, Some((2, state.clone())), vec![], |_, _| Ok(()))
            .expect("an intact snapshot recovers");
        // The same snapshot under another event's log, at another lsn: refused, not trusted.
        check_refused(
            recover(EVENT, Some((3, state)), vec![], |_, _| Ok(())),
            &["claims lsn 3"],
        );
    }

    #[test]
    fn sled_log_keeps_segments_in_order_and_drops_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventId(Uuid::from_u128(1));
        let b = EventId(Uuid::from_u128(2));
        {
            let log = SledLog::open(dir.path(), 16).unwrap();
            for (lsn, count) in [(0u64, 3u32), (3, 2), (5, 4)] {
                log.write_segment(a, lsn, &finish_segment(count, &[]))
                    .unwrap();
            }
            log.write_segment(b, 0, &finish_segment(1, &[])).unwrap();
            log.drop_segments_before(a, 6).unwrap();
            log.flush().unwrap();
        }
        let log = SledLog::open(dir.path(), 16).unwrap();
        assert_eq!(log.events().unwrap(), vec![a, b]);
        let firsts: Vec<u64> = log.segments(a).unwrap().iter().map(|s| s.0).collect();
        // [0,3) and [3,5) end before 6; [5,9) straddles it and stays.
        assert_eq!(firsts, vec![5]);
    }

    /// Rounds over many events go through the journal and its folds; every read sees each
    /// write once, in order, before and after a reopen (which folds what is left), and an
    /// acknowledged entry still in a journal value is not brought back.
    #[test]
    fn writes_of_many_events_read_back_through_the_journal_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let events: Vec<EventId> = (1..=10).map(|n| EventId(Uuid::from_u128(n))).collect();
        let rounds = 2 * crate::journal::FOLD_AGE_ROUNDS;
        let check = |log: &SledLog, acked: u64| {
            for &e in &events {
                let segments = log.segments(e).unwrap();
                let mut next = 0;
                for (first, segment) in &segments {
                    assert_eq!(*first, next, "segments of {e} in lsn order, no gap");
                    next += u64::from(segment_count(e, segment).unwrap());
                }
                assert_eq!(next, rounds, "every record of {e}");
                let acked = if e == events[0] { acked } else { 0 };
                for seq in 1..=rounds {
                    assert_eq!(
                        log.outbox_has(e, seq).unwrap(),
                        seq > acked,
                        "{e} seq {seq}"
                    );
                }
            }
            let all = log.outbox_after(None, usize::MAX).unwrap();
            let keys: Vec<(EventId, u64)> = all.iter().map(|(e, s, _)| (*e, *s)).collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(keys, sorted, "in key order, once each");
            assert_eq!(all.len() as u64, events.len() as u64 * rounds - acked);
            assert_eq!(log.outbox_len().unwrap(), all.len());
            assert!(
                all.iter()
                    .all(|(e, s, entry)| *entry == [e.0.as_bytes()[15], *s as u8])
            );
            let page = log.outbox_after(Some((events[1], 5)), 3).unwrap();
            let page: Vec<(EventId, u64)> = page.iter().map(|(e, s, _)| (*e, *s)).collect();
            assert_eq!(page, vec![(events[1], 6), (events[1], 7), (events[1], 8)]);
        };
        {
            let log = SledLog::open(dir.path(), 16).unwrap();
            assert_eq!(log.events().unwrap(), Vec::<EventId>::new());
            for lsn in 0..rounds {
                for &e in &events {
                    log.write_segment(e, lsn, &finish_segment(1, b"frame"))
                        .unwrap();
                    log.write_outbox(e, lsn + 1, &[e.0.as_bytes()[15], lsn as u8 + 1])
                        .unwrap();
                }
                log.flush().unwrap();
            }
            assert_eq!(log.events().unwrap(), events);
            check(&log, 0);
            assert_eq!(log.ack_outbox(events[0], 20).unwrap(), 20);
            check(&log, 20);
            log.flush().unwrap();
        }
        let log = SledLog::open(dir.path(), 16).unwrap();
        assert_eq!(log.events().unwrap(), events);
        check(&log, 20);
        assert_eq!(
            log.files.lock().unwrap().len(),
            (0, 0),
            "the open folded the journal files and gave them up"
        );
    }

    /// The files of sled's metadata store: `(snapshot ids, log ids)`.
    fn metadata_files(log_dir: &Path) -> (Vec<u64>, Vec<u64>) {
        let (mut snapshots, mut logs) = (Vec::new(), Vec::new());
        for entry in std::fs::read_dir(log_dir.join("metadata")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let id = |prefix: &str| u64::from_str_radix(name.strip_prefix(prefix)?, 16).ok();
            if let Some(id) = id("snapshot_") {
                snapshots.push(id);
            } else if let Some(id) = id("log_") {
                logs.push(id);
            }
        }
        snapshots.sort_unstable();
        logs.sort_unstable();
        (snapshots, logs)
    }

    /// sled 1.0.0-alpha.124 opens a database by writing its metadata into a new snapshot,
    /// removing the logs, then making a new empty log. Killed between the last two steps, it
    /// leaves a snapshot and no log; the next open then wrote the snapshot under its own name and
    /// removed it as the old one, so the open after that found no metadata ("tree had no minimum
    /// node", every segment gone). Seen in the crash soak after 77 kills.
    #[test]
    fn a_kill_between_sleds_metadata_snapshot_and_its_new_log_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let event = EventId(Uuid::from_u128(7));
        let segment = finish_segment(0, &[]);
        {
            let log = SledLog::open(dir.path(), 16).unwrap();
            log.write_segment(event, 0, &segment).unwrap();
            log.flush().unwrap();
        }
        // The next open folds the round's journal value into the tree: a write.
        drop(SledLog::open(dir.path(), 16).unwrap());
        // An open that writes nothing: its log stays empty, as if never made.
        drop(SledLog::open(dir.path(), 16).unwrap());
        let (snapshots, logs) = metadata_files(dir.path());
        assert_eq!(snapshots.len(), 1, "{snapshots:?}");
        assert_eq!(logs.len(), 1, "{logs:?}");
        let empty = dir
            .path()
            .join("metadata")
            .join(format!("log_{:016x}", logs[0]));
        assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
        std::fs::remove_file(&empty).unwrap();
        for _ in 0..3 {
            let log = SledLog::open(dir.path(), 16).unwrap();
            assert_eq!(log.events().unwrap(), vec![event]);
            assert_eq!(log.segments(event).unwrap(), vec![(0, segment.clone())]);
        }
    }

    #[test]
    fn a_data_directory_of_another_format_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        check_format(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
            "7\n"
        );
        check_format(dir.path()).unwrap();
        // Versions 5 and 6 read as 7: marked 7 and opened.
        for old in ["5\n", "6\n"] {
            std::fs::write(dir.path().join("FORMAT"), old).unwrap();
            check_format(dir.path()).unwrap();
            assert_eq!(
                std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
                "7\n"
            );
        }
        std::fs::write(dir.path().join("FORMAT"), "4\n").unwrap();
        let err = check_format(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("format 4") && err.contains("reads format 7"),
            "{err}"
        );
        let old = tempfile::tempdir().unwrap();
        std::fs::create_dir(log_dir(old.path())).unwrap();
        let err = check_format(old.path()).unwrap_err().to_string();
        assert!(
            err.contains("format 1") && err.contains("empty storage.data_dir"),
            "{err}"
        );
    }

    #[test]
    fn snapshot_files_replace_each_other_and_catch_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::open(dir.path()).unwrap();
        let a = EventId(Uuid::from_u128(1));
        assert_eq!(snapshots.read(a).unwrap(), None);
        snapshots.write(a, 10, b"first").unwrap();
        snapshots.write(a, 20, b"second").unwrap();
        assert_eq!(snapshots.read(a).unwrap(), Some((20, b"second".to_vec())));
        assert_eq!(snapshots.events().unwrap(), vec![a]);
        let path = dir.path().join(format!("{a}.snapshot"));
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            snapshots.read(a),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
