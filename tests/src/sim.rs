//! The storage-fault simulation: events driven by seeded random commands over a simulated store
//! (`SimStorage`, a `LogStore` and a `SnapshotStore`) that keeps what was written apart from what
//! was flushed and injects faults: crashes that keep only a prefix of the unflushed writes, failed
//! flushes, a torn last segment, a truncated or changed snapshot, crashes while a snapshot is
//! written, between a snapshot and its compaction, during a compaction and during recovery.
//! After every crash it recovers through the engine's own `recover_event` and checks the result
//! against what was acknowledged.
//!
//! It runs the engine's pure parts as the actor runs them, on one thread: the inventory decides
//! (with the actor's order: prune, expire due holds, cancel unpaid orders, then the command), the
//! records are framed by `wal::encode_records`, queued in a real `GroupCommit` made without its
//! thread, whose rounds (`run_round`) the driver runs when its seed says; snapshots are taken
//! and compacted as the actor does. Same seed, same run: ids, the clock and every choice come
//! from the seed. It does not run the ractor actors, tokio, the timers or sled itself (the real
//! sled store is what `tests/tests/engine/storage_faults.rs` crashes), and it does not model a
//! disk that reorders writes within a round or loses flushed data.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use engine::commit::{GroupCommit, Waiter};
use engine::inventory::{
    CancelOrderRequest, ConfirmRequest, Currency, Decision, EventId, EventSpec, EventStatus,
    HoldId, Inventory, Limits, OrderId, OrderStatus, PaymentOutcome, PaymentResult, Record,
    RefundOrderRequest, Rejection, ReleaseRequest, ReserveItem, ReserveRequest, RowSpec, Scan,
    SeatRef, SectionSpec, Stock, TicketClaims, TicketId, TicketIssuer, TierSpec,
};
use engine::outbox::{Change, OutboxEntry};
use engine::registry::recover_event;
use engine::wal::{self, LogStore, SnapshotStore, StorageError};
use uuid::Uuid;

type Key = (EventId, u64);

/// `true` with probability `p`.
trait Chance {
    fn chance(&mut self, p: f64) -> bool;
}

impl Chance for fastrand::Rng {
    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

/// One write to the simulated log, kept until a flush makes it durable.
#[derive(Clone, Debug)]
enum Write {
    Segment(Key, Vec<u8>),
    DropSegment(Key),
    Outbox(Key, Vec<u8>),
    RemoveOutbox(Key),
    Acked(EventId, u64),
}

/// The log's trees as sled keeps them: segments, outbox entries, acknowledged seqs.
#[derive(Clone, Default)]
struct Trees {
    log: BTreeMap<Key, Vec<u8>>,
    outbox: BTreeMap<Key, Vec<u8>>,
    acked: BTreeMap<EventId, u64>,
}

impl Trees {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Segment(key, bytes) => {
                self.log.insert(*key, bytes.clone());
            }
            Write::DropSegment(key) => {
                self.log.remove(key);
            }
            Write::Outbox(key, bytes) => {
                self.outbox.insert(*key, bytes.clone());
            }
            Write::RemoveOutbox(key) => {
                self.outbox.remove(key);
            }
            Write::Acked(event, seq) => {
                self.acked.insert(*event, *seq);
            }
        }
    }
}

/// Faults armed for what comes next.
#[derive(Default, Debug)]
pub struct Faults {
    /// The process dies at the n-th next write, flush or snapshot write (0: the next one).
    pub crash_after_writes: Option<u32>,
    /// The next flush fails; what it should have made durable may or may not be (a crash later
    /// decides how much).
    pub fail_next_flush: bool,
}

#[derive(Default)]
struct StorageState {
    /// What survives a crash.
    durable: Trees,
    /// What reads see: durable plus every pending write, as sled shows unflushed writes.
    current: Trees,
    pending: Vec<Write>,
    /// Snapshot files, whole: the real `SnapshotDir` writes a temporary file, fsyncs it and
    /// renames it, so a crash leaves the old file or the new one, each durable.
    snapshots: BTreeMap<EventId, Vec<u8>>,
    faults: Faults,
    /// Set when an injected crash stopped the process: every later call fails until `crash`.
    crashed: bool,
    /// When set, the outbox as a reader sees it at the next flush, before it is durable.
    relay_view: Option<Vec<(Key, Vec<u8>)>>,
    relay_reads_at_flush: bool,
}

fn crash_error() -> StorageError {
    StorageError::Io("simulated crash".into())
}

/// Whether `e` is the simulated process dying.
pub fn is_crash(e: &StorageError) -> bool {
    *e == crash_error()
}

