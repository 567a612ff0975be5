//! The engine: opens the log, re-spawns every event actor from disk at start, spawns one per new
//! event, and hands out `EventHandle`s that carry admission control and call timeouts. It holds no
//! inventory itself; every decision is an actor's.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, oneshot, watch};

use crate::actor::{
    ActorContext, AuditReport, EngineStats, EventActor, EventArgs, EventMsg, Reply,
};
use crate::commit::{CommitStats, GroupCommit};
use crate::error::Error;
use crate::inventory::{
    Admission, CancelOrderRequest, CheckInStats, ConfirmRequest, EventId, EventSpec, EventStatus,
    EventSummary, Exit, Hold, HoldId, Inventory, Limits, Order, OrderId, PaymentResult,
    RefundOrderRequest, Rejection, ReleaseRequest, ReserveRequest, Scan, ScanOutcome,
    SeatAvailability, Settlement,
};
use crate::memory::StateMemory;
use crate::outbox::OutboxEntry;
use crate::tickets::TicketKeys;
use crate::wal::{
    self, LogStore, SledLog, SnapshotDir, SnapshotStore, StorageError, encode_records,
};

/// How long an overloaded caller is told to wait: about two group-commit rounds.
pub const OVERLOAD_RETRY_AFTER_MS: u64 = 5;

/// What `Engine::recover` found on disk.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub events: usize,
    pub records_replayed_max: u64,
    pub elapsed: Duration,
}

/// One event as recovery brought it back from disk.
#[derive(Debug)]
pub struct RecoveredEvent {
    pub inventory: Inventory,
    /// The lsn its snapshot covered; 0 without one.
    pub snapshot_lsn: u64,
    /// Outbox entries written again (see below).
    pub outbox_rewritten: u64,
}

/// Brings one event back from `log` and `snapshots`: its snapshot, if any, then the records
/// after it (`wal::recover`). An outbox entry that a crash kept from its tree while its record
/// reached the log is written again, stamped `now_ms` if it is the event's creation (its record
/// carries no time); acknowledged entries are not. Entries after the last change the log holds
/// are removed. Both are flushed before this returns. Recovery only makes the outbox match what
/// the log proves, so a crash in the middle of it leaves a disk that the next recovery reads the
/// same way.
pub fn recover_event(
    log: &dyn LogStore,
    snapshots: &dyn SnapshotStore,
    id: EventId,
    now_ms: u64,
) -> Result<RecoveredEvent, StorageError> {
    let snapshot = snapshots.read(id)?;
    let snapshot_lsn = snapshot.as_ref().map_or(0, |(lsn, _)| *lsn);
    let acked = log.outbox_acked(id)?;
    let mut rewritten = 0u64;
    let inventory = wal::recover(id, snapshot, log.segments(id)?, |inv, record| {
        let seq = inv.outbox_seq();
        if !OutboxEntry::made_by(record) || seq <= acked || log.outbox_has(id, seq)? {
            return Ok(());
        }
        if let Some(entry) = OutboxEntry::after(inv, record, now_ms) {
            log.write_outbox(id, entry.seq, &entry.encode())?;
            rewritten += 1;
        }
        Ok(())
    })?;
    // Entries after the last change the log holds describe changes it lost, never acknowledged
    // (a store that kept an entry but not its record, or a segment an operator removed): they
    // must not be published, and their seqs are the next changes'.
    let stale = log.remove_outbox(id, inventory.outbox_seq() + 1..=u64::MAX)?;
    if rewritten > 0 || stale > 0 {
        log.flush()?;
    }
    if rewritten > 0 {
        tracing::warn!(event = %id, rewritten, "outbox entries written again");
    }
    if stale > 0 {
        tracing::warn!(event = %id, stale, "outbox entries of changes not in the log removed");
    }
    Ok(RecoveredEvent {
        inventory,
        snapshot_lsn,
        outbox_rewritten: rewritten,
    })
}

