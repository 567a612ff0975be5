//! Group commit: one thread writes everything the event actors have queued since its last round,
//! flushes once, then answers every caller whose change that flush covered. A burst of thousands
//! of changes costs a handful of fsyncs, and actors keep deciding while a flush is under way.
//!
//! It never decides anything, never writes snapshots (they are files, written off this thread)
//! and never answers before the flush returns. The queue is bounded by
//! the callers: each waiting answer holds an admission permit of its event (see `registry`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::inventory::EventId;
use crate::wal::{LogStore, SEGMENT_HEADER, StorageError, set_segment_count};

/// Runs once the change it waits for is durable, or with the error that stopped it.
pub type Waiter = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// Records of one event queued for the next round: `count` frames starting at `first_lsn`,
/// already laid out as a segment whose count header is filled in when it is written.
struct Pending {
    first_lsn: u64,
    count: u32,
    segment: Vec<u8>,
    /// The outbox entries these records made, `(seq, encoded)`, written in the same round.
    outbox: Vec<(u64, Vec<u8>)>,
}

/// Ordered maps, so that a round writes its events in the same order every time (the
/// storage-fault simulation replays a seed to the same writes); a round holds few events.
#[derive(Default)]
struct Queue {
    segments: BTreeMap<EventId, Pending>,
    /// Segments to drop: every one holding only records before the lsn, which a durable
    /// snapshot now covers.
    compactions: Vec<(EventId, u64)>,
    /// Outbox entries the broker acknowledged, up to a seq per event.
    outbox_acks: BTreeMap<EventId, u64>,
    waiters: Vec<Waiter>,
    closed: bool,
    poisoned: Option<StorageError>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.segments.is_empty()
            && self.compactions.is_empty()
            && self.outbox_acks.is_empty()
            && self.waiters.is_empty()
    }
}

