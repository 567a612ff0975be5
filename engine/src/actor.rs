//! The event actor: a thin ractor shell around one event's `Inventory`. It takes the clock reading
//! and fresh ids, lets the inventory decide, hands the records to the group commit and lets the
//! commit thread answer once they are durable. It never writes to disk and never answers a change
//! before the flush that covers it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{OwnedSemaphorePermit, watch};
use uuid::Uuid;

use crate::commit::{GroupCommit, Waiter};
use crate::error::Error;
use crate::inventory::{
    Admission, CancelOrderRequest, CheckInStats, ConfirmRequest, Decision, EventStatus,
    EventSummary, Exit, Hold, HoldId, Inventory, Limits, Order, OrderId, OrderStatus,
    PaymentResult, Record, RefundOrderRequest, Rejection, ReleaseRequest, ReserveRequest, Scan,
    ScanOutcome, SeatAvailability, Settlement, TicketClaims, TicketId, TicketIssuer,
};
use crate::memory::StateMemory;
use crate::outbox::OutboxEntry;
use crate::tickets::TicketKeys;
use crate::wal::{SnapshotDir, StorageError, encode_records};

/// Counters every actor adds to, for metrics and tests.
#[derive(Default, Debug)]
pub struct EngineStats {
    /// Holds released because their deadline passed.
    pub holds_expired: AtomicU64,
    /// Orders cancelled because no payment came before their payment deadline.
    pub orders_unpaid_cancelled: AtomicU64,
}

/// What every event actor shares: the commit pipeline, the decision limits, the counters.
pub struct ActorContext {
    pub commit: Arc<GroupCommit>,
    pub snapshots: Arc<SnapshotDir>,
    pub stats: EngineStats,
    pub limits: Limits,
    pub snapshot_every_records: u64,
    pub max_holds_per_expiry_record: usize,
    /// Every event's state in memory, against `engine.max_state_mib`.
    pub memory: StateMemory,
    /// The keys that sign the tickets of paid orders.
    pub tickets: Arc<TicketKeys>,
}

/// Ticket ids drawn as UUIDv7 and tokens signed with the engine's active key.
struct Issuer<'a>(&'a TicketKeys);

impl TicketIssuer for Issuer<'_> {
    fn ticket_id(&mut self) -> TicketId {
        TicketId(Uuid::now_v7())
    }

    fn sign(&self, claims: &TicketClaims) -> String {
        self.0.sign(claims)
    }
}

/// Reply to a change: sent by the commit thread once the change is durable.
pub type Reply<T> = RpcReplyPort<Result<T, Error>>;

/// A consistency report for audits: the event's counts plus every live hold and order id, taken
/// after a full invariant check.
#[derive(Debug, Clone)]
pub struct AuditReport {
    pub summary: EventSummary,
    pub hold_ids: Vec<HoldId>,
    /// Every order: id, the hold it came from, its status.
    pub orders: Vec<(OrderId, HoldId, OrderStatus)>,
    pub applied_records: u64,
}

/// The closed set of messages. Every request carries an admission permit, released when it is
/// answered, so at most `max_in_flight_per_event` requests sit in the mailbox or the commit queue.
pub enum EventMsg {
    Reserve {
        requests: Vec<ReserveRequest>,
        permit: OwnedSemaphorePermit,
        reply: Reply<Vec<Result<Hold, Error>>>,
    },
    Confirm {
        request: ConfirmRequest,
        permit: OwnedSemaphorePermit,
        reply: Reply<Order>,
    },
    Release {
        request: ReleaseRequest,
        permit: OwnedSemaphorePermit,
        reply: Reply<Hold>,
    },
    CancelOrder {
        request: CancelOrderRequest,
        permit: OwnedSemaphorePermit,
        reply: Reply<Order>,
    },
    SettlePayment {
        result: PaymentResult,
        permit: OwnedSemaphorePermit,
        reply: Reply<(Settlement, Order)>,
    },
    RefundOrder {
        request: RefundOrderRequest,
        permit: OwnedSemaphorePermit,
        reply: Reply<Order>,
    },
    SetStatus {
        status: EventStatus,
        permit: OwnedSemaphorePermit,
        reply: Reply<EventStatus>,
    },
    CheckIn {
        scan: Scan,
        permit: OwnedSemaphorePermit,
        reply: Reply<(Admission, bool)>,
    },
    CheckOut {
        scan: Scan,
        permit: OwnedSemaphorePermit,
        reply: Reply<(Exit, bool)>,
    },
    UploadScans {
        scans: Vec<(Scan, u64)>,
        permit: OwnedSemaphorePermit,
        reply: Reply<Vec<Result<ScanOutcome, Rejection>>>,
    },
    CheckInStats {
        permit: OwnedSemaphorePermit,
        reply: Reply<CheckInStats>,
    },
    GetHold {
        hold_id: HoldId,
        permit: OwnedSemaphorePermit,
        reply: Reply<Hold>,
    },
    GetOrder {
        order_id: OrderId,
        permit: OwnedSemaphorePermit,
        reply: Reply<Order>,
    },
    Summary {
        permit: OwnedSemaphorePermit,
        reply: Reply<EventSummary>,
    },
    Seats {
        tier: Option<String>,
        permit: OwnedSemaphorePermit,
        reply: Reply<Vec<SeatAvailability>>,
    },
    Audit {
        permit: OwnedSemaphorePermit,
        reply: Reply<AuditReport>,
    },
    /// The expiry timer of generation `generation` fired.
    Expire { generation: u64 },
}

