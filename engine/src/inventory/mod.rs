//! The inventory of one event as a pure state machine: it decides requests and applies log records.
//! It does no I/O, reads no clock and draws no random numbers: time and ids are arguments, so the
//! same records always rebuild the same state.
//!
//! Every change goes through two steps. A command (`reserve`, `confirm`, ...) checks the request
//! against the state and, if it is allowed, produces a [`Record`]; `apply` then performs that
//! record. Recovery calls the same `apply` on the records read back from the log. After every
//! applied record the per-tier invariant `available + held + sold == capacity` is asserted, in
//! release builds too, and seat ownership is checked before each seat changes hands.
//!
//! The types of the state and of the records are all here, next to `Inventory`, so that what a
//! snapshot and a log record encode can be read in one place. The commands and the parts of
//! `apply` live with the aggregate they change: `holds.rs` holds, their deadlines and the
//! customers' tallies; `orders.rs` orders made and cancelled; `payments.rs` payment results,
//! payment deadlines and refunds; `tickets.rs` the tickets a paid order issues; `checkins.rs`
//! tickets let in at the gates; `keys.rs` client
//! keys; `spec.rs` the limits, the spec's checks and the event's status; `views.rs` the
//! read-only views.

/// Returns `Err(why)` from a check when `cond` does not hold: the fallible twin of `assert!` for
/// the checks recovery makes on what it read back (`check_state`, `check_record`).
macro_rules! ensure {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            return Err(format!($($why)+));
        }
    };
}

mod checkins;
mod deadlines;
mod ended;
mod footprint;
mod holds;
mod keys;
pub mod model;
mod orders;
mod payments;
mod queue;
pub mod rejection;
mod replay;
mod seating;
mod sharded;
mod snapshot;
mod spec;
mod tickets;
mod views;

#[cfg(test)]
mod checkin_tests;
#[cfg(test)]
mod payment_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Maps keyed by ids and customer strings: foldhash is several times faster than SipHash here and
/// still randomly seeded per process, so customers cannot pick colliding keys ahead of time.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

pub use checkins::{
    Admission, CheckInStats, Exit, GateCounts, MAX_GATES_PER_EVENT, MAX_SCAN_ID_BYTES,
    MAX_SCANS_PER_TICKET, MAX_SCANS_PER_UPLOAD, Scan, ScanKind, ScanOutcome, ScanRecord,
};
use deadlines::Deadlines;
use ended::EndedNotes;
pub use model::*;
use queue::ChunkedQueue;
pub use rejection::Rejection;
use seating::RowIndex;
use sharded::ShardedMap;
pub use snapshot::Snapshot;
pub use spec::{Limits, validate_spec};
pub use tickets::TicketIssuer;

/// One tier's share of a hold or order, by index: tier index into the spec, seat indices into the
/// event's seat table.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LineRecord {
    pub tier: u16,
    pub quantity: u32,
    pub seats: Vec<u32>,
    pub unit_price_minor: u64,
    pub unit_fee_minor: u64,
}

/// An issued ticket as recorded: which line of its order, which seat (an index into the event's
/// seat table) for a seated tier, and the signed token, made once by the actor and replayed as is.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TicketRecord {
    pub id: TicketId,
    pub line: u16,
    pub seat: Option<u32>,
    pub token: String,
}

/// A client key and the fingerprint of the request it came with.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key: String,
    pub fingerprint: u64,
}

