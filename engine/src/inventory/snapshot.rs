//! A copy of an event's state to encode off its actor. Taking one costs no work in proportion to
//! the event's size: the big tables are kept in chunks behind `Arc`s (`ShardedMap`'s 64 tables,
//! `Deadlines`' seconds, `ChunkedQueue`'s and `EndedNotes`' chunks), so the copy takes a reference
//! to each chunk, and the actor copies a chunk only when it first changes one that a snapshot being
//! encoded still shares. The per-seat owners and the tiers' row indexes are copied whole: their
//! size is bounded by `limits.max_seats_per_event`, not by traffic.

use serde::Serialize;

use super::*;

/// The fields of an `Inventory` that a snapshot keeps, in the same order and of the same types,
/// so it encodes to the same bytes as the inventory it was taken from (and decodes as one).
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    spec: Arc<EventSpec>,
    status: EventStatus,
    tiers: Vec<TierState>,
    seats: Arc<Vec<SeatSlot>>,
    owners: Vec<Owner>,
    holds: ShardedMap<HoldId, HoldState>,
    expiry: Deadlines<HoldId>,
    orders: ShardedMap<OrderId, OrderState>,
    payment_deadlines: Deadlines<OrderId>,
    customers: ShardedMap<Arc<str>, Tally>,
    admissions: ShardedMap<TicketId, checkins::TicketScans>,
    gates: Vec<GateCounts>,
    ended: EndedNotes,
    keys: ShardedMap<KeyId, KeyEntry>,
    key_queue: ChunkedQueue<(u64, KeyId)>,
    applied: u64,
    outbox_seq: u64,
}

impl Snapshot {
    /// Records the state covers: the snapshot's lsn.
    pub fn lsn(&self) -> u64 {
        self.applied
    }
}

impl Inventory {
    /// The state as it is now, to encode elsewhere (`postcard::to_allocvec(&snapshot)` gives the
    /// bytes `postcard::to_allocvec(&inventory)` gives now).
    pub fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            spec: self.spec.clone(),
            status: self.status,
            tiers: self.tiers.clone(),
            seats: self.seats.clone(),
            owners: self.owners.clone(),
            holds: self.holds.share(),
            expiry: self.expiry.clone(),
            orders: self.orders.share(),
            payment_deadlines: self.payment_deadlines.clone(),
            customers: self.customers.share(),
            admissions: self.admissions.share(),
            gates: self.gates.clone(),
            ended: self.ended.clone(),
            keys: self.keys.share(),
            key_queue: self.key_queue.clone(),
            applied: self.applied,
            outbox_seq: self.outbox_seq,
        }
    }

    /// Grows at most one table of each big map ahead of need (`ShardedMap::grow_ahead`); the
    /// actor calls it once per message, so no message pays for growing a whole map.
    pub fn grow_ahead(&mut self) {
        self.holds.grow_ahead();
        self.customers.grow_ahead();
        self.orders.grow_ahead();
        self.order_of_hold.grow_ahead();
        self.keys.grow_ahead();
        self.ticket_index.grow_ahead();
        self.admissions.grow_ahead();
    }
}