/// Counters of the flushing thread, for metrics and benchmarks.
#[derive(Default, Debug)]
pub struct CommitStats {
    pub flushes: AtomicU64,
    pub records: AtomicU64,
    /// Segments written: one per event with records in a round, each a write of its own to the
    /// log.
    pub segments: AtomicU64,
    pub bytes: AtomicU64,
    pub flush_nanos_total: AtomicU64,
    pub flush_nanos_max: AtomicU64,
    /// Outbox entries written, and removed once acknowledged, since start.
    pub outbox_written: AtomicU64,
    pub outbox_removed: AtomicU64,
    /// Upkeep after rounds (`LogStore::checkpoint`: sled's flush of the trees) that did some
    /// work, and its time: the next round waits for it.
    pub checkpoints: AtomicU64,
    pub checkpoint_nanos_total: AtomicU64,
    pub checkpoint_nanos_max: AtomicU64,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    stats: CommitStats,
    /// Set once a round failed (`Queue::poisoned` says why): a check without the queue's lock.
    failed: std::sync::atomic::AtomicBool,
    /// Per event, the first outbox seq of the round being written and not yet flushed. Readers of
    /// the outbox see sled's writes before they are durable; an entry from here on must not be
    /// published until the flush returns, or a crash could make it a change that never happened
    /// (and its seq, and so its id, another change's). Left in place after a failed flush.
    unflushed_outbox: Mutex<BTreeMap<EventId, u64>>,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl GroupCommit {
    /// Starts the commit thread, which owns `log` from now on.
    pub fn start(log: Box<dyn LogStore>) -> GroupCommit {
        let commit = GroupCommit::without_thread();
        let worker = commit.shared.clone();
        let thread = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                run(&worker, log.as_ref());
                if worker.failed.load(Ordering::Acquire) {
                    // sled 1.0.0-alpha.124 flushes when a handle is dropped, and after a failed
                    // flush that waits forever: the handle is left as it is.
                    std::mem::forget(log);
                }
            })
            .expect("spawn the group-commit thread");
        *commit.thread.lock().expect("thread lock") = Some(thread);
        commit
    }

    /// A group commit without its thread: nothing is written until the caller runs
    /// [`GroupCommit::run_round`], on its own thread. The storage-fault simulation uses it so that
    /// which changes share a round, and so which writes a crash catches, follows from its seed
    /// rather than from thread timing.
    pub fn without_thread() -> GroupCommit {
        GroupCommit {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                wake: Condvar::new(),
                stats: CommitStats::default(),
                failed: std::sync::atomic::AtomicBool::new(false),
                unflushed_outbox: Mutex::new(BTreeMap::new()),
            }),
            thread: Mutex::new(None),
        }
    }

    /// Runs one round on the calling thread, as the commit thread does: writes what is queued,
    /// flushes, then runs the waiters. Returns false if nothing was queued. Only for a group
    /// commit made `without_thread`.
    pub fn run_round(&self, log: &dyn LogStore) -> bool {
        assert!(
            self.thread.lock().expect("thread lock").is_none(),
            "run_round on a group commit that has its thread"
        );
        let round = {
            let mut q = self.shared.queue.lock().expect("commit queue lock");
            if q.is_empty() {
                return false;
            }
            Round::take(&mut q)
        };
        commit_round(&self.shared, log, round);
        true
    }

    /// Queues `count` encoded records of `event` (lsns `first_lsn..first_lsn + count`), the
    /// outbox entries they made, and the waiters to run once they, and everything queued before
    /// them, are durable. Records of one event must be submitted in lsn order. A submission
    /// without records still waits for the round in progress: an answer must not overtake the
    /// durability of what it observed. After a failed round, or once closed, the waiters run at
    /// once with the error.
    pub fn submit(
        &self,
        event: EventId,
        first_lsn: u64,
        count: u32,
        frames: &[u8],
        outbox: &mut Vec<(u64, Vec<u8>)>,
        waiters: impl IntoIterator<Item = Waiter>,
    ) {
        let mut q = self.shared.queue.lock().expect("commit queue lock");
        let refused = match (&q.poisoned, q.closed) {
            (Some(e), _) => Some(StorageError::Poisoned(e.to_string())),
            (None, true) => Some(StorageError::Closed),
            (None, false) => None,
        };
        if let Some(e) = refused {
            drop(q);
            outbox.clear();
            for waiter in waiters {
                waiter(Err(e.clone()));
            }
            return;
        }
        if count > 0 {
            let pending = q.segments.entry(event).or_insert_with(|| Pending {
                first_lsn,
                count: 0,
                segment: SEGMENT_HEADER.to_vec(),
                outbox: Vec::new(),
            });
            assert_eq!(
                pending.first_lsn + u64::from(pending.count),
                first_lsn,
                "records of {event} submitted out of order"
            );
            pending.count += count;
            pending.segment.extend_from_slice(frames);
            pending.outbox.append(outbox);
        }
        assert!(
            outbox.is_empty(),
            "outbox entries of {event} without records"
        );
        q.waiters.extend(waiters);
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Queues dropping the segments of `event` that hold only records before `lsn`. Call it only
    /// once a snapshot covering them is durable.
    pub fn submit_compaction(&self, event: EventId, lsn: u64) {
        let mut q = self.shared.queue.lock().expect("commit queue lock");
        if q.closed || q.poisoned.is_some() {
            return;
        }
        q.compactions.push((event, lsn));
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Queues removing the outbox entries of `event` up to `seq`, which the broker acknowledged.
    /// Durable with the next round; a crash before it only makes the relay send them again.
    pub fn submit_outbox_ack(&self, event: EventId, seq: u64) {
        let mut q = self.shared.queue.lock().expect("commit queue lock");
        if q.closed || q.poisoned.is_some() {
            return;
        }
        let acked = q.outbox_acks.entry(event).or_insert(seq);
        *acked = (*acked).max(seq);
        drop(q);
        self.shared.wake.notify_one();
    }

    /// Blocks until everything submitted before this call is durable (or has failed).
    pub fn wait_durable(&self) -> Result<(), StorageError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter: Waiter = Box::new(move |durable| {
            let _ = tx.send(durable);
        });
        self.submit(
            EventId(uuid::Uuid::nil()),
            0,
            0,
            &[],
            &mut Vec::new(),
            Some(waiter),
        );
        rx.recv().unwrap_or(Err(StorageError::Closed))
    }

    pub fn stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    /// The write that failed, once one has: from then on every submission is refused, and the
    /// disk holds exactly what was durable before it.
    pub fn failure(&self) -> Option<StorageError> {
        if !self.shared.failed.load(Ordering::Acquire) {
            return None;
        }
        self.shared
            .queue
            .lock()
            .expect("commit queue lock")
            .poisoned
            .clone()
    }

    /// Whether outbox entry `seq` of `event`, read from the log, is durable and may be published.
    /// Ask after reading the entry: the round that writes entries marks them before it writes
    /// them and unmarks them once flushed, so an entry read and then found unmarked is durable.
    pub fn outbox_durable(&self, event: EventId, seq: u64) -> bool {
        self.shared
            .unflushed_outbox
            .lock()
            .expect("unflushed outbox lock")
            .get(&event)
            .is_none_or(|&first| seq < first)
    }

    /// Finishes every queued round, then stops the thread. Later submissions fail with `Closed`.
    pub fn close(&self) {
        self.shared.queue.lock().expect("commit queue lock").closed = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            t.join().expect("group-commit thread panicked");
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.close();
    }
}