/// A change to an event, as written to the log. Records are facts: applying one cannot fail.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Record {
    Created {
        spec: EventSpec,
    },
    StatusChanged {
        status: EventStatus,
        at_ms: u64,
    },
    HoldPlaced {
        hold_id: HoldId,
        customer: Arc<str>,
        lines: Vec<LineRecord>,
        created_at_ms: u64,
        expires_at_ms: u64,
        key: Option<KeyRecord>,
    },
    HoldReleased {
        hold_id: HoldId,
        at_ms: u64,
        key: Option<KeyRecord>,
    },
    HoldsExpired {
        hold_ids: Vec<HoldId>,
        at_ms: u64,
    },
    HoldConfirmed {
        hold_id: HoldId,
        order_id: OrderId,
        payment_ref: String,
        lines: Vec<LineRecord>,
        at_ms: u64,
        payment_due_at_ms: u64,
        key: Option<KeyRecord>,
        contact: Option<Box<Contact>>,
    },
    OrderCancelled {
        order_id: OrderId,
        cause: CancelCause,
        reason: String,
        at_ms: u64,
        key: Option<KeyRecord>,
    },
    OrderPaid {
        order_id: OrderId,
        payment: Payment,
        tickets: Vec<TicketRecord>,
    },
    OrderRefunded {
        order_id: OrderId,
        amount_minor: u64,
        reason: String,
        /// Whether the tickets went back on sale (not once the event has started).
        restock: bool,
        at_ms: u64,
        key: Option<KeyRecord>,
    },
    /// Money was taken that cannot pay the order (see `Settlement::RefundRequested`): the payment
    /// adapter is asked to give it back.
    RefundRequested {
        order_id: OrderId,
        provider: String,
        provider_ref: String,
        amount_minor: u64,
        why: String,
        at_ms: u64,
    },
    /// Tickets let in at gates, and scans of tickets already in that were made offline.
    ScansRecorded {
        scans: Vec<ScanRecord>,
    },
}