impl StorageState {
    /// Every write, flush and snapshot write passes here: a crashed process does nothing more,
    /// and an armed crash happens at its count.
    fn step(&mut self) -> Result<(), StorageError> {
        if self.crashed {
            return Err(crash_error());
        }
        match &mut self.faults.crash_after_writes {
            Some(0) => {
                self.faults.crash_after_writes = None;
                self.crashed = true;
                Err(crash_error())
            }
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn write(&mut self, write: Write) -> Result<(), StorageError> {
        self.step()?;
        self.current.apply(&write);
        self.pending.push(write);
        Ok(())
    }
}

/// What a crash kept and cut.
#[derive(Debug, Clone, Default)]
pub struct CrashReport {
    pub pending_writes: usize,
    pub kept_writes: usize,
    /// The segment cut short, and by how many bytes.
    pub torn: Option<(Key, usize)>,
}

/// The simulated store. Clones share it.
#[derive(Clone, Default)]
pub struct SimStorage(Arc<Mutex<StorageState>>);

impl SimStorage {
    fn state(&self) -> std::sync::MutexGuard<'_, StorageState> {
        self.0.lock().expect("simulated storage lock")
    }

    /// A copy of everything stored, pending writes included, that shares nothing with this one.
    pub fn copy(&self) -> SimStorage {
        let s = self.state();
        SimStorage(Arc::new(Mutex::new(StorageState {
            durable: s.durable.clone(),
            current: s.current.clone(),
            pending: s.pending.clone(),
            snapshots: s.snapshots.clone(),
            faults: Faults::default(),
            crashed: s.crashed,
            relay_view: None,
            relay_reads_at_flush: false,
        })))
    }

    pub fn arm(&self, faults: Faults) {
        self.state().faults = faults;
    }

    pub fn crashed(&self) -> bool {
        self.state().crashed
    }

    /// Writes not yet flushed.
    pub fn pending_writes(&self) -> usize {
        self.state().pending.len()
    }

    /// The process stops: of the writes since the last flush, a prefix chosen by `rng` reaches
    /// the disk (a disk may persist some of what it was given), the last segment among them cut
    /// short if `tear`; the rest is lost. Faults are disarmed.
    pub fn crash(&self, rng: &mut fastrand::Rng, tear: bool) -> CrashReport {
        let kept = rng.usize(0..=self.pending_writes());
        self.crash_keeping(kept, tear.then_some(rng))
    }

    /// A crash that keeps the first `kept` unflushed writes, the last segment among them cut
    /// short (by a number of bytes drawn from `tear`'s generator) if `tear` is given.
    pub fn crash_keeping(&self, kept: usize, tear: Option<&mut fastrand::Rng>) -> CrashReport {
        let mut s = self.state();
        let pending = std::mem::take(&mut s.pending);
        let kept = kept.min(pending.len());
        let mut survivors: Vec<Write> = pending[..kept].to_vec();
        let mut torn = None;
        if let Some(rng) = tear
            && let Some(Write::Segment(key, bytes)) = survivors
                .iter_mut()
                .rev()
                .find(|w| matches!(w, Write::Segment(..)))
        {
            let cut = rng.usize(1..=bytes.len());
            bytes.truncate(bytes.len() - cut);
            torn = Some((*key, cut));
        }
        for write in &survivors {
            s.durable.apply(write);
        }
        // A later write of the prefix may have dropped the torn segment again.
        let torn = torn.filter(|(key, _)| s.durable.log.contains_key(key));
        s.current = s.durable.clone();
        s.crashed = false;
        s.faults = Faults::default();
        s.relay_view = None;
        s.relay_reads_at_flush = false;
        CrashReport {
            pending_writes: pending.len(),
            kept_writes: kept,
            torn,
        }
    }

    /// What an operator does with a segment recovery refused: removes it.
    pub fn remove_segment(&self, key: Key) {
        let mut s = self.state();
        s.durable.log.remove(&key);
        s.current.log.remove(&key);
    }

    /// The snapshot file of `event`, as stored.
    pub fn snapshot_file(&self, event: EventId) -> Option<Vec<u8>> {
        self.state().snapshots.get(&event).cloned()
    }

    /// Replaces the snapshot file of `event` (a damaged one, or a backup put back).
    pub fn put_snapshot_file(&self, event: EventId, bytes: Vec<u8>) {
        self.state().snapshots.insert(event, bytes);
    }

    pub fn snapshot_events(&self) -> Vec<EventId> {
        self.state().snapshots.keys().copied().collect()
    }

    /// Segment keys of `event` on the durable disk.
    pub fn durable_segments(&self, event: EventId) -> Vec<Key> {
        self.state()
            .durable
            .log
            .keys()
            .filter(|k| k.0 == event)
            .copied()
            .collect()
    }

    /// Outbox entries of `event` as a reader sees them.
    pub fn outbox(&self, event: EventId) -> BTreeMap<u64, Vec<u8>> {
        self.state()
            .current
            .outbox
            .range((event, 0)..=(event, u64::MAX))
            .map(|(k, v)| (k.1, v.clone()))
            .collect()
    }

    /// Makes the next flush take a reader's view of the outbox before it is durable, as the
    /// relay may read sled while the commit thread writes.
    pub fn relay_reads_at_next_flush(&self) {
        self.state().relay_reads_at_flush = true;
    }

    pub fn take_relay_view(&self) -> Option<Vec<(Key, Vec<u8>)>> {
        self.state().relay_view.take()
    }
}

impl LogStore for SimStorage {
    fn write_segment(
        &self,
        event: EventId,
        first_lsn: u64,
        segment: &[u8],
    ) -> Result<(), StorageError> {
        self.state()
            .write(Write::Segment((event, first_lsn), segment.to_vec()))
    }