pub struct EventActor;

pub struct EventArgs {
    pub inventory: Inventory,
    /// Records covered by the event's latest durable snapshot; the next snapshot is due
    /// `snapshot_every_records` after it, so a long replay at start is followed by a snapshot.
    pub snapshot_lsn: u64,
    pub context: Arc<ActorContext>,
    /// Where the actor publishes the number of records applied, after every message that
    /// changed something; watchers read the new state through the actor, behind the change.
    pub changes: watch::Sender<u64>,
}

pub struct EventState {
    inventory: Inventory,
    context: Arc<ActorContext>,
    /// Records decided by the message in hand, encoded in lsn order, not yet queued for commit.
    frames: Vec<u8>,
    frame_count: u32,
    /// The outbox entries of `frames`' records, `(seq, encoded)`.
    outbox: Vec<(u64, Vec<u8>)>,
    last_snapshot_lsn: u64,
    /// The snapshot being written off the actor, if any.
    snapshot_task: Option<tokio::task::JoinHandle<()>>,
    changes: watch::Sender<u64>,
    /// Deadline the armed timer fires at, and its generation; older timers are ignored.
    timer_at_ms: Option<u64>,
    timer_generation: u64,
    last_now_ms: u64,
    /// This event's share of `context.memory` as last reported.
    memory_reported: u64,
}

