//! The engine: opens the log, re-spawns every event actor from disk at start, spawns one per new
//! event, and hands out `EventHandle`s that carry admission control and call timeouts. It holds no
//! inventory itself; every decision is an actor's.

use std::collections::HashMap;
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
    CancelOrderRequest, ConfirmRequest, EventId, EventSpec, EventStatus, EventSummary, Hold,
    HoldId, Inventory, Limits, Order, OrderId, Rejection, ReleaseRequest, ReserveRequest,
    SeatAvailability,
};
use crate::wal::{self, LogStore, SledLog, SnapshotDir, encode_records};

/// How long an overloaded caller is told to wait: about two group-commit rounds.
pub const OVERLOAD_RETRY_AFTER_MS: u64 = 5;

/// What `Engine::open` found on disk.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    pub events: usize,
    pub records_replayed_max: u64,
    pub elapsed: Duration,
}

pub struct Engine {
    config: config::Config,
    context: Arc<ActorContext>,
    events: RwLock<HashMap<EventId, EventHandle>>,
    /// Serializes event creation, which is rare; requests never take it.
    creating: Mutex<()>,
    recovery: RecoveryReport,
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

impl Engine {
    /// Opens (or creates) the log in `config.storage.data_dir` and brings every event back.
    pub async fn open(config: &config::Config) -> Result<Engine, Error> {
        let started = Instant::now();
        let data_dir = &config.storage.data_dir;
        let log = SledLog::open(&wal::log_dir(data_dir), config.storage.cache_capacity_mib)?;
        let snapshots = Arc::new(SnapshotDir::open(&wal::snapshot_dir(data_dir))?);
        let commit = Arc::new(GroupCommit::start(Box::new(log.clone())));
        let context = Arc::new(ActorContext {
            commit,
            snapshots: snapshots.clone(),
            stats: EngineStats::default(),
            limits: Limits::from(config),
            snapshot_every_records: config.storage.snapshot_every_records,
            max_holds_per_expiry_record: config.engine.max_holds_per_expiry_record as usize,
        });
        let mut engine = Engine {
            config: config.clone(),
            context,
            events: RwLock::new(HashMap::new()),
            creating: Mutex::new(()),
            recovery: RecoveryReport {
                events: 0,
                records_replayed_max: 0,
                elapsed: Duration::ZERO,
            },
        };
        let mut ids = log.events()?;
        ids.extend(snapshots.events()?);
        ids.sort();
        ids.dedup();
        let mut replayed_max = 0;
        for id in &ids {
            let snapshot = snapshots.read(*id)?;
            let snapshot_lsn = snapshot.as_ref().map_or(0, |(lsn, _)| *lsn);
            let inventory = wal::recover(*id, snapshot, log.segments(*id)?)?;
            replayed_max = replayed_max.max(inventory.applied() - snapshot_lsn);
            engine.spawn(inventory, snapshot_lsn).await?;
        }
        engine.recovery = RecoveryReport {
            events: ids.len(),
            records_replayed_max: replayed_max,
            elapsed: started.elapsed(),
        };
        tracing::info!(
            events = ids.len(),
            records_replayed_max = replayed_max,
            elapsed_ms = engine.recovery.elapsed.as_millis() as u64,
            "engine recovered"
        );
        Ok(engine)
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn stats(&self) -> &EngineStats {
        &self.context.stats
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
                permits: permits.clone(),
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
        let mut frames = Vec::new();
        encode_records(std::slice::from_ref(&record), &mut frames);
        let (tx, rx) = oneshot::channel::<Result<(), wal::StorageError>>();
        self.context.commit.submit(
            id,
            0,
            1,
            &frames,
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

    pub async fn set_status(&self, status: EventStatus) -> Result<EventStatus, Error> {
        self.ask(1, |permit, reply| EventMsg::SetStatus {
            status,
            permit,
            reply,
        })
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