    fn drop_segments_before(&self, event: EventId, lsn: u64) -> Result<(), StorageError> {
        let mut s = self.state();
        let mut doomed = Vec::new();
        for (key, value) in s.current.log.range((event, 0)..(event, lsn)) {
            if key.1 + u64::from(wal::segment_count(event, value)?) <= lsn {
                doomed.push(*key);
            }
        }
        // One write per segment, as sled removes them one by one: a crash can land between.
        for key in doomed {
            s.write(Write::DropSegment(key))?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        let mut s = self.state();
        s.step()?;
        if std::mem::take(&mut s.relay_reads_at_flush) {
            s.relay_view = Some(
                s.current
                    .outbox
                    .iter()
                    .map(|(k, v)| (*k, v.clone()))
                    .collect(),
            );
        }
        if std::mem::take(&mut s.faults.fail_next_flush) {
            return Err(StorageError::Io("simulated flush failure".into()));
        }
        let pending = std::mem::take(&mut s.pending);
        for write in &pending {
            s.durable.apply(write);
        }
        Ok(())
    }

    fn events(&self) -> Result<Vec<EventId>, StorageError> {
        let s = self.state();
        let ids: BTreeSet<EventId> = s.current.log.keys().map(|k| k.0).collect();
        Ok(ids.into_iter().collect())
    }

    fn segments(&self, event: EventId) -> Result<Vec<(u64, Vec<u8>)>, StorageError> {
        let s = self.state();
        Ok(s.current
            .log
            .range((event, 0)..=(event, u64::MAX))
            .map(|(k, v)| (k.1, v.clone()))
            .collect())
    }

    fn write_outbox(&self, event: EventId, seq: u64, entry: &[u8]) -> Result<(), StorageError> {
        self.state()
            .write(Write::Outbox((event, seq), entry.to_vec()))
    }

    fn remove_outbox(
        &self,
        event: EventId,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, StorageError> {
        let mut s = self.state();
        let doomed: Vec<Key> = s
            .current
            .outbox
            .range((event, *seqs.start())..=(event, *seqs.end()))
            .map(|(k, _)| *k)
            .collect();
        for key in &doomed {
            s.write(Write::RemoveOutbox(*key))?;
        }
        Ok(doomed.len() as u64)
    }

    fn mark_outbox_acked(&self, event: EventId, seq: u64) -> Result<(), StorageError> {
        self.state().write(Write::Acked(event, seq))
    }

    fn outbox_acked(&self, event: EventId) -> Result<u64, StorageError> {
        Ok(self.state().current.acked.get(&event).copied().unwrap_or(0))
    }

    fn outbox_has(&self, event: EventId, seq: u64) -> Result<bool, StorageError> {
        Ok(self.state().current.outbox.contains_key(&(event, seq)))
    }
}

impl SnapshotStore for SimStorage {
    fn write(&self, event: EventId, lsn: u64, state: &[u8]) -> Result<(), StorageError> {
        let mut s = self.state();
        // A crash here is one before the rename: the temporary file is lost, the old snapshot
        // stays.
        s.step()?;
        let mut file = wal::snapshot_header(lsn, state).to_vec();
        file.extend_from_slice(state);
        s.snapshots.insert(event, file);
        Ok(())
    }

    fn read(&self, event: EventId) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        match self.state().snapshots.get(&event) {
            None => Ok(None),
            Some(file) => wal::decode_snapshot(event, file).map(Some),
        }
    }

    fn events(&self) -> Result<Vec<EventId>, StorageError> {
        Ok(self.snapshot_events())
    }
}

// ---------------------------------------------------------------------------------------------
// The driver.
// ---------------------------------------------------------------------------------------------

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub steps: u64,
    /// Print every crash, fault and recovery.
    pub verbose: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    pub steps: u64,
    pub commands: u64,
    pub records: u64,
    pub rounds: u64,
    pub acknowledged: u64,
    pub refused_after_failure: u64,
    pub snapshots: u64,
    pub compactions: u64,
    pub crashes: u64,
    pub crashes_mid_round: u64,
    pub crashes_in_snapshot_write: u64,
    pub crashes_before_compaction: u64,
    pub crashes_in_recovery: u64,
    pub flush_failures: u64,
    pub torn_segments: u64,
    pub damaged_snapshots: u64,
    pub writes_lost: u64,
    pub outbox_published: u64,
    pub recovered_events: u64,
    /// A hash of every choice and outcome: the same seed gives the same value.
    pub trace: u64,
}

impl SimReport {
    pub fn add(&mut self, other: &SimReport) {
        self.steps += other.steps;
        self.commands += other.commands;
        self.records += other.records;
        self.rounds += other.rounds;
        self.acknowledged += other.acknowledged;
        self.refused_after_failure += other.refused_after_failure;
        self.snapshots += other.snapshots;
        self.compactions += other.compactions;
        self.crashes += other.crashes;
        self.crashes_mid_round += other.crashes_mid_round;
        self.crashes_in_snapshot_write += other.crashes_in_snapshot_write;
        self.crashes_before_compaction += other.crashes_before_compaction;
        self.crashes_in_recovery += other.crashes_in_recovery;
        self.flush_failures += other.flush_failures;
        self.torn_segments += other.torn_segments;
        self.damaged_snapshots += other.damaged_snapshots;
        self.writes_lost += other.writes_lost;
        self.outbox_published += other.outbox_published;
        self.recovered_events += other.recovered_events;
        self.trace ^= other.trace;
    }
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} steps, {} commands, {} records ({} acknowledged), {} rounds, {} snapshots, {} \
             compactions; {} crashes ({} mid-round, {} writing a snapshot, {} between snapshot \
             and compaction, {} during recovery), {} unflushed writes lost, {} failed flushes \
             ({} changes refused after them), {} torn segments, {} damaged snapshots; {} outbox \
             entries published; {} events recovered and checked",
            self.steps,
            self.commands,
            self.records,
            self.acknowledged,
            self.rounds,
            self.snapshots,
            self.compactions,
            self.crashes,
            self.crashes_mid_round,
            self.crashes_in_snapshot_write,
            self.crashes_before_compaction,
            self.crashes_in_recovery,
            self.writes_lost,
            self.flush_failures,
            self.refused_after_failure,
            self.torn_segments,
            self.damaged_snapshots,
            self.outbox_published,
            self.recovered_events,
        )
    }
}

/// A broken check: where, and how to run it again.
#[derive(Debug)]
pub struct SimFailure {
    pub seed: u64,
    /// Steps of the run (to replay it, the same).
    pub steps: u64,
    pub step: u64,
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seed, steps) = (self.seed, self.steps);
        write!(
            f,
            "storage simulation seed {seed} failed at step {} of {steps}: {}\nreplay: \
             BOXOFFICE_SIM_SEED={seed} BOXOFFICE_SIM_STEPS={steps} cargo nextest run -p tests \
             storage_sim, or cargo run --release -p tests --bin storage-sim -- --seed {seed} \
             --steps {steps} --runs 1 --verbose",
            self.step, self.message
        )
    }
}

impl std::error::Error for SimFailure {}

/// The seed and step of the run under way, for a panic (an invariant of the inventory broken)
/// to name: see `report_panics`.
static RUNNING_SEED: AtomicU64 = AtomicU64::new(0);
static RUNNING_STEP: AtomicU64 = AtomicU64::new(0);
static RUNNING_STEPS: AtomicU64 = AtomicU64::new(0);

/// Adds the running seed and step to every panic's report (a release build aborts on panic, so
/// the seed must be printed before that).
pub fn report_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let seed = RUNNING_SEED.load(Ordering::Relaxed);
        let steps = RUNNING_STEPS.load(Ordering::Relaxed);
        eprintln!(
            "storage simulation seed {seed} panicked at step {} of {steps}; replay: \
             BOXOFFICE_SIM_SEED={seed} BOXOFFICE_SIM_STEPS={steps} cargo nextest run -p tests \
             storage_sim",
            RUNNING_STEP.load(Ordering::Relaxed),
        );
        previous(info);
    }));
}

/// Ticket ids from the seed; tokens that are a function of the claims, as signatures are.
struct SimIssuer<'a>(&'a mut fastrand::Rng);

impl TicketIssuer for SimIssuer<'_> {
    fn ticket_id(&mut self) -> TicketId {
        TicketId(Uuid::from_u128(self.0.u128(..)))
    }

    fn sign(&self, claims: &TicketClaims) -> String {
        format!("sim.{:016x}", fingerprint_of(&format!("{claims:?}")))
    }
}