/// How long a caller is told to wait while the engine recovers.
pub const RECOVERING_RETRY_AFTER_MS: u64 = 500;

/// The name of the lock file in the data directory: held (flock) for as long as an engine uses
/// the directory, so a second process on the same directory is told so at once.
const LOCK_FILE: &str = "lock";

pub struct Engine {
    config: config::Config,
    context: Arc<ActorContext>,
    events: RwLock<HashMap<EventId, EventHandle>>,
    /// Serializes event creation, which is rare; requests never take it.
    creating: Mutex<()>,
    /// False until `recover` has brought every event back: until then every call is refused
    /// with `Recovering`, so nobody acts on a partial engine.
    ready: AtomicBool,
    recovery: std::sync::Mutex<RecoveryReport>,
    /// The log as opened, for recovery, which takes it (sled handles are not `Sync`).
    log: std::sync::Mutex<Option<SledLog>>,
    /// A handle for the relay's reads of the outbox; dropped at shutdown, so that the database
    /// closes with the commit thread's handle.
    outbox: std::sync::Mutex<Option<SledLog>>,
    /// Outbox entries on disk when the engine opened.
    outbox_at_start: u64,
    /// Outbox entries that recovery wrote again (`recover`).
    outbox_rewritten: AtomicU64,
    snapshots: Arc<SnapshotDir>,
    /// The data directory's lock, released at shutdown.
    lock: std::sync::Mutex<Option<File>>,
}

/// A caller's way to one event actor. Cheap to clone.
#[derive(Clone)]
pub struct EventHandle {
    id: EventId,
    actor: ActorRef<EventMsg>,
    permits: Arc<Semaphore>,
    max_in_flight: u32,
    timeout: Duration,
    spec: Arc<EventSpec>,
    changes: watch::Receiver<u64>,
}