pub fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EventState {
    /// The decision time: the wall clock, never earlier than a previous decision of this event.
    fn now_ms(&mut self) -> u64 {
        self.last_now_ms = self.last_now_ms.max(wall_clock_ms());
        self.last_now_ms
    }

    /// Every command starts here: forget old keys, release holds now due, cancel orders unpaid at
    /// their deadline. So a request never sees a hold or an unpaid order past its deadline,
    /// however busy the mailbox is. Unpaid orders are cancelled at most
    /// `max_holds_per_expiry_record` per message (a record each); the timer, armed for a time
    /// already past, takes the rest next.
    fn begin(&mut self) -> u64 {
        let now = self.now_ms();
        let limits = &self.context.limits;
        self.inventory.prune(now, limits);
        while let Some(r) = self
            .inventory
            .expire_due(now, self.context.max_holds_per_expiry_record)
        {
            if let Record::HoldsExpired { hold_ids, .. } = &r {
                self.context
                    .stats
                    .holds_expired
                    .fetch_add(hold_ids.len() as u64, Ordering::Relaxed);
            }
            self.keep(Some(r));
        }
        for _ in 0..self.context.max_holds_per_expiry_record {
            let Some(r) = self.inventory.expire_unpaid(now) else {
                break;
            };
            self.context
                .stats
                .orders_unpaid_cancelled
                .fetch_add(1, Ordering::Relaxed);
            self.keep(Some(r));
        }
        now
    }

    /// Encodes a decided record, just applied, and the outbox entry it made, for the commit of
    /// the message in hand.
    fn keep(&mut self, record: Option<Record>) {
        if let Some(r) = record {
            encode_records(std::slice::from_ref(&r), &mut self.frames);
            self.frame_count += 1;
            if let Some(entry) = OutboxEntry::after(&self.inventory, &r, self.last_now_ms) {
                self.outbox.push((entry.seq, entry.encode()));
            }
        }
    }

    /// Queues this message's records and arranges for `answer` to go out once they, and
    /// everything queued before, are durable.
    fn commit<T: Send + 'static>(
        &mut self,
        answer: Result<T, Error>,
        reply: Option<(Reply<T>, OwnedSemaphorePermit)>,
    ) {
        let count = std::mem::take(&mut self.frame_count);
        let first_lsn = self.inventory.applied() - u64::from(count);
        let waiter: Option<Waiter> = reply.map(|(reply, permit)| -> Waiter {
            Box::new(move |durable: Result<(), StorageError>| {
                drop(permit);
                let _ = reply.send(durable.map_err(Error::from).and(answer));
            })
        });
        self.context.commit.submit(
            self.inventory.id(),
            first_lsn,
            count,
            &self.frames,
            &mut self.outbox,
            waiter,
        );
        self.frames.clear();
        if count > 0 {
            // Coalescing: a watch channel keeps only the latest value, so a burst of changes
            // wakes each watcher once.
            self.changes.send_replace(self.inventory.applied());
        }
        self.inventory.grow_ahead();
        self.maybe_snapshot();
    }

    /// Runs one command: due holds first, then the decision, then its record and answer to the
    /// commit queue.
    fn command<T: Send + 'static>(
        &mut self,
        permit: OwnedSemaphorePermit,
        reply: Reply<T>,
        decide: impl FnOnce(&mut Inventory, u64, &Limits) -> Result<Decision<T>, Rejection>,
    ) {
        let now = self.begin();
        let result = decide(&mut self.inventory, now, &self.context.limits);
        let answer = self.decided(result);
        self.commit(answer, Some((reply, permit)));
    }

    /// Keeps the record of an allowed decision and turns the decision into the caller's answer.
    fn decided<T>(&mut self, result: Result<Decision<T>, Rejection>) -> Result<T, Error> {
        let decision = result?;
        self.keep(decision.record);
        Ok(decision.answer)
    }

    /// Answers a read, in turn behind every change queued before it.
    fn read<T: Send + 'static>(
        &mut self,
        permit: OwnedSemaphorePermit,
        reply: Reply<T>,
        look: impl FnOnce(&Inventory, u64) -> Result<T, Error>,
    ) {
        let now = self.begin();
        let answer = look(&self.inventory, now);
        self.commit(answer, Some((reply, permit)));
    }

    /// Snapshots after `snapshot_every_records`, or after as many records as the state has
    /// entries if that is more: encoding a snapshot costs time in proportion to the state, so
    /// this keeps its cost per record bounded while replay at restart stays within one state's
    /// worth. The actor only takes a copy that shares the state's chunks (`Inventory::snapshot`,
    /// no work in proportion to the state's size); a blocking task encodes it, waits until
    /// everything up to its lsn is durable in the log, writes and fsyncs the file, and only then
    /// are the segments it covers dropped.
    fn maybe_snapshot(&mut self) {
        let lsn = self.inventory.applied();
        let every = self
            .context
            .snapshot_every_records
            .max(self.inventory.state_size() as u64);
        if lsn - self.last_snapshot_lsn < every {
            return;
        }
        if self
            .snapshot_task
            .as_ref()
            .is_some_and(|t| !t.is_finished())
        {
            return; // the previous one is still being written; try again after the next command
        }
        let snapshot = self.inventory.snapshot();
        let (commit, snapshots, event) = (
            self.context.commit.clone(),
            self.context.snapshots.clone(),
            self.inventory.id(),
        );
        self.snapshot_task = Some(tokio::task::spawn_blocking(move || {
            let state = postcard::to_allocvec(&snapshot).expect("the inventory serializes");
            // Chunks the actor replaced since (a deadline second, a key chunk) are freed here,
            // off the actor; shared tables go back to it at its next change to each.
            drop(snapshot);
            let written = commit
                .wait_durable()
                .and_then(|()| snapshots.write(event, lsn, &state));
            match written {
                Ok(()) => commit.submit_compaction(event, lsn),
                Err(e) => tracing::warn!(%event, lsn, error = %e, "snapshot not written"),
            }
        }));
        self.last_snapshot_lsn = lsn;
    }

    /// The answer to a reservation while event state is at the memory limit: the first answer of
    /// a retried key, else `MemoryLimit`.
    fn repeated_only(&self, request: &ReserveRequest, now: u64) -> Result<Hold, Error> {
        let memory = &self.context.memory;
        self.inventory
            .repeated_reserve(request, now, &self.context.limits)?
            .ok_or(Error::MemoryLimit {
                used_mib: memory.used_bytes() >> 20,
                limit_mib: memory.limit_bytes() >> 20,
            })
    }

    /// Tells the engine-wide account what this event's state takes now.
    fn report_memory(&mut self) {
        let now = self.inventory.memory_bytes();
        self.context.memory.report(&mut self.memory_reported, now);
    }

    /// Every message once a write has failed (a full disk, an i/o error): every change is
    /// refused with the failure and nothing is written (no expiry, no timer), so the state stays
    /// as it is until the restart; reads are answered from it. The changes of the failed round are
    /// in it: they were answered `STORAGE` (whether they reached the disk is known only after the
    /// restart), so none of their hold or order ids was given out, and they show only in counts
    /// (availability, check-in stats). sled refuses every read once a write has failed, so the
    /// disk's state cannot be read back instead.
    fn after_failure(&mut self, message: EventMsg, failure: &StorageError) {
        let refused = || Error::Storage(StorageError::Poisoned(failure.to_string()));
        let now = self.now_ms();
        let inv = &self.inventory;
        fn answer<T>(reply: Reply<T>, permit: OwnedSemaphorePermit, answer: Result<T, Error>) {
            drop(permit);
            let _ = reply.send(answer);
        }
        match message {
            EventMsg::Reserve { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::Confirm { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::Release { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::CancelOrder { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::SettlePayment { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::RefundOrder { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::SetStatus { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::CheckIn { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::CheckOut { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::UploadScans { permit, reply, .. } => answer(reply, permit, Err(refused())),
            EventMsg::GetHold {
                hold_id,
                permit,
                reply,
            } => answer(reply, permit, inv.hold(hold_id, now).map_err(Error::from)),
            EventMsg::GetOrder {
                order_id,
                permit,
                reply,
            } => answer(reply, permit, inv.order(order_id).map_err(Error::from)),
            EventMsg::CheckInStats { permit, reply } => {
                answer(reply, permit, Ok(inv.check_in_stats()))
            }
            EventMsg::Summary { permit, reply } => answer(reply, permit, Ok(inv.summary())),
            EventMsg::Seats {
                tier,
                permit,
                reply,
            } => answer(
                reply,
                permit,
                inv.seat_availability(tier.as_deref()).map_err(Error::from),
            ),
            EventMsg::Audit { permit, reply } => {
                inv.audit();
                let report = AuditReport {
                    summary: inv.summary(),
                    hold_ids: inv.hold_ids(),
                    orders: inv.order_list(),
                    applied_records: inv.applied(),
                };
                answer(reply, permit, Ok(report))
            }
            EventMsg::Expire { .. } => {}
        }
    }

    /// Arms a timer for the earliest hold or payment deadline, unless one already fires by then.
    fn arm_timer(&mut self, myself: &ActorRef<EventMsg>) {
        let holds = self.inventory.next_expiry_ms();
        let payments = self.inventory.next_payment_due_ms();
        let Some(next) = holds.into_iter().chain(payments).min() else {
            return;
        };
        if self.timer_at_ms.is_some_and(|at| at <= next) {
            return;
        }
        self.timer_generation += 1;
        self.timer_at_ms = Some(next);
        let generation = self.timer_generation;
        let delay_ms = next.saturating_sub(wall_clock_ms());
        myself.send_after(Duration::from_millis(delay_ms), move || EventMsg::Expire {
            generation,
        });
    }
}

impl Actor for EventActor {
    type Msg = EventMsg;
    type State = EventState;
    type Arguments = EventArgs;

    /// A snapshot still being written is finished before the actor stops: a graceful stop then
    /// leaves it for the next start (which would otherwise replay what it covers), and a
    /// restart in the same process never races its file.
    async fn post_stop(
        &self,
        _myself: ActorRef<EventMsg>,
        state: &mut EventState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.snapshot_task.take() {
            let _ = task.await;
        }
        Ok(())
    }

    async fn pre_start(
        &self,
        _myself: ActorRef<EventMsg>,
        args: EventArgs,
    ) -> Result<EventState, ActorProcessingErr> {
        Ok(EventState {
            inventory: args.inventory,
            context: args.context,
            frames: Vec::new(),
            frame_count: 0,
            outbox: Vec::new(),
            last_snapshot_lsn: args.snapshot_lsn,
            snapshot_task: None,
            changes: args.changes,
            timer_at_ms: None,
            timer_generation: 0,
            last_now_ms: 0,
            memory_reported: 0,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<EventMsg>,
        state: &mut EventState,
    ) -> Result<(), ActorProcessingErr> {
        // Holds that fell due while the engine was down go back on sale now.
        state.begin();
        state.commit::<()>(Ok(()), None);
        state.arm_timer(&myself);
        state.report_memory();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<EventMsg>,
        message: EventMsg,
        state: &mut EventState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(failure) = state.context.commit.failure() {
            state.after_failure(message, &failure);
            return Ok(());
        }
        match message {
            EventMsg::Reserve {
                requests,
                permit,
                reply,
            } => {
                let now = state.begin();
                let context = state.context.clone();
                let mut answers = Vec::with_capacity(requests.len());
                // At the memory limit no new hold is made; a retried key still gets its hold.
                let memory_full = !context.memory.has_room(0);
                for request in &requests {
                    if memory_full {
                        answers.push(state.repeated_only(request, now));
                        continue;
                    }
                    let hold_id = HoldId(Uuid::now_v7());
                    let result = state
                        .inventory
                        .reserve(request, hold_id, now, &context.limits);
                    answers.push(state.decided(result));
                }
                state.commit(Ok(answers), Some((reply, permit)));
            }
            EventMsg::Confirm {
                request,
                permit,
                reply,
            } => {
                let order_id = OrderId(Uuid::now_v7());
                state.command(permit, reply, |inv, now, limits| {
                    inv.confirm(&request, order_id, now, limits)
                });
            }
            EventMsg::Release {
                request,
                permit,
                reply,
            } => state.command(permit, reply, |inv, now, limits| {
                inv.release(&request, now, limits)
            }),
            EventMsg::CancelOrder {
                request,
                permit,
                reply,
            } => state.command(permit, reply, |inv, now, limits| {
                inv.cancel_order(&request, now, limits)
            }),
            EventMsg::SettlePayment {
                result,
                permit,
                reply,
            } => {
                let keys = state.context.tickets.clone();
                state.command(permit, reply, |inv, now, limits| {
                    inv.settle_payment(&result, now, limits, &mut Issuer(&keys))
                });
            }
            EventMsg::RefundOrder {
                request,
                permit,
                reply,
            } => state.command(permit, reply, |inv, now, limits| {
                inv.refund_order(&request, now, limits)
            }),
            EventMsg::SetStatus {
                status,
                permit,
                reply,
            } => state.command(permit, reply, |inv, now, _| inv.set_status(status, now)),
            EventMsg::CheckIn {
                scan,
                permit,
                reply,
            } => state.command(permit, reply, |inv, now, _| inv.check_in(&scan, now)),
            EventMsg::CheckOut {
                scan,
                permit,
                reply,
            } => state.command(permit, reply, |inv, now, _| inv.check_out(&scan, now)),
            EventMsg::UploadScans {
                scans,
                permit,
                reply,
            } => state.command(permit, reply, |inv, now, _| inv.upload_scans(&scans, now)),
            // Reads go through the commit queue too, so that nobody sees a change before it is
            // durable; with nothing new to write they are answered at the end of the round
            // already under way.
            EventMsg::GetHold {
                hold_id,
                permit,
                reply,
            } => state.read(permit, reply, |inv, now| Ok(inv.hold(hold_id, now)?)),
            EventMsg::GetOrder {
                order_id,
                permit,
                reply,
            } => state.read(permit, reply, |inv, _| Ok(inv.order(order_id)?)),
            EventMsg::CheckInStats { permit, reply } => {
                state.read(permit, reply, |inv, _| Ok(inv.check_in_stats()))
            }
            EventMsg::Summary { permit, reply } => {
                state.read(permit, reply, |inv, _| Ok(inv.summary()))
            }
            EventMsg::Seats {
                tier,
                permit,
                reply,
            } => state.read(permit, reply, |inv, _| {
                Ok(inv.seat_availability(tier.as_deref())?)
            }),
            EventMsg::Audit { permit, reply } => state.read(permit, reply, |inv, _| {
                inv.audit();
                Ok(AuditReport {
                    summary: inv.summary(),
                    hold_ids: inv.hold_ids(),
                    orders: inv.order_list(),
                    applied_records: inv.applied(),
                })
            }),
            EventMsg::Expire { generation } => {
                if generation != state.timer_generation {
                    return Ok(());
                }
                state.timer_at_ms = None;
                state.begin();
                state.commit::<()>(Ok(()), None);
            }
        }
        state.arm_timer(&myself);
        state.report_memory();
        Ok(())
    }
}