fn fingerprint_of(value: &impl Hash) -> u64 {
    // SipHash with fixed keys: the same value hashes the same in every process.
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// What an event holds that an acknowledgement promises: counts, every live hold, every order
/// (status, payment, tickets, refunds), check-in counts, records and outbox entries applied.
pub fn state_fingerprint(inv: &Inventory) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    inv.applied().hash(&mut h);
    inv.outbox_seq().hash(&mut h);
    format!("{:?}", inv.summary()).hash(&mut h);
    let mut holds = inv.hold_ids();
    holds.sort();
    for id in holds {
        format!("{:?}", inv.hold(id, 0)).hash(&mut h);
    }
    let mut orders: Vec<OrderId> = inv.order_list().into_iter().map(|o| o.0).collect();
    orders.sort();
    for id in orders {
        format!("{:?}", inv.order(id)).hash(&mut h);
    }
    format!("{:?}", inv.check_in_stats()).hash(&mut h);
    h.finish()
}

/// Per event, what the simulation knows beside the engine's state.
struct Live {
    inv: Inventory,
    /// Records acknowledged (every waiter of a round that flushed), or proven durable by a
    /// recovery that found them.
    acked: Arc<AtomicU64>,
    /// The state after each lsn from the lowest a recovery may land on: `applied -> fingerprint`.
    history: BTreeMap<u64, u64>,
    /// Outbox entries made live, by seq.
    outbox: BTreeMap<u64, OutboxEntry>,
    last_snapshot_lsn: u64,
    /// A snapshot encoded and not yet written: its lsn and state.
    snapshot_job: Option<(u64, Vec<u8>)>,
    holds: Vec<HoldId>,
    orders: Vec<OrderId>,
}

pub struct Sim {
    rng: fastrand::Rng,
    options: SimOptions,
    storage: SimStorage,
    commit: GroupCommit,
    limits: Limits,
    now_ms: u64,
    snapshot_every_records: u64,
    events: BTreeMap<EventId, Live>,
    /// Outbox entries a reader took as durable and published: they must never change.
    published: BTreeMap<Key, OutboxEntry>,
    /// Set after a round failed: the engine refuses changes until restarted.
    failed: Arc<AtomicU64>,
    acknowledged: Arc<AtomicU64>,
    /// Messages refused because an earlier round failed.
    refused: Arc<AtomicU64>,
    refused_at_restart: u64,
    report: SimReport,
    step: u64,
    trace: std::hash::DefaultHasher,
}

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

const T0_MS: u64 = 1_900_000_000_000;
const MAX_EVENTS: usize = 3;

impl Sim {
    pub fn new(options: SimOptions) -> Sim {
        let mut rng = fastrand::Rng::with_seed(options.seed);
        let snapshot_every_records = rng.u64(4..48);
        Sim {
            rng,
            options,
            storage: SimStorage::default(),
            commit: GroupCommit::without_thread(),
            limits: Limits {
                max_open_holds_per_customer: 3,
                ..Limits::default()
            },
            now_ms: T0_MS,
            snapshot_every_records,
            events: BTreeMap::new(),
            published: BTreeMap::new(),
            failed: Arc::new(AtomicU64::new(0)),
            acknowledged: Arc::new(AtomicU64::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
            refused_at_restart: 0,
            report: SimReport::default(),
            step: 0,
            trace: std::hash::DefaultHasher::new(),
        }
    }

    pub fn storage(&self) -> &SimStorage {
        &self.storage
    }

    fn note(&mut self, what: &str) {
        what.hash(&mut self.trace);
        if self.options.verbose {
            println!("seed {} step {}: {what}", self.options.seed, self.step);
        }
    }

    fn fail(&self, message: String) -> SimFailure {
        SimFailure {
            seed: self.options.seed,
            steps: self.options.steps,
            step: self.step,
            message,
        }
    }

    /// Runs `options.steps` steps, then a last crash and recovery, checking after each crash.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        RUNNING_SEED.store(self.options.seed, Ordering::Relaxed);
        RUNNING_STEPS.store(self.options.steps, Ordering::Relaxed);
        let events = self.rng.usize(1..=MAX_EVENTS);
        for _ in 0..events {
            self.create_event();
        }
        while self.step < self.options.steps {
            self.step += 1;
            RUNNING_STEP.store(self.step, Ordering::Relaxed);
            self.one_step().map_err(|m| self.fail(m))?;
        }
        self.step += 1;
        self.crash_and_recover("end of run")
            .map_err(|m| self.fail(m))?;
        self.report.steps = self.options.steps;
        self.report.acknowledged = self.acknowledged.load(Ordering::Relaxed);
        self.report.refused_after_failure = self.refused.load(Ordering::Relaxed);
        self.report.trace = self.trace.finish();
        Ok(self.report)
    }

    fn one_step(&mut self) -> Check {
        if self.engine_failed() && self.rng.chance(0.3) {
            // A failed flush stops the engine's changes until a restart; restart it.
            return self.crash_and_recover("restart after a failed round");
        }
        let roll = self.rng.u32(0..1000);
        match roll {
            0..=599 => self.command(),
            600..=819 => self.round(),
            820..=879 => self.snapshot_job(),
            880..=919 => self.relay(),
            920..=969 => {
                let ms = if self.rng.chance(0.8) {
                    self.rng.u64(0..5_000)
                } else {
                    self.rng.u64(30_000..1_200_000)
                };
                self.now_ms += ms;
                self.note(&format!("clock +{ms} ms"));
                Ok(())
            }
            970..=979 => {
                if self.events.len() < MAX_EVENTS {
                    self.create_event();
                }
                Ok(())
            }
            980..=987 => {
                let n = self.rng.u32(0..8);
                self.note(&format!("armed: crash at the {n}th next write"));
                self.storage.arm(Faults {
                    crash_after_writes: Some(n),
                    ..Faults::default()
                });
                Ok(())
            }
            988..=992 => {
                self.note("armed: the next flush fails");
                self.storage.arm(Faults {
                    fail_next_flush: true,
                    ..Faults::default()
                });
                Ok(())
            }
            _ => self.crash_and_recover("crash"),
        }
    }