/// Takes the data directory's lock, or says which process-level problem stops it.
fn lock_data_dir(data_dir: &Path) -> Result<File, StorageError> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        StorageError::Io(format!(
            "cannot create the data directory {} (storage.data_dir): {e}",
            data_dir.display()
        ))
    })?;
    let path = data_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::Io(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::Io(format!(
            "the data directory {} is in use by another process (it holds {}); stop that \
             process or set another storage.data_dir",
            data_dir.display(),
            path.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StorageError::Io(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

impl Engine {
    /// Opens (or creates) the log in `config.storage.data_dir` and brings every event back.
    pub async fn open(config: &config::Config) -> Result<Engine, Error> {
        let engine = Engine::new(config)?;
        engine.recover().await?;
        Ok(engine)
    }

    /// Locks the data directory and opens the log, without recovering any event: every call is
    /// refused with `Recovering` until `recover` has run.
    pub fn new(config: &config::Config) -> Result<Engine, Error> {
        let data_dir = &config.storage.data_dir;
        let lock = lock_data_dir(data_dir)?;
        wal::check_format(data_dir)?;
        let tickets = TicketKeys::open(&config.ticket_keys_dir())
            .map_err(|e| StorageError::Io(e.to_string()))?;
        let log = SledLog::open(&wal::log_dir(data_dir), config.storage.cache_capacity_mib)?;
        let snapshots = Arc::new(SnapshotDir::open(&wal::snapshot_dir(data_dir))?);
        let commit = Arc::new(GroupCommit::start(Box::new(log.clone())));
        let outbox_at_start = log.outbox_len()? as u64;
        let context = Arc::new(ActorContext {
            commit,
            snapshots: snapshots.clone(),
            stats: EngineStats::default(),
            limits: Limits::from(config),
            snapshot_every_records: config.storage.snapshot_every_records,
            max_holds_per_expiry_record: config.engine.max_holds_per_expiry_record as usize,
            memory: StateMemory::new(config.engine.max_state_mib << 20),
            tickets: Arc::new(tickets),
        });
        Ok(Engine {
            config: config.clone(),
            context,
            events: RwLock::new(HashMap::new()),
            creating: Mutex::new(()),
            ready: AtomicBool::new(false),
            recovery: std::sync::Mutex::new(RecoveryReport::default()),
            outbox: std::sync::Mutex::new(Some(log.clone())),
            outbox_at_start,
            outbox_rewritten: AtomicU64::new(0),
            log: std::sync::Mutex::new(Some(log)),
            snapshots,
            lock: std::sync::Mutex::new(Some(lock)),
        })
    }

    /// Brings every event on disk back: `engine.recovery_parallelism` events at a time, each
    /// read (snapshot, then the records after it) on a blocking thread with its own log handle,
    /// then its actor spawned. Then the engine takes calls.
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
        let started = Instant::now();
        let log = self
            .log
            .lock()
            .expect("log lock")
            .take()
            .ok_or_else(|| StorageError::Io("the engine was recovered already".into()))?;
        let mut ids = log.events()?;
        ids.extend(self.snapshots.events()?);
        ids.sort();
        ids.dedup();
        let count = ids.len();
        let queue = Arc::new(std::sync::Mutex::new(ids));
        let workers = (self.config.engine.recovery_parallelism as usize).clamp(1, count.max(1));
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<(Inventory, u64, u64), Error>>(workers);
        for _ in 0..workers {
            let (queue, tx) = (queue.clone(), tx.clone());
            let (log, snapshots) = (log.clone(), self.snapshots.clone());
            tokio::task::spawn_blocking(move || {
                loop {
                    let Some(id) = queue.lock().expect("recovery queue lock").pop() else {
                        return;
                    };
                    let read =
                        recover_event(&log, snapshots.as_ref(), id, crate::actor::wall_clock_ms())
                            .map(|r| (r.inventory, r.snapshot_lsn, r.outbox_rewritten));
                    let failed = read.is_err();
                    if tx.blocking_send(read.map_err(Error::from)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut replayed_max = 0;
        let mut recovered = 0;
        while let Some(read) = rx.recv().await {
            let (inventory, snapshot_lsn, rewritten) = read?;
            self.outbox_rewritten
                .fetch_add(rewritten, Ordering::Relaxed);
            replayed_max = replayed_max.max(inventory.applied() - snapshot_lsn);
            self.spawn(inventory, snapshot_lsn).await?;
            recovered += 1;
        }
        if recovered != count {
            return Err(Error::Storage(StorageError::Io(format!(
                "recovered {recovered} of {count} events"
            ))));
        }
        let report = RecoveryReport {
            events: count,
            records_replayed_max: replayed_max,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            events = count,
            records_replayed_max = replayed_max,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "engine recovered"
        );
        *self.recovery.lock().expect("recovery lock") = report.clone();
        self.ready.store(true, Ordering::Release);
        Ok(report)
    }

    /// `Ok` once every event is back and the engine takes calls.
    pub fn ready(&self) -> Result<(), Error> {
        if self.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::Recovering {
                retry_after_ms: RECOVERING_RETRY_AFTER_MS,
            })
        }
    }

    pub fn recovery(&self) -> RecoveryReport {
        self.recovery.lock().expect("recovery lock").clone()
    }

    pub fn stats(&self) -> &EngineStats {
        &self.context.stats
    }

    /// Up to `limit` outbox entries not yet acknowledged, after `after` (event, seq): each event's
    /// in seq order (see `outbox`).
    pub fn outbox_after(
        &self,
        after: Option<(EventId, u64)>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        let raw = match self.outbox.lock().expect("outbox lock").as_ref() {
            Some(log) => log.outbox_after(after, limit)?,
            None => return Err(Error::ShuttingDown),
        };
        // Read first, then asked: an entry of a round not yet flushed is left for a later read.
        let commit = &self.context.commit;
        raw.into_iter()
            .filter(|(event, seq, _)| commit.outbox_durable(*event, *seq))
            .map(|(event, seq, bytes)| {
                OutboxEntry::decode(&bytes).map_err(|e| {
                    Error::Storage(StorageError::Corrupt {
                        event,
                        detail: format!("outbox entry {seq}: {e}"),
                    })
                })
            })
            .collect()
    }

    /// Removes the outbox entries of `event` up to `seq`, which the broker acknowledged; durable
    /// with the next commit round.
    pub fn ack_outbox(&self, event: EventId, seq: u64) {
        self.context.commit.submit_outbox_ack(event, seq);
    }

    /// Outbox entries waiting for the broker's acknowledgement.
    pub fn outbox_pending(&self) -> u64 {
        let stats = self.context.commit.stats();
        (self.outbox_at_start
            + self.outbox_rewritten.load(Ordering::Relaxed)
            + stats.outbox_written.load(Ordering::Relaxed))
        .saturating_sub(stats.outbox_removed.load(Ordering::Relaxed))
    }

    /// The write that failed, if one has: the engine then refuses every change until it is
    /// restarted, and answers reads from what the disk holds.
    pub fn storage_failure(&self) -> Option<StorageError> {
        self.context.commit.failure()
    }

    /// The keys that sign tickets; their public halves are for scanners.
    pub fn ticket_keys(&self) -> &TicketKeys {
        &self.context.tickets
    }

    /// Every event's state in memory, as accounted against `engine.max_state_mib`.
    pub fn memory(&self) -> &StateMemory {
        &self.context.memory
    }

    pub fn commit_stats(&self) -> &CommitStats {
        self.context.commit.stats()
    }

    async fn spawn(&self, inventory: Inventory, snapshot_lsn: u64) -> Result<EventHandle, Error> {
        let id = inventory.id();
        let max_in_flight = self.config.engine.max_in_flight_per_event;
        let spec = Arc::new(inventory.spec().clone());
        let (changes_tx, changes) = watch::channel(inventory.applied());
        let permits = Arc::new(Semaphore::new(max_in_flight as usize));
        let (actor, _join) = Actor::spawn(
            None,
            EventActor,
            EventArgs {
                inventory,
                snapshot_lsn,
                context: self.context.clone(),
                changes: changes_tx,
            },
        )
        .await
        .map_err(|e| Error::ActorStart {
            event: id,
            reason: e.to_string(),
        })?;
        let handle = EventHandle {
            id,
            actor,
            permits,
            max_in_flight,
            timeout: Duration::from_millis(self.config.engine.call_timeout_ms),
            spec,
            changes,
        };
        self.events
            .write()
            .expect("events lock")
            .insert(id, handle.clone());
        Ok(handle)
    }

    /// Creates an event: validated, logged and durable before its actor starts taking requests.
    pub async fn create_event(&self, spec: EventSpec) -> Result<EventSummary, Error> {
        self.ready()?;
        let _one_at_a_time = self.creating.lock().await;
        let id = spec.id;
        {
            let events = self.events.read().expect("events lock");
            if events.contains_key(&id) {
                return Err(Rejection::EventExists.into());
            }
            if events.len() >= self.config.engine.max_events as usize {
                return Err(Error::TooManyEvents(self.config.engine.max_events));
            }
        }
        let (inventory, record) = Inventory::create(spec, &self.context.limits)?;
        let memory = &self.context.memory;
        if !memory.has_room(inventory.memory_bytes()) {
            return Err(Error::MemoryLimit {
                used_mib: memory.used_bytes() >> 20,
                limit_mib: memory.limit_bytes() >> 20,
            });
        }
        let mut frames = Vec::new();
        encode_records(std::slice::from_ref(&record), &mut frames);
        let created = OutboxEntry::after(&inventory, &record, crate::actor::wall_clock_ms())
            .expect("a creation makes an outbox entry");
        let (tx, rx) = oneshot::channel::<Result<(), wal::StorageError>>();
        self.context.commit.submit(
            id,
            0,
            1,
            &frames,
            &mut vec![(created.seq, created.encode())],
            Some(Box::new(move |durable: Result<(), wal::StorageError>| {
                let _ = tx.send(durable);
            }) as crate::commit::Waiter),
        );
        rx.await.map_err(|_| Error::ShuttingDown)??;
        let summary = inventory.summary();
        self.spawn(inventory, 0).await?;
        Ok(summary)
    }

    pub fn event(&self, id: EventId) -> Result<EventHandle, Error> {
        self.ready()?;
        self.events
            .read()
            .expect("events lock")
            .get(&id)
            .cloned()
            .ok_or(Error::EventNotFound(id))
    }

    pub fn event_ids(&self) -> Vec<EventId> {
        let mut ids: Vec<EventId> = self
            .events
            .read()
            .expect("events lock")
            .keys()
            .copied()
            .collect();
        ids.sort();
        ids
    }

    /// Stops taking requests, lets every actor finish its mailbox, writes and flushes what is
    /// queued, and closes the log.
    pub async fn shutdown(&self) {
        let handles: Vec<EventHandle> = self
            .events
            .write()
            .expect("events lock")
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in &handles {
            let _ = h.actor.drain_and_wait(Some(h.timeout)).await;
        }
        // Writes and flushes every queued round before the thread ends.
        self.context.commit.close();
        let outbox = self.outbox.lock().expect("outbox lock").take();
        if self.storage_failure().is_some() {
            // Dropping a sled handle flushes, which after a failed flush waits forever.
            std::mem::forget(outbox);
        } else {
            drop(outbox);
        }
        drop(self.lock.lock().expect("lock file lock").take());
    }
}

impl EventHandle {
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The event as it was created. Its current status is in `summary()`.
    pub fn spec(&self) -> &EventSpec {
        &self.spec
    }

    /// A receiver that sees a new value (the event's record count) after every change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.max_in_flight - self.permits.available_permits() as u32
    }

    fn admit(&self, work: u32) -> Result<OwnedSemaphorePermit, Error> {
        if work > self.max_in_flight {
            return Err(Rejection::Invalid(format!(
                "a batch of {work} requests is over the event's in-flight limit of {}",
                self.max_in_flight
            ))
            .into());
        }
        self.permits
            .clone()
            .try_acquire_many_owned(work)
            .map_err(|_| Error::Overloaded {
                event: self.id,
                limit: self.max_in_flight,
                retry_after_ms: OVERLOAD_RETRY_AFTER_MS,
            })
    }

    async fn ask<T: Send + 'static>(
        &self,
        work: u32,
        build: impl FnOnce(OwnedSemaphorePermit, Reply<T>) -> EventMsg,
    ) -> Result<T, Error> {
        let permit = self.admit(work)?;
        match self
            .actor
            .call(|reply| build(permit, reply), Some(self.timeout))
            .await
        {
            Ok(CallResult::Success(answer)) => answer,
            Ok(CallResult::Timeout) => Err(Error::Timeout {
                event: self.id,
                timeout_ms: self.timeout.as_millis() as u64,
            }),
            Ok(CallResult::SenderError) | Err(_) => Err(Error::ShuttingDown),
        }
    }

    pub async fn reserve(&self, request: ReserveRequest) -> Result<Hold, Error> {
        let mut answers = self.reserve_many(vec![request]).await?;
        answers.pop().expect("one answer per request")
    }

    /// Decides many reservations in one actor turn and one commit; each gets its own answer, in
    /// order. The batch counts as that many requests in flight.
    pub async fn reserve_many(
        &self,
        requests: Vec<ReserveRequest>,
    ) -> Result<Vec<Result<Hold, Error>>, Error> {
        let work = requests.len() as u32;
        self.ask(work, |permit, reply| EventMsg::Reserve {
            requests,
            permit,
            reply,
        })
        .await
    }

    pub async fn confirm(&self, request: ConfirmRequest) -> Result<Order, Error> {
        self.ask(1, |permit, reply| EventMsg::Confirm {
            request,
            permit,
            reply,
        })
        .await
    }

    pub async fn release(&self, request: ReleaseRequest) -> Result<Hold, Error> {
        self.ask(1, |permit, reply| EventMsg::Release {
            request,
            permit,
            reply,
        })
        .await
    }

    pub async fn cancel_order(&self, request: CancelOrderRequest) -> Result<Order, Error> {
        self.ask(1, |permit, reply| EventMsg::CancelOrder {
            request,
            permit,
            reply,
        })
        .await
    }

    /// Applies a payment result reported by the payment adapter; safe to repeat.
    pub async fn settle_payment(
        &self,
        result: PaymentResult,
    ) -> Result<(Settlement, Order), Error> {
        self.ask(1, |permit, reply| EventMsg::SettlePayment {
            result,
            permit,
            reply,
        })
        .await
    }

    pub async fn refund_order(&self, request: RefundOrderRequest) -> Result<Order, Error> {
        self.ask(1, |permit, reply| EventMsg::RefundOrder {
            request,
            permit,
            reply,
        })
        .await
    }

    pub async fn set_status(&self, status: EventStatus) -> Result<EventStatus, Error> {
        self.ask(1, |permit, reply| EventMsg::SetStatus {
            status,
            permit,
            reply,
        })
        .await
    }

    /// Lets a ticket in at a gate, once: the admission, and whether this scan made it (`false`
    /// for a retry of the scan that did).
    pub async fn check_in(&self, scan: Scan) -> Result<(Admission, bool), Error> {
        self.ask(1, |permit, reply| EventMsg::CheckIn {
            scan,
            permit,
            reply,
        })
        .await
    }

    /// Lets a ticket out, when the event allows re-entry: the exit, and whether this scan made it
    /// (`false` for a retry of the scan that did).
    pub async fn check_out(&self, scan: Scan) -> Result<(Exit, bool), Error> {
        self.ask(1, |permit, reply| EventMsg::CheckOut {
            scan,
            permit,
            reply,
        })
        .await
    }

    /// Records scans made offline, each at the time given; one answer per scan.
    pub async fn upload_scans(
        &self,
        scans: Vec<(Scan, u64)>,
    ) -> Result<Vec<Result<ScanOutcome, Rejection>>, Error> {
        let work = scans.len().max(1) as u32;
        self.ask(work, |permit, reply| EventMsg::UploadScans {
            scans,
            permit,
            reply,
        })
        .await
    }

    pub async fn check_in_stats(&self) -> Result<CheckInStats, Error> {
        self.ask(1, |permit, reply| EventMsg::CheckInStats { permit, reply })
            .await
    }

    pub async fn hold(&self, hold_id: HoldId) -> Result<Hold, Error> {
        self.ask(1, |permit, reply| EventMsg::GetHold {
            hold_id,
            permit,
            reply,
        })
        .await
    }

    pub async fn order(&self, order_id: OrderId) -> Result<Order, Error> {
        self.ask(1, |permit, reply| EventMsg::GetOrder {
            order_id,
            permit,
            reply,
        })
        .await
    }

    pub async fn summary(&self) -> Result<EventSummary, Error> {
        self.ask(1, |permit, reply| EventMsg::Summary { permit, reply })
            .await
    }

    pub async fn seats(&self, tier: Option<String>) -> Result<Vec<SeatAvailability>, Error> {
        self.ask(1, |permit, reply| EventMsg::Seats {
            tier,
            permit,
            reply,
        })
        .await
    }

    /// Runs the full invariant check inside the actor and reports what it holds.
    pub async fn audit(&self) -> Result<AuditReport, Error> {
        self.ask(1, |permit, reply| EventMsg::Audit { permit, reply })
            .await
    }
}