/// What one round takes from the queue.
struct Round {
    segments: BTreeMap<EventId, Pending>,
    compactions: Vec<(EventId, u64)>,
    acks: BTreeMap<EventId, u64>,
    waiters: Vec<Waiter>,
    poisoned: Option<StorageError>,
}

impl Round {
    fn take(q: &mut Queue) -> Round {
        Round {
            segments: std::mem::take(&mut q.segments),
            compactions: std::mem::take(&mut q.compactions),
            acks: std::mem::take(&mut q.outbox_acks),
            waiters: std::mem::take(&mut q.waiters),
            poisoned: q.poisoned.clone(),
        }
    }
}

fn run(shared: &Shared, log: &dyn LogStore) {
    loop {
        let round = {
            let mut q = shared.queue.lock().expect("commit queue lock");
            while q.is_empty() && !q.closed {
                q = shared.wake.wait(q).expect("commit queue lock");
            }
            if q.is_empty() && q.closed {
                return;
            }
            Round::take(&mut q)
        };
        commit_round(shared, log, round);
    }
}

/// Writes and flushes one round, or nothing after a failed one, then runs its waiters.
fn commit_round(shared: &Shared, log: &dyn LogStore, round: Round) {
    let Round {
        segments,
        compactions,
        acks,
        waiters,
        poisoned,
    } = round;
    let result = match &poisoned {
        // Writing after a failed round could leave a gap in the log; write nothing.
        Some(e) => Err(StorageError::Poisoned(e.to_string())),
        None => write_round(log, segments, &compactions, &acks, shared),
    };
    if let (None, Err(e)) = (&poisoned, &result) {
        // The actors' memory is now ahead of the disk. Refuse every later change rather than
        // acknowledge one that a restart would not find.
        tracing::error!(error = %e, "log write failed; refusing further changes");
        poison(shared, e.clone());
    }
    for waiter in waiters {
        waiter(result.clone());
    }
    // Upkeep after the answers, so that no waiter waits for it.
    if poisoned.is_none() && result.is_ok() {
        let started = Instant::now();
        match log.checkpoint() {
            Ok(false) => {}
            Ok(true) => {
                let nanos = started.elapsed().as_nanos() as u64;
                let stats = &shared.stats;
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                stats
                    .checkpoint_nanos_total
                    .fetch_add(nanos, Ordering::Relaxed);
                stats
                    .checkpoint_nanos_max
                    .fetch_max(nanos, Ordering::Relaxed);
                metrics::histogram!("boxoffice_log_checkpoint_duration_seconds")
                    .record(nanos as f64 / 1e9);
            }
            Err(e) => {
                tracing::error!(error = %e, "log checkpoint failed; refusing further changes");
                poison(shared, e);
            }
        }
    }
}

/// Refuses every later change, saying why.
fn poison(shared: &Shared, e: StorageError) {
    shared.queue.lock().expect("commit queue lock").poisoned = Some(e);
    shared.failed.store(true, Ordering::Release);
}