    /// Whether a round failed since the last restart (its waiters heard the error, or later
    /// messages were refused for it): the engine changes nothing more until restarted.
    fn engine_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed) > 0
            || self.refused.load(Ordering::Relaxed) > self.refused_at_restart
    }

    fn spec(&mut self) -> EventSpec {
        let seated = SectionSpec {
            name: "A".into(),
            rows: ["1", "2"]
                .iter()
                .map(|r| RowSpec {
                    name: (*r).into(),
                    seats: (1..=6).map(|n| n.to_string()).collect(),
                })
                .collect(),
        };
        EventSpec {
            id: EventId(Uuid::from_u128(self.rng.u128(..))),
            name: "Simulated show".into(),
            venue: "Hall".into(),
            starts_at_ms: self.now_ms + 30 * 86_400_000,
            status: EventStatus::OnSale,
            currency: Currency::parse("EUR").expect("valid code"),
            customer_limit: Some(8),
            hold_ttl_ms: 60_000,
            payment_ttl_ms: 900_000,
            time_zone: "UTC".into(),
            allow_reentry: self.rng.bool(),
            tiers: vec![
                TierSpec {
                    code: "GA".into(),
                    name: "Standing".into(),
                    price_minor: 2_500,
                    fee_minor: 150,
                    max_per_order: 4,
                    sale_windows: vec![],
                    stock: Stock::General { capacity: 12 },
                },
                TierSpec {
                    code: "SEAT".into(),
                    name: "Seated".into(),
                    price_minor: 4_000,
                    fee_minor: 200,
                    max_per_order: 6,
                    sale_windows: vec![],
                    stock: Stock::Seated {
                        sections: vec![seated],
                    },
                },
            ],
        }
    }

    /// As `Engine::create_event`: the creation record and its outbox entry, queued.
    fn create_event(&mut self) {
        let spec = self.spec();
        let (inv, record) = Inventory::create(spec, &self.limits).expect("a valid spec");
        let id = inv.id();
        self.note(&format!("create event {id}"));
        let mut live = Live {
            inv,
            acked: Arc::new(AtomicU64::new(0)),
            history: BTreeMap::new(),
            outbox: BTreeMap::new(),
            last_snapshot_lsn: 0,
            snapshot_job: None,
            holds: Vec::new(),
            orders: Vec::new(),
        };
        let mut batch = Batch::default();
        batch.keep(&mut live, record, self.now_ms);
        self.events.insert(id, live);
        self.submit(id, batch);
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.rng.usize(..items.len())])
        }
    }

    /// One command on one event, as the actor runs it: due holds and unpaid orders first, then
    /// the decision, then its records queued with a waiter that counts them acknowledged.
    fn command(&mut self) -> Check {
        let ids: Vec<EventId> = self.events.keys().copied().collect();
        let Some(id) = self.pick(&ids) else {
            return Ok(());
        };
        self.report.commands += 1;
        let now = self.now_ms;
        let mut live = self.events.remove(&id).expect("event");
        let mut batch = Batch::default();
        live.inv.prune(now, &self.limits);
        while let Some(r) = live.inv.expire_due(now, 4) {
            batch.keep(&mut live, r, now);
        }
        for _ in 0..4 {
            let Some(r) = live.inv.expire_unpaid(now) else {
                break;
            };
            batch.keep(&mut live, r, now);
        }
        let what = self.decide(&mut live, &mut batch, now);
        self.note(&format!("{id}: {what}"));
        self.events.insert(id, live);
        self.submit(id, batch);
        Ok(())
    }

    fn decide(&mut self, live: &mut Live, batch: &mut Batch, now: u64) -> String {
        let limits = self.limits.clone();
        let customer = format!("c{}", self.rng.u8(0..6));
        match self.rng.u32(0..100) {
            roll @ 0..=37 => {
                let (item, key, what) = match roll {
                    0..=19 => {
                        let quantity = self.rng.u32(1..=4);
                        let key = self
                            .rng
                            .chance(0.3)
                            .then(|| format!("k{}", self.rng.u8(0..3)));
                        let item = ReserveItem::General {
                            tier: "GA".into(),
                            quantity,
                        };
                        (item, key, "reserve GA")
                    }
                    20..=29 => {
                        let quantity = self.rng.u32(1..=3);
                        let item = ReserveItem::BestAvailable {
                            tier: "SEAT".into(),
                            quantity,
                        };
                        (item, None, "reserve best seats")
                    }
                    _ => {
                        let seats = (0..self.rng.usize(1..=2))
                            .map(|_| SeatRef {
                                section: "A".into(),
                                row: self.rng.u8(1..=2).to_string(),
                                number: self.rng.u8(1..=6).to_string(),
                            })
                            .collect();
                        let item = ReserveItem::Seats {
                            tier: "SEAT".into(),
                            seats,
                        };
                        (item, None, "reserve named seats")
                    }
                };
                let req = ReserveRequest {
                    customer,
                    items: vec![item],
                    hold_ttl_ms: None,
                    idempotency_key: key,
                };
                let hold_id = HoldId(Uuid::from_u128(self.rng.u128(..)));
                let d = live.inv.reserve(&req, hold_id, now, &limits);
                if let Ok(d) = &d {
                    live.holds.push(d.answer.id);
                }
                batch.outcome(live, d, now, what)
            }
            38..=45 => {
                let Some(hold_id) = self.pick(&live.holds) else {
                    return "no hold to release".into();
                };
                let req = ReleaseRequest {
                    hold_id,
                    idempotency_key: None,
                };
                let d = live.inv.release(&req, now, &limits);
                batch.outcome(live, d, now, "release")
            }
            46..=61 => {
                let Some(hold_id) = self.pick(&live.holds) else {
                    return "no hold to confirm".into();
                };
                let req = ConfirmRequest {
                    hold_id,
                    payment_ref: format!("cart-{}", self.rng.u32(..)),
                    idempotency_key: None,
                    contact: None,
                };
                let order_id = OrderId(Uuid::from_u128(self.rng.u128(..)));
                let d = live.inv.confirm(&req, order_id, now, &limits);
                if let Ok(d) = &d {
                    live.orders.push(d.answer.id);
                }
                batch.outcome(live, d, now, "confirm")
            }
            62..=65 => {
                let Some(order_id) = self.pick(&live.orders) else {
                    return "no order to cancel".into();
                };
                let req = CancelOrderRequest {
                    order_id,
                    reason: "changed their mind".into(),
                    idempotency_key: None,
                };
                let d = live.inv.cancel_order(&req, now, &limits);
                batch.outcome(live, d, now, "cancel")
            }
            66..=79 => {
                let Some(order_id) = self.pick(&live.orders) else {
                    return "no order to pay".into();
                };
                let Ok(order) = live.inv.order(order_id) else {
                    return "order gone".into();
                };
                let outcome = if self.rng.chance(0.85) {
                    PaymentOutcome::Approved {
                        provider_ref: format!("pay-{}", self.rng.u8(0..4)),
                        amount_minor: order.total_minor - u64::from(self.rng.chance(0.1)),
                        currency: order.currency,
                    }
                } else {
                    PaymentOutcome::Declined {
                        reason: "card declined".into(),
                    }
                };
                let result = PaymentResult {
                    order_id,
                    provider: "test".into(),
                    outcome,
                };
                let d =
                    live.inv
                        .settle_payment(&result, now, &limits, &mut SimIssuer(&mut self.rng));
                batch.outcome(live, d, now, "payment result")
            }
            80..=82 => {
                let Some(order_id) = self.pick(&live.orders) else {
                    return "no order to refund".into();
                };
                let req = RefundOrderRequest {
                    order_id,
                    reason: "event moved".into(),
                    idempotency_key: None,
                };
                let d = live.inv.refund_order(&req, now, &limits);
                batch.outcome(live, d, now, "refund")
            }
            83..=97 => {
                let paid: Vec<OrderId> = live
                    .orders
                    .iter()
                    .copied()
                    .filter(|o| {
                        live.inv
                            .order(*o)
                            .is_ok_and(|o| o.status == OrderStatus::Paid)
                    })
                    .collect();
                let Some(order_id) = self.pick(&paid) else {
                    return "no ticket to scan".into();
                };
                let order = live.inv.order(order_id).expect("paid order");
                let ticket = &order.tickets[self.rng.usize(..order.tickets.len())];
                let scan = Scan {
                    ticket_id: ticket.id,
                    token: ticket.token.clone(),
                    gate: format!("gate-{}", self.rng.u8(0..2)),
                    scan_id: format!("scan-{}", self.rng.u8(0..40)),
                };
                if self.rng.chance(0.3) {
                    let d = live.inv.check_out(&scan, now);
                    batch.outcome(live, d, now, "check out")
                } else {
                    let d = live.inv.check_in(&scan, now);
                    batch.outcome(live, d, now, "check in")
                }
            }
            _ => {
                let status = if self.rng.chance(0.6) {
                    EventStatus::OnSale
                } else {
                    EventStatus::Paused
                };
                let d = live.inv.set_status(status, now);
                batch.outcome(live, d, now, "set status")
            }
        }
    }

    /// Queues a message's records, as `EventState::commit`, with a waiter that counts them
    /// acknowledged once their round flushed; then maybe takes a snapshot, as `maybe_snapshot`.
    fn submit(&mut self, id: EventId, mut batch: Batch) {
        let live = self.events.get_mut(&id).expect("event");
        let applied = live.inv.applied();
        let first_lsn = applied - u64::from(batch.count);
        self.report.records += u64::from(batch.count);
        let (acked, failed, acknowledged) = (
            live.acked.clone(),
            self.failed.clone(),
            self.acknowledged.clone(),
        );
        let count = batch.count;
        let refused = self.refused.clone();
        let waiter: Waiter = Box::new(move |durable| match durable {
            Ok(()) => {
                acked.fetch_max(applied, Ordering::Relaxed);
                acknowledged.fetch_add(u64::from(count), Ordering::Relaxed);
            }
            Err(StorageError::Poisoned(_)) => {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        self.commit.submit(
            id,
            first_lsn,
            batch.count,
            &batch.frames,
            &mut batch.outbox,
            Some(waiter),
        );
        let every = self
            .snapshot_every_records
            .max(live.inv.state_size() as u64);
        if applied - live.last_snapshot_lsn >= every && live.snapshot_job.is_none() {
            let state = postcard::to_allocvec(&live.inv).expect("the inventory serializes");
            live.snapshot_job = Some((applied, state));
            live.last_snapshot_lsn = applied;
        }
    }

    /// One commit round, as the commit thread runs it; a crash armed for one of its writes
    /// stops the process here.
    fn round(&mut self) -> Check {
        let failed_before = self.failed.load(Ordering::Relaxed);
        let relay = self.rng.chance(0.3);
        if relay {
            self.storage.relay_reads_at_next_flush();
        }
        let ran = self.commit.run_round(&self.storage);
        if ran {
            self.report.rounds += 1;
        }
        let failed_now = self.failed.load(Ordering::Relaxed) > failed_before;
        self.note(&format!("round ran {ran} failed {failed_now}"));
        if let Some(view) = self.storage.take_relay_view() {
            self.publish(view)?;
        }
        if self.storage.crashed() {
            self.report.crashes_mid_round += 1;
            return self.crash_and_recover("crash in the middle of a round");
        }
        if failed_now && failed_before == 0 {
            self.report.flush_failures += 1;
        }
        Ok(())
    }

    /// The relay: publishes entries it read that the commit says are durable; they must never
    /// change afterwards.
    fn publish(&mut self, view: Vec<(Key, Vec<u8>)>) -> Check {
        for (key, bytes) in view {
            if self.published.contains_key(&key) || !self.commit.outbox_durable(key.0, key.1) {
                continue;
            }
            let entry = OutboxEntry::decode(&bytes).map_err(|e| format!("outbox entry: {e}"))?;
            self.published.insert(key, entry);
            self.report.outbox_published += 1;
        }
        Ok(())
    }

    /// The relay acknowledges what it published, as the broker's acknowledgements come back.
    fn relay(&mut self) -> Check {
        let ids: Vec<EventId> = self.events.keys().copied().collect();
        let Some(id) = self.pick(&ids) else {
            return Ok(());
        };
        let mut upto = self.storage.outbox_acked(id).map_err(|e| e.to_string())?;
        while self.published.contains_key(&(id, upto + 1)) {
            upto += 1;
        }
        if upto > 0 && self.rng.bool() {
            let seq = self.rng.u64(1..=upto);
            self.note(&format!("{id}: outbox acknowledged up to {seq}"));
            self.commit.submit_outbox_ack(id, seq);
        }
        Ok(())
    }

    /// A snapshot task of the actor: waits until the log holds what the snapshot covers, writes
    /// the file, then queues the compaction.
    fn snapshot_job(&mut self) -> Check {
        let ids: Vec<EventId> = self
            .events
            .iter()
            .filter(|(_, l)| l.snapshot_job.is_some())
            .map(|(id, _)| *id)
            .collect();
        let Some(id) = self.pick(&ids) else {
            return Ok(());
        };
        let (lsn, state) = self
            .events
            .get_mut(&id)
            .and_then(|l| l.snapshot_job.take())
            .expect("a job");
        // `wait_durable`: the rounds under way, then the check. A crash in them ends the task.
        if self.events[&id].acked.load(Ordering::Relaxed) < lsn {
            let crashes = self.report.crashes;
            self.round()?;
            if self.report.crashes > crashes {
                return Ok(());
            }
        }
        let Some(live) = self.events.get(&id) else {
            return Ok(()); // the round crashed and recovery forgot the event
        };
        if live.acked.load(Ordering::Relaxed) < lsn || self.engine_failed() {
            self.note(&format!(
                "{id}: snapshot at {lsn} not written: log not durable"
            ));
            return Ok(());
        }
        if self.rng.chance(0.1) {
            self.storage.arm(Faults {
                crash_after_writes: Some(0),
                ..Faults::default()
            });
        }
        match SnapshotStore::write(&self.storage, id, lsn, &state) {
            Ok(()) => {
                self.report.snapshots += 1;
                self.note(&format!("{id}: snapshot at {lsn}"));
                if self.rng.chance(0.05) {
                    self.report.crashes_before_compaction += 1;
                    return self.crash_and_recover("crash after a snapshot, before its compaction");
                }
                self.commit.submit_compaction(id, lsn);
                self.report.compactions += 1;
                Ok(())
            }
            Err(e) if is_crash(&e) => {
                self.report.crashes_in_snapshot_write += 1;
                self.crash_and_recover("crash while writing a snapshot")
            }
            Err(e) => Err(format!("snapshot write: {e}")),
        }
    }

    /// The process dies; what reached the disk is recovered (crashing again, maybe, during
    /// recovery) and checked against what was acknowledged.
    pub fn crash_and_recover(&mut self, why: &str) -> Check {
        self.report.crashes += 1;
        let tear = self.rng.chance(0.15);
        let crash = self.storage.crash(&mut self.rng, tear);
        self.report.writes_lost += (crash.pending_writes - crash.kept_writes) as u64;
        self.note(&format!(
            "{why}: {} of {} unflushed writes kept{}",
            crash.kept_writes,
            crash.pending_writes,
            crash
                .torn
                .map(|(k, cut)| format!(", segment {}@{} cut by {cut} bytes", k.0, k.1))
                .unwrap_or_default()
        ));
        self.commit = GroupCommit::without_thread();
        self.failed = Arc::new(AtomicU64::new(0));
        self.refused_at_restart = self.refused.load(Ordering::Relaxed);
        let mut torn = crash.torn;
        if torn.is_some() {
            self.report.torn_segments += 1;
        }
        // A snapshot file damaged on the disk, which recovery must refuse.
        let mut damaged: Option<(EventId, Vec<u8>)> = None;
        let with_snapshot = self.storage.snapshot_events();
        if self.rng.chance(0.1)
            && let Some(event) = self.pick(&with_snapshot)
        {
            let original = self.storage.snapshot_file(event).expect("a file");
            let mut bytes = original.clone();
            if self.rng.bool() {
                bytes.truncate(self.rng.usize(0..bytes.len()));
            } else {
                let at = self.rng.usize(..bytes.len());
                bytes[at] ^= 1 << self.rng.u8(0..8);
            }
            self.note(&format!("{event}: snapshot file damaged"));
            self.storage.put_snapshot_file(event, bytes);
            self.report.damaged_snapshots += 1;
            damaged = Some((event, original));
        }
        let mut recovered = None;
        for _attempt in 0..32 {
            if self.rng.chance(0.25) {
                let n = self.rng.u32(0..4);
                self.storage.arm(Faults {
                    crash_after_writes: Some(n),
                    ..Faults::default()
                });
            }
            match self.recover_all() {
                Ok(events) => {
                    recovered = Some(events);
                    break;
                }
                Err(e) if is_crash(&e) => {
                    self.report.crashes_in_recovery += 1;
                    self.report.crashes += 1;
                    let again = self.storage.crash(&mut self.rng, false);
                    self.note(&format!(
                        "crash during recovery: {} of {} unflushed writes kept",
                        again.kept_writes, again.pending_writes
                    ));
                }
                Err(StorageError::Corrupt { event, detail }) => {
                    self.storage.arm(Faults::default());
                    let snapshot_refused = detail.contains("snapshot");
                    if let Some((key, _)) = torn.filter(|(k, _)| k.0 == event && !snapshot_refused)
                    {
                        let named = format!("segment from lsn {}:", key.1);
                        ensure!(
                            detail.starts_with(&named),
                            "torn segment {}@{} refused without naming its lsn: {detail}",
                            key.0,
                            key.1
                        );
                        self.note(&format!("{event}: torn segment refused: {detail}"));
                        // An operator removes the segment; it held nothing acknowledged.
                        self.storage.remove_segment(key);
                        torn = None;
                    } else if let Some((damaged_event, original)) =
                        damaged.take_if(|(e, _)| *e == event && snapshot_refused)
                    {
                        self.note(&format!("{event}: damaged snapshot refused: {detail}"));
                        // An operator puts the good file back.
                        self.storage.put_snapshot_file(damaged_event, original);
                    } else {
                        return Err(format!(
                            "recovery refused {event} though nothing of it was damaged: {detail}"
                        ));
                    }
                }
                Err(e) => return Err(format!("recovery failed: {e}")),
            }
        }
        let recovered = recovered.ok_or("recovery did not finish in 32 attempts")?;
        ensure!(
            torn.is_none(),
            "recovery accepted a torn segment {:?}",
            torn
        );
        ensure!(
            damaged.is_none(),
            "recovery accepted a damaged snapshot of {:?}",
            damaged.map(|d| d.0)
        );
        self.check_recovered(recovered)
    }

    fn recover_all(&self) -> Result<Vec<(Inventory, u64)>, StorageError> {
        let mut ids = LogStore::events(&self.storage)?;
        ids.extend(self.storage.snapshot_events());
        ids.sort();
        ids.dedup();
        let mut events = Vec::new();
        for id in ids {
            let r = recover_event(&self.storage, &self.storage, id, self.now_ms)?;
            events.push((r.inventory, r.snapshot_lsn));
        }
        // Recovery's writes are flushed; nothing armed may linger into the next run.
        self.storage.arm(Faults::default());
        Ok(events)
    }

    /// Every acknowledged change is back, nothing else but records that reached the disk, and
    /// the outbox holds an entry for every change not acknowledged by the broker.
    fn check_recovered(&mut self, recovered: Vec<(Inventory, u64)>) -> Check {
        let mut found = BTreeSet::new();
        for (inv, snapshot_lsn) in recovered {
            let id = inv.id();
            found.insert(id);
            self.report.recovered_events += 1;
            let Some(live) = self.events.get_mut(&id) else {
                return Err(format!("recovered event {id}, which was never created"));
            };
            let n = inv.applied();
            let acked = live.acked.load(Ordering::Relaxed);
            ensure!(
                n >= acked,
                "{id}: recovered {n} records, {acked} were acknowledged"
            );
            let expected = live.history.get(&n).copied();
            let got = state_fingerprint(&inv);
            ensure!(
                expected == Some(got),
                "{id}: the state recovered at lsn {n} is not the state decided at lsn {n} \
                 (acknowledged {acked}, decided up to {})",
                live.inv.applied()
            );
            // The outbox: every entry after the broker's acknowledgement is there, as made.
            let broker_acked = self.storage.outbox_acked(id).map_err(|e| e.to_string())?;
            let stored = self.storage.outbox(id);
            for seq in broker_acked + 1..=inv.outbox_seq() {
                let bytes = stored
                    .get(&seq)
                    .ok_or_else(|| format!("{id}: outbox entry {seq} missing after recovery"))?;
                let entry = OutboxEntry::decode(bytes).map_err(|e| e.to_string())?;
                let made = live
                    .outbox
                    .get(&seq)
                    .ok_or_else(|| format!("{id}: outbox entry {seq} was never made"))?;
                ensure!(
                    same_entry(&entry, made),
                    "{id}: outbox entry {seq} differs from the one made: {entry:?} vs {made:?}"
                );
            }
            for ((event, seq), entry) in self.published.range((id, 0)..=(id, u64::MAX)) {
                ensure!(
                    *seq <= inv.outbox_seq(),
                    "{event}: outbox entry {seq} was published, but its change was lost \
                     (recovered outbox seq {})",
                    inv.outbox_seq()
                );
                let made = live.outbox.get(seq).expect("made");
                ensure!(
                    same_entry(entry, made),
                    "{event}: published outbox entry {seq} is not the change recovered"
                );
            }
            // The disk proves these records now; lost ones leave the history.
            live.acked.store(n, Ordering::Relaxed);
            live.history = live.history.split_off(&n);
            let _lost_branch = live.history.split_off(&(n + 1));
            let _lost_entries = live.outbox.split_off(&(inv.outbox_seq() + 1));
            live.last_snapshot_lsn = snapshot_lsn;
            live.snapshot_job = None;
            live.inv = inv;
        }
        let lost: Vec<EventId> = self
            .events
            .keys()
            .filter(|id| !found.contains(id))
            .copied()
            .collect();
        for id in lost {
            let live = self.events.remove(&id).expect("event");
            let acked = live.acked.load(Ordering::Relaxed);
            ensure!(
                acked == 0,
                "event {id} lost: {acked} records were acknowledged"
            );
            ensure!(
                !self.published.keys().any(|k| k.0 == id),
                "event {id} lost, but outbox entries of it were published"
            );
            self.note(&format!("{id}: creation never acknowledged, not recovered"));
        }
        if self.events.is_empty() {
            self.create_event();
        }
        Ok(())
    }
}

/// An entry as recovery rewrites it: the creation's time is the recovery's (its record has
/// none); everything else is the same.
fn same_entry(a: &OutboxEntry, b: &OutboxEntry) -> bool {
    let time = matches!(a.change, Change::EventCreated { .. }) || a.at_ms == b.at_ms;
    a.event_id == b.event_id && a.seq == b.seq && a.id == b.id && a.change == b.change && time
}

/// The records and outbox entries of one message, as the actor gathers them.
#[derive(Default)]
struct Batch {
    frames: Vec<u8>,
    count: u32,
    outbox: Vec<(u64, Vec<u8>)>,
}

impl Batch {
    fn keep(&mut self, live: &mut Live, record: Record, now: u64) {
        wal::encode_records(std::slice::from_ref(&record), &mut self.frames);
        self.count += 1;
        if let Some(entry) = OutboxEntry::after(&live.inv, &record, now) {
            self.outbox.push((entry.seq, entry.encode()));
            live.outbox.insert(entry.seq, entry);
        }
        live.history
            .insert(live.inv.applied(), state_fingerprint(&live.inv));
    }

    fn outcome<T>(
        &mut self,
        live: &mut Live,
        decided: Result<Decision<T>, Rejection>,
        now: u64,
        what: &str,
    ) -> String {
        match decided {
            Ok(d) => {
                let changed = d.record.is_some();
                if let Some(r) = d.record {
                    self.keep(live, r, now);
                }
                format!("{what}: {}", if changed { "done" } else { "repeated" })
            }
            Err(r) => format!("{what}: {r}"),
        }
    }
}

/// Runs `runs` simulations from `seed` on (seed, seed + 1, ...), or until `deadline`.
pub fn run_many(
    seed: u64,
    runs: u64,
    steps: u64,
    deadline: Option<std::time::Instant>,
    verbose: bool,
    mut progress: impl FnMut(u64, &SimReport),
) -> Result<SimReport, SimFailure> {
    let mut total = SimReport::default();
    for i in 0..runs {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            break;
        }
        let report = Sim::new(SimOptions {
            seed: seed.wrapping_add(i),
            steps,
            verbose,
        })
        .run()?;
        total.add(&report);
        progress(seed.wrapping_add(i), &total);
    }
    Ok(total)
}