/// The outcome of an allowed command: the record to log (none when a retried key repeats the first
/// answer) and the answer for the caller, to be sent once the record is durable.
#[derive(Debug)]
pub struct Decision<T> {
    pub record: Option<Record>,
    pub answer: T,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TierState {
    capacity: u32,
    available: u32,
    held: u32,
    sold: u32,
    /// Rows of a seated tier, front first; empty for general admission.
    rows: Vec<RowIndex>,
}

/// Where a seat is, fixed at creation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
struct SeatSlot {
    tier: u16,
    /// Index into the tier's `rows`.
    row: u32,
    label: SeatRef,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum Owner {
    Free,
    Held(HoldId),
    Sold(OrderId),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HoldState {
    customer: Arc<str>,
    lines: Vec<LineRecord>,
    tickets: u32,
    created_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OrderState {
    hold_id: HoldId,
    customer: Arc<str>,
    lines: Vec<LineRecord>,
    tickets: u32,
    payment_ref: String,
    /// Boxed: most of an order's size is in the table of every order, the contact is not.
    contact: Option<Box<Contact>>,
    status: OrderStatus,
    created_at_ms: u64,
    updated_at_ms: u64,
    payment_due_at_ms: u64,
    payment: Option<Payment>,
    /// The tickets issued when it was paid.
    issued: Vec<TicketRecord>,
    cancelled: Option<(CancelCause, String)>,
    refunded_minor: u64,
    /// Whether its tickets count as sold: pending or paid, or refunded after the event started
    /// (those tickets stay out of sale).
    holds_stock: bool,
    /// Provider references of payments whose refund was requested, so a redelivered result
    /// never asks twice.
    refunds_requested: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum HoldEnd {
    Released,
    Expired,
    Confirmed(OrderId),
}

#[derive(Clone, Copy, Default, Debug, Serialize, Deserialize)]
struct Tally {
    /// Tickets in live holds and in orders that are not cancelled or refunded.
    tickets: u32,
    open_holds: u32,
}

/// Which command a client key belongs to; keys of different commands never collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
enum KeyScope {
    Reserve,
    Confirm,
    Release,
    Cancel,
    Refund,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
struct KeyId {
    scope: KeyScope,
    /// The customer, for reserve keys; empty otherwise.
    owner: String,
    key: String,
}

impl KeyId {
    /// Heap bytes of its two strings, as the allocator rounds them.
    fn text(&self) -> u64 {
        footprint::heap(self.owner.len()) + footprint::heap(self.key.len())
    }
}

/// Heap bytes of an `Arc<str>` of a customer id: its two counts and the text.
fn shared_text(text: &Arc<str>) -> u64 {
    footprint::heap(16 + text.len())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Answer {
    Hold(Hold),
    /// Boxed: an order is three times a hold's size, and most keys are reserve keys, whose entries
    /// would all be that big.
    Order(Box<Order>),
    Released(Hold),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeyEntry {
    fingerprint: u64,
    at_ms: u64,
    answer: Answer,
}

/// The state of one event. Serializable as a whole: that is the snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inventory {
    /// The spec and the seat table never change after creation; shared with snapshots.
    spec: Arc<EventSpec>,
    status: EventStatus,
    tiers: Vec<TierState>,
    seats: Arc<Vec<SeatSlot>>,
    owners: Vec<Owner>,
    holds: ShardedMap<HoldId, HoldState>,
    /// Holds by deadline (ms), earliest first. Confirmed and released holds leave their entry
    /// behind; it is dropped when its deadline comes first (`drop_stale_deadlines`), so stale
    /// entries are bounded by the longest TTL. Holds sharing a millisecond share a list: a push
    /// is mostly onto the last list, and no single array grows to millions (a binary heap
    /// doubling at 2M entries stalled the event 130 ms).
    expiry: Deadlines<HoldId>,
    orders: ShardedMap<OrderId, OrderState>,
    /// Orders pending payment by payment deadline (ms), earliest first; entries of orders paid or
    /// cancelled before it are dropped when their deadline comes first, as for `expiry`.
    payment_deadlines: Deadlines<OrderId>,
    customers: ShardedMap<Arc<str>, Tally>,
    /// Tickets let in, with the scans recorded for each.
    admissions: ShardedMap<TicketId, checkins::TicketScans>,
    /// Check-in counts per gate, in the order gates first scanned.
    gates: Vec<GateCounts>,
    /// Every issued ticket: its order and its place in the order's tickets; derived from
    /// `orders`, rebuilt on restore.
    #[serde(skip)]
    ticket_index: ShardedMap<TicketId, (OrderId, u32)>,
    /// Tickets of paid orders; derived, rebuilt on restore.
    #[serde(skip)]
    tickets_live: u64,
    /// How recently ended holds ended, for precise answers to late confirms.
    ended: EndedNotes,
    /// The order each confirmed hold became; derived from `orders`, rebuilt on restore.
    #[serde(skip)]
    order_of_hold: ShardedMap<HoldId, OrderId>,
    keys: ShardedMap<KeyId, KeyEntry>,
    key_queue: ChunkedQueue<(u64, KeyId)>,
    /// Records applied so far; the log sequence number of the next record.
    applied: u64,
    /// Outbox entries made so far (see `crate::outbox`): 1 for the creation, +1 for each status
    /// change, confirm, payment, cancel, refund and refund request applied. Counted by `apply`, so a replay counts the same.
    outbox_seq: u64,
    #[serde(skip)]
    lookup: Lookup,
    /// What the spec and the seat tables take in memory; derived, rebuilt on restore.
    #[serde(skip)]
    fixed_bytes: u64,
    /// Heap bytes of the strings and lists that holds, orders and keys own (customer ids, client
    /// keys, payments, tickets and their tokens, cancel reasons), for `memory_bytes`; derived,
    /// rebuilt on restore.
    #[serde(skip)]
    text_bytes: u64,
}

/// Indexes rebuilt from the spec; never serialized.
#[derive(Clone, Debug, Default)]
struct Lookup {
    tier_by_code: HashMap<String, u16>,
    /// Tier codes shared by every answer that names them.
    tier_codes: Vec<Arc<str>>,
    seat_by_ref: HashMap<SeatRef, u32>,
}

impl Lookup {
    fn build(spec: &EventSpec, seats: &[SeatSlot]) -> Lookup {
        Lookup {
            tier_codes: spec
                .tiers
                .iter()
                .map(|t| Arc::from(t.code.as_str()))
                .collect(),
            tier_by_code: spec
                .tiers
                .iter()
                .enumerate()
                .map(|(i, t)| (t.code.clone(), i as u16))
                .collect(),
            seat_by_ref: seats
                .iter()
                .enumerate()
                .map(|(i, s)| (s.label.clone(), i as u32))
                .collect(),
        }
    }
}

/// Largest number of holds and customers an event's tables are sized for at creation.
const PRESIZE_MAX: usize = 1 << 21;

impl Inventory {
    /// Decides a new event: the spec is validated and becomes the event's first record.
    pub fn create(spec: EventSpec, limits: &Limits) -> Result<(Inventory, Record), Rejection> {
        validate_spec(&spec, limits)?;
        let record = Record::Created { spec };
        let inventory = Inventory::from_created(&record);
        Ok((inventory, record))
    }

    /// The tiers (all their stock available) and the seat table a spec describes.
    fn layout(spec: &EventSpec) -> (Vec<TierState>, Vec<SeatSlot>) {
        let mut tiers = Vec::with_capacity(spec.tiers.len());
        let mut seats = Vec::new();
        for (ti, tier) in spec.tiers.iter().enumerate() {
            match &tier.stock {
                Stock::General { capacity } => tiers.push(TierState {
                    capacity: *capacity,
                    available: *capacity,
                    held: 0,
                    sold: 0,
                    rows: Vec::new(),
                }),
                Stock::Seated { sections } => {
                    // Front first across sections: every section's row 0, then every row 1, ...
                    let mut ranked: Vec<(usize, usize, &SectionSpec, &RowSpec)> = sections
                        .iter()
                        .enumerate()
                        .flat_map(|(si, s)| {
                            s.rows.iter().enumerate().map(move |(ri, r)| (ri, si, s, r))
                        })
                        .collect();
                    ranked.sort_by_key(|(ri, si, _, _)| (*ri, *si));
                    let mut rows = Vec::with_capacity(ranked.len());
                    for (_, _, section, row) in ranked {
                        let row_index = rows.len() as u32;
                        let mut ids = Vec::with_capacity(row.seats.len());
                        for number in &row.seats {
                            ids.push(seats.len() as u32);
                            seats.push(SeatSlot {
                                tier: ti as u16,
                                row: row_index,
                                label: SeatRef {
                                    section: section.name.clone(),
                                    row: row.name.clone(),
                                    number: number.clone(),
                                },
                            });
                        }
                        rows.push(RowIndex {
                            free: ids.len() as u32,
                            seats: ids,
                        });
                    }
                    let capacity = rows.iter().map(|r| r.free).sum();
                    tiers.push(TierState {
                        capacity,
                        available: capacity,
                        held: 0,
                        sold: 0,
                        rows,
                    });
                }
            }
        }
        (tiers, seats)
    }

    /// Builds the state a `Created` record describes; the start of every replay.
    ///
    /// Panics if `record` is not `Created`: a log whose first record is anything else is corrupt
    /// (recovery refuses such a log before it gets here, `check_created`).
    pub fn from_created(record: &Record) -> Inventory {
        let Record::Created { spec } = record else {
            panic!("the first record of an event must be Created, found {record:?}");
        };
        let (tiers, seats) = Inventory::layout(spec);
        let lookup = Lookup::build(spec, &seats);
        let fixed_bytes = Inventory::fixed_bytes(spec, &seats);
        // Room for the whole event up front, up to a cap: a drop then fills its tables instead
        // of growing them (measured: a 1M-ticket drop sold out in ~1.0 s sized, ~1.5-2.2 s not).
        let expected: usize = tiers
            .iter()
            .map(|t| t.capacity as usize)
            .sum::<usize>()
            .min(PRESIZE_MAX);
        let inventory = Inventory {
            status: spec.status,
            spec: Arc::new(spec.clone()),
            owners: vec![Owner::Free; seats.len()],
            tiers,
            seats: Arc::new(seats),
            holds: ShardedMap::with_capacity(expected),
            expiry: Deadlines::default(),
            orders: ShardedMap::default(),
            payment_deadlines: Deadlines::default(),
            customers: ShardedMap::with_capacity(expected),
            admissions: ShardedMap::default(),
            gates: Vec::new(),
            ticket_index: ShardedMap::default(),
            tickets_live: 0,
            ended: EndedNotes::default(),
            order_of_hold: ShardedMap::default(),
            keys: ShardedMap::default(),
            key_queue: ChunkedQueue::default(),
            applied: 1,
            outbox_seq: 1,
            lookup,
            fixed_bytes,
            text_bytes: 0,
        };
        inventory.audit();
        inventory
    }

    /// Rebuilds the indexes a deserialized snapshot lacks. It does not audit: recovery audits
    /// once, after the records past the snapshot are applied too.
    pub fn restored(mut self) -> Inventory {
        self.lookup = Lookup::build(&self.spec, &self.seats);
        self.fixed_bytes = Inventory::fixed_bytes(&self.spec, &self.seats);
        self.order_of_hold = self.orders.iter().map(|(id, o)| (o.hold_id, *id)).collect();
        self.ticket_index = self
            .orders
            .iter()
            .flat_map(|(id, o)| {
                o.issued
                    .iter()
                    .enumerate()
                    .map(move |(i, t)| (t.id, (*id, i as u32)))
            })
            .collect();
        self.tickets_live = self
            .orders
            .iter()
            .filter(|(_, o)| o.status == OrderStatus::Paid)
            .map(|(_, o)| o.issued.len() as u64)
            .sum();
        let scanned: u64 = self
            .admissions
            .iter()
            .map(|(_, a)| checkins::scans_text(a))
            .sum::<u64>()
            + self
                .gates
                .iter()
                .map(|g| footprint::heap(g.gate.len()))
                .sum::<u64>();
        let customers: u64 = self
            .holds
            .iter()
            .map(|(_, h)| shared_text(&h.customer))
            .sum();
        let ordered: u64 = self.orders.iter().map(|(_, o)| orders::order_text(o)).sum();
        let keys: u64 = self.keys.keys().map(KeyId::text).sum();
        let queued: u64 = self.key_queue.iter().map(|(_, id)| id.text()).sum();
        self.text_bytes = customers + ordered + keys + queued + scanned;
        self
    }

    // ------------------------------------------------------------------------------------------
    // Applying records. Used live, right after a decision, and by recovery.
    // ------------------------------------------------------------------------------------------

    /// Performs a record. Panics if the record contradicts the state: a log that does is corrupt,
    /// and stopping is better than selling a seat twice.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Created { .. } => panic!("Created can only start an event's log"),
            Record::StatusChanged { status, .. } => self.status = *status,
            Record::HoldPlaced {
                hold_id,
                customer,
                lines,
                created_at_ms,
                expires_at_ms,
                key,
            } => self.apply_hold_placed(
                *hold_id,
                customer,
                lines,
                *created_at_ms,
                *expires_at_ms,
                key.as_ref(),
            ),
            Record::HoldReleased {
                hold_id,
                at_ms,
                key,
            } => self.apply_hold_released(*hold_id, *at_ms, key.as_ref()),
            Record::HoldsExpired { hold_ids, at_ms } => self.apply_holds_expired(hold_ids, *at_ms),
            Record::HoldConfirmed {
                hold_id,
                order_id,
                payment_ref,
                lines,
                at_ms,
                payment_due_at_ms,
                key,
                contact,
            } => self.apply_hold_confirmed(
                *hold_id,
                *order_id,
                (payment_ref, contact.as_deref()),
                lines,
                (*at_ms, *payment_due_at_ms),
                key.as_ref(),
            ),
            Record::OrderCancelled {
                order_id,
                cause,
                reason,
                at_ms,
                key,
            } => self.apply_order_cancelled(*order_id, *cause, reason, *at_ms, key.as_ref()),
            Record::OrderPaid {
                order_id,
                payment,
                tickets,
            } => self.apply_order_paid(*order_id, payment, tickets),
            Record::OrderRefunded {
                order_id,
                amount_minor,
                restock,
                at_ms,
                key,
                ..
            } => {
                self.apply_order_refunded(*order_id, *amount_minor, *restock, *at_ms, key.as_ref())
            }
            Record::RefundRequested {
                order_id,
                provider,
                provider_ref,
                ..
            } => self.apply_refund_requested(*order_id, provider, provider_ref),
            Record::ScansRecorded { scans } => self.apply_scans_recorded(scans),
        }
        if crate::outbox::OutboxEntry::made_by(record) {
            self.outbox_seq += 1;
        }
        self.applied += 1;
    }

    /// The invariant, for every tier a record touched. In release builds too.
    fn assert_tiers(&self, lines: &[LineRecord]) {
        for line in lines {
            let t = &self.tiers[line.tier as usize];
            assert_eq!(
                u64::from(t.available) + u64::from(t.held) + u64::from(t.sold),
                u64::from(t.capacity),
                "tier {} breaks available + held + sold == capacity",
                self.spec.tiers[line.tier as usize].code
            );
        }
    }

    /// Recomputes every count from the holds, the orders and the seat owners and asserts that they
    /// agree with the maintained ones, that every seat has at most one owner and that owners point
    /// at live holds or orders (`check_state`, which says what is wrong). O(state); run after every
    /// test and by the actor on request.
    pub fn audit(&self) {
        if let Err(why) = self.check_state() {
            panic!("event {} breaks an invariant: {why}", self.spec.id);
        }
    }

    /// What `audit` asserts, as a check that never panics, whatever the state holds: recovery
    /// runs it on a snapshot read back and on the state it rebuilt, and refuses either if it
    /// fails. Besides the counts it checks the shape a decoded state could get wrong: the tiers
    /// and seat table are the ones the spec lays out, and every line, seat and ticket index
    /// points inside them.
    pub fn check_state(&self) -> Result<(), String> {
        self.check_layout()?;
        let mut held = vec![0u64; self.tiers.len()];
        let mut sold = vec![0u64; self.tiers.len()];
        let mut owner_of = vec![Owner::Free; self.seats.len()];
        let mut tallies: HashMap<&str, (u64, u64)> = HashMap::default();
        let deadlines: HashSet<(u64, HoldId)> = self
            .expiry
            .iter()
            .flat_map(|(at, ids)| ids.iter().map(move |id| (*at, *id)))
            .collect();
        ensure!(
            !self.expiry.has_empty_list() && !self.payment_deadlines.has_empty_list(),
            "an empty list of deadlines"
        );
        for (id, hold) in self.holds.iter() {
            ensure!(
                deadlines.contains(&(hold.expires_at_ms, *id)),
                "live hold {id} has no deadline"
            );
            let tickets = self
                .check_lines(&hold.lines)
                .map_err(|e| format!("hold {id}: {e}"))?;
            ensure!(
                u64::from(hold.tickets) == tickets,
                "hold {id} counts {} tickets in lines of {tickets}",
                hold.tickets
            );
            for line in &hold.lines {
                held[line.tier as usize] += u64::from(line.quantity);
                for &s in &line.seats {
                    ensure!(
                        owner_of[s as usize] == Owner::Free,
                        "seat {s} has two owners"
                    );
                    owner_of[s as usize] = Owner::Held(*id);
                }
            }
            let t = tallies.entry(&hold.customer).or_default();
            t.0 += u64::from(hold.tickets);
            t.1 += 1;
        }
        let mut due: HashSet<(u64, OrderId)> = self
            .payment_deadlines
            .iter()
            .flat_map(|(at, ids)| ids.iter().map(move |id| (*at, *id)))
            .collect();
        for (id, order) in self.orders.iter() {
            let live = matches!(
                order.status,
                OrderStatus::PendingPayment | OrderStatus::Paid
            );
            ensure!(
                order.holds_stock == live
                    || (order.holds_stock && order.status == OrderStatus::Refunded),
                "order {id} is {:?} and holds stock: {}",
                order.status,
                order.holds_stock
            );
            let tickets = self
                .check_lines(&order.lines)
                .map_err(|e| format!("order {id}: {e}"))?;
            ensure!(
                u64::from(order.tickets) == tickets,
                "order {id} counts {} tickets in lines of {tickets}",
                order.tickets
            );
            if order.holds_stock {
                for line in &order.lines {
                    sold[line.tier as usize] += u64::from(line.quantity);
                    for &s in &line.seats {
                        ensure!(
                            owner_of[s as usize] == Owner::Free,
                            "seat {s} has two owners"
                        );
                        owner_of[s as usize] = Owner::Sold(*id);
                    }
                }
            }
            if live {
                tallies.entry(&order.customer).or_default().0 += u64::from(order.tickets);
            }
            if order.status == OrderStatus::PendingPayment {
                ensure!(
                    due.remove(&(order.payment_due_at_ms, *id)),
                    "order {id} pending payment has no deadline"
                );
            }
            let paid = matches!(order.status, OrderStatus::Paid | OrderStatus::Refunded);
            ensure!(
                paid == order.payment.is_some(),
                "order {id} is {:?} with payment {:?}",
                order.status,
                order.payment
            );
            if paid {
                self.check_tickets(order, &order.issued)
                    .map_err(|e| format!("order {id}: {e}"))?;
            } else {
                ensure!(
                    order.issued.is_empty(),
                    "order {id} ({:?}) has tickets issued",
                    order.status
                );
            }
        }
        // What is left in `due` are stale entries of orders paid or cancelled before their
        // deadline, dropped lazily.
        ensure!(
            owner_of == self.owners,
            "seat owners disagree with holds and orders"
        );
        for (i, t) in self.tiers.iter().enumerate() {
            ensure!(
                (u64::from(t.held), u64::from(t.sold)) == (held[i], sold[i]),
                "tier {i} counts disagree"
            );
            ensure!(
                u64::from(t.available) + u64::from(t.held) + u64::from(t.sold)
                    == u64::from(t.capacity),
                "tier {i} breaks available + held + sold == capacity"
            );
            for row in &t.rows {
                let free = row
                    .seats
                    .iter()
                    .filter(|&&s| self.owners[s as usize] == Owner::Free)
                    .count();
                ensure!(row.free as usize == free, "row free count");
            }
        }
        ensure!(
            tallies.len() == self.customers.len(),
            "customer tallies: {} kept, {} counted",
            self.customers.len(),
            tallies.len()
        );
        ensure!(self.order_of_hold.len() == self.orders.len(), "order index");
        for (id, order) in self.orders.iter() {
            ensure!(
                self.order_of_hold.get(&order.hold_id) == Some(id),
                "order index of {id}"
            );
            ensure!(
                self.holds.get(&order.hold_id).is_none(),
                "hold {} is live and confirmed as order {id}",
                order.hold_id
            );
        }
        for (c, t) in tallies {
            let kept = self
                .customers
                .get(c)
                .map(|k| (u64::from(k.tickets), u64::from(k.open_holds)));
            ensure!(
                kept == Some(t),
                "tally of {c}: {kept:?} kept, {t:?} counted"
            );
        }
        // `prune` forgets keys from the front of the queue: each key must be there with the time
        // it was remembered at, or it would never be forgotten (or the queue run dry).
        let queued: HashSet<(u64, &KeyId)> =
            self.key_queue.iter().map(|(at, id)| (*at, id)).collect();
        for (id, entry) in self.keys.iter() {
            ensure!(
                queued.contains(&(entry.at_ms, id)),
                "client key {} of {:?} is not queued to be forgotten",
                rejection::quote(&id.key),
                id.scope
            );
        }
        self.ended.check()?;
        self.check_check_ins()
    }

    /// The tiers and the seat table are the ones the spec lays out, each owner has its seat.
    fn check_layout(&self) -> Result<(), String> {
        ensure!(
            self.spec.tiers.len() <= usize::from(u16::MAX) + 1,
            "{} tiers",
            self.spec.tiers.len()
        );
        let (tiers, seats) = Inventory::layout(&self.spec);
        ensure!(*self.seats == seats, "the seat table is not the spec's");
        ensure!(
            self.owners.len() == seats.len(),
            "{} seat owners for {} seats",
            self.owners.len(),
            seats.len()
        );
        ensure!(
            self.tiers.len() == tiers.len(),
            "{} tiers for the spec's {}",
            self.tiers.len(),
            tiers.len()
        );
        for (i, (kept, laid)) in self.tiers.iter().zip(&tiers).enumerate() {
            ensure!(
                kept.capacity == laid.capacity
                    && kept.rows.len() == laid.rows.len()
                    && kept
                        .rows
                        .iter()
                        .zip(&laid.rows)
                        .all(|(a, b)| a.seats == b.seats),
                "tier {i} is not laid out as the spec says"
            );
        }
        Ok(())
    }

    /// Lines point inside the event: a tier that exists, seats of that tier, one per unit of a
    /// seated tier and none for general admission, no seat twice. Returns their tickets.
    fn check_lines(&self, lines: &[LineRecord]) -> Result<u64, String> {
        let mut tickets = 0u64;
        let mut taken = HashSet::default();
        for line in lines {
            let tier = self
                .tiers
                .get(usize::from(line.tier))
                .ok_or_else(|| format!("a line of tier {}, which does not exist", line.tier))?;
            if tier.rows.is_empty() {
                ensure!(line.seats.is_empty(), "seats in a general-admission line");
            } else {
                ensure!(
                    line.seats.len() == line.quantity as usize,
                    "a seated line of {} with {} seats",
                    line.quantity,
                    line.seats.len()
                );
            }
            for &s in &line.seats {
                let slot = self
                    .seats
                    .get(s as usize)
                    .ok_or_else(|| format!("seat {s}, which does not exist"))?;
                ensure!(
                    slot.tier == line.tier,
                    "seat {s} is not in tier {}",
                    line.tier
                );
                ensure!(taken.insert(s), "seat {s} twice");
            }
            tickets += u64::from(line.quantity);
        }
        ensure!(tickets <= u64::from(u32::MAX), "{tickets} tickets");
        Ok(tickets)
    }
}