/// Writes one round's segments with their outbox entries, compactions and outbox
/// acknowledgements, and flushes them, counting what it did. With nothing to write there is
/// nothing to flush: every earlier round already flushed, so the waiters' changes are durable.
fn write_round(
    log: &dyn LogStore,
    segments: BTreeMap<EventId, Pending>,
    compactions: &[(EventId, u64)],
    acks: &BTreeMap<EventId, u64>,
    shared: &Shared,
) -> Result<(), StorageError> {
    if segments.is_empty() && compactions.is_empty() && acks.is_empty() {
        return Ok(());
    }
    let stats = &shared.stats;
    let marked = {
        let mut unflushed = shared
            .unflushed_outbox
            .lock()
            .expect("unflushed outbox lock");
        for (event, p) in &segments {
            if let Some((first, _)) = p.outbox.first() {
                unflushed.entry(*event).or_insert(*first);
            }
        }
        !unflushed.is_empty()
    };
    let started = Instant::now();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let written_segments = segments.len() as u64;
    let (mut outbox_written, mut outbox_removed) = (0u64, 0u64);
    for (event, mut p) in segments {
        set_segment_count(&mut p.segment, p.count);
        records += u64::from(p.count);
        bytes += p.segment.len() as u64;
        log.write_segment(event, p.first_lsn, &p.segment)?;
        for (seq, entry) in &p.outbox {
            log.write_outbox(event, *seq, entry)?;
        }
        outbox_written += p.outbox.len() as u64;
    }
    for (event, lsn) in compactions {
        log.drop_segments_before(*event, *lsn)?;
    }
    for (event, seq) in acks {
        outbox_removed += log.ack_outbox(*event, *seq)?;
    }
    log.flush()?;
    if marked {
        shared
            .unflushed_outbox
            .lock()
            .expect("unflushed outbox lock")
            .clear();
    }
    stats
        .outbox_written
        .fetch_add(outbox_written, Ordering::Relaxed);
    stats
        .outbox_removed
        .fetch_add(outbox_removed, Ordering::Relaxed);
    let nanos = started.elapsed().as_nanos() as u64;
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    stats.records.fetch_add(records, Ordering::Relaxed);
    stats
        .segments
        .fetch_add(written_segments, Ordering::Relaxed);
    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    stats.flush_nanos_total.fetch_add(nanos, Ordering::Relaxed);
    stats.flush_nanos_max.fetch_max(nanos, Ordering::Relaxed);
    // Without an installed recorder (tests, the bench's engine runs) these are no-ops.
    metrics::histogram!("boxoffice_log_flush_duration_seconds").record(nanos as f64 / 1e9);
    metrics::histogram!("boxoffice_log_flush_batch_records").record(records as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::wal::SledLog;

    /// The real sled log, with a flush that waits for the test to let it run (or fail).
    struct GatedFlush {
        log: SledLog,
        started: Mutex<mpsc::Sender<()>>,
        proceed: Mutex<mpsc::Receiver<bool>>,
    }

    impl LogStore for GatedFlush {
        fn write_segment(&self, e: EventId, lsn: u64, s: &[u8]) -> Result<(), StorageError> {
            self.log.write_segment(e, lsn, s)
        }
        fn drop_segments_before(&self, e: EventId, lsn: u64) -> Result<(), StorageError> {
            self.log.drop_segments_before(e, lsn)
        }
        fn flush(&self) -> Result<(), StorageError> {
            self.started.lock().unwrap().send(()).unwrap();
            if self.proceed.lock().unwrap().recv().unwrap() {
                self.log.flush()
            } else {
                Err(StorageError::Io("the disk is gone".into()))
            }
        }
        fn events(&self) -> Result<Vec<EventId>, StorageError> {
            self.log.events()
        }
        fn segments(&self, e: EventId) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
            self.log.segments(e)
        }
        fn write_outbox(&self, e: EventId, seq: u64, entry: &[u8]) -> Result<(), StorageError> {
            self.log.write_outbox(e, seq, entry)
        }
        fn remove_outbox(
            &self,
            e: EventId,
            seqs: std::ops::RangeInclusive<u64>,
        ) -> Result<u64, StorageError> {
            self.log.remove_outbox(e, seqs)
        }
        fn mark_outbox_acked(&self, e: EventId, seq: u64) -> Result<(), StorageError> {
            self.log.mark_outbox_acked(e, seq)
        }
        fn outbox_acked(&self, e: EventId) -> Result<u64, StorageError> {
            self.log.outbox_acked(e)
        }
        fn outbox_has(&self, e: EventId, seq: u64) -> Result<bool, StorageError> {
            self.log.outbox_has(e, seq)
        }
    }

    /// Regression: sled shows a round's outbox entries to every handle before its flush; the
    /// relay read them and could publish a change that a failed flush or a crash then undid.
    #[test]
    fn outbox_entries_are_not_durable_until_their_round_has_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), 16).unwrap();
        let (started_tx, started) = mpsc::channel();
        let (proceed, proceed_rx) = mpsc::channel();
        let commit = GroupCommit::start(Box::new(GatedFlush {
            log: log.clone(),
            started: Mutex::new(started_tx),
            proceed: Mutex::new(proceed_rx),
        }));
        let event = EventId(uuid::Uuid::from_u128(9));
        let round = |seq: u64| {
            let (tx, rx) = mpsc::channel();
            commit.submit(
                event,
                seq - 1,
                1,
                b"frame",
                &mut vec![(seq, b"entry".to_vec())],
                Some(Box::new(move |r: Result<(), StorageError>| tx.send(r).unwrap()) as Waiter),
            );
            started.recv().unwrap();
            rx
        };

        let answered = round(1);
        assert!(log.outbox_has(event, 1).unwrap(), "sled shows the entry");
        assert!(!commit.outbox_durable(event, 1), "before the flush");
        proceed.send(true).unwrap();
        answered.recv().unwrap().unwrap();
        assert!(commit.outbox_durable(event, 1), "after the flush");

        let answered = round(2);
        assert!(!commit.outbox_durable(event, 2));
        assert!(
            commit.outbox_durable(event, 1),
            "earlier entries stay durable"
        );
        proceed.send(false).unwrap();
        assert!(answered.recv().unwrap().is_err());
        assert!(
            !commit.outbox_durable(event, 2),
            "never, after a failed flush"
        );
    }
}
