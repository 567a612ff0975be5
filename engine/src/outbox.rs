//! The outbox: every change that services downstream must hear of (an event created or its status
//! changed, an order confirmed, paid, cancelled or refunded, a refund requested), as an entry made durable in the same commit round as
//! the record that made it, so that no acknowledged change can lack its entry.
//!
//! Each entry carries its event's outbox sequence number, counted by `Inventory::apply` (gap-free,
//! from 1, the same after a replay) and an id derived from the event and the number, so a resent
//! entry has the id it had. Entries are kept in their own sled tree, apart from the log's
//! segments, so that compaction never drops one; the relay removes them once the broker has
//! acknowledged them (`GroupCommit::submit_outbox_ack`). Recovery writes again any entry its
//! replay made that is neither there nor acknowledged, so a crash between the two trees' writes
//! loses nothing.
//!
//! This module builds and encodes entries; it decides nothing and publishes nothing.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::inventory::{EventId, EventSpec, EventStatus, Inventory, Order, OrderId, Record};

/// One change for services downstream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub event_id: EventId,
    /// 1 for the event's creation, then +1 per entry of the event.
    pub seq: u64,
    /// Unique across events; the same each time this entry is sent.
    pub id: Uuid,
    /// When the change was made, ms since the Unix epoch (the actor's clock).
    pub at_ms: u64,
    pub change: Change,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Change {
    EventCreated {
        spec: EventSpec,
    },
    EventStatusChanged {
        status: EventStatus,
    },
    OrderConfirmed {
        order: Order,
    },
    OrderCancelled {
        order: Order,
        reason: String,
    },
    /// The order is paid; it carries the issued tickets.
    OrderPaid {
        order: Order,
    },
    /// A paid order was refunded; the payment adapter gives `amount_minor` back.
    OrderRefunded {
        order: Order,
        amount_minor: u64,
        reason: String,
    },
    /// Money was taken that cannot pay the order; the payment adapter gives it back.
    RefundRequested {
        order: Order,
        provider: String,
        provider_ref: String,
        amount_minor: u64,
        why: String,
    },
}

impl OutboxEntry {
    /// The id of entry `seq` of `event`: a name-based UUID (v5) in the event's namespace.
    pub fn id_of(event: EventId, seq: u64) -> Uuid {
        Uuid::new_v5(&event.0, &seq.to_be_bytes())
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("an outbox entry always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<OutboxEntry, postcard::Error> {
        postcard::from_bytes(bytes)
    }

    /// Whether `record` makes an outbox entry.
    pub fn made_by(record: &Record) -> bool {
        !matches!(
            record,
            Record::HoldPlaced { .. }
                | Record::HoldReleased { .. }
                | Record::HoldsExpired { .. }
                | Record::ScansRecorded { .. }
        )
    }

    /// The entry `record` made, read from `inventory` right after it applied the record: `None`
    /// for records that change nothing downstream services see (holds placed, released,
    /// expired; scans at the gates). A creation record carries no time: its entry is stamped `now_ms`.
    pub fn after(inventory: &Inventory, record: &Record, now_ms: u64) -> Option<OutboxEntry> {
        let (at_ms, change) = match record {
            Record::Created { spec } => (now_ms, Change::EventCreated { spec: spec.clone() }),
            Record::StatusChanged { status, at_ms } => {
                (*at_ms, Change::EventStatusChanged { status: *status })
            }
            Record::HoldConfirmed {
                order_id, at_ms, ..
            } => (
                *at_ms,
                Change::OrderConfirmed {
                    order: order_of(inventory, *order_id),
                },
            ),
            Record::OrderCancelled {
                order_id,
                reason,
                at_ms,
                ..
            } => (
                *at_ms,
                Change::OrderCancelled {
                    order: order_of(inventory, *order_id),
                    reason: reason.clone(),
                },
            ),
            Record::OrderPaid {
                order_id, payment, ..
            } => (
                payment.paid_at_ms,
                Change::OrderPaid {
                    order: order_of(inventory, *order_id),
                },
            ),
            Record::OrderRefunded {
                order_id,
                amount_minor,
                reason,
                at_ms,
                ..
            } => (
                *at_ms,
                Change::OrderRefunded {
                    order: order_of(inventory, *order_id),
                    amount_minor: *amount_minor,
                    reason: reason.clone(),
                },
            ),
            Record::RefundRequested {
                order_id,
                provider,
                provider_ref,
                amount_minor,
                why,
                at_ms,
            } => (
                *at_ms,
                Change::RefundRequested {
                    order: order_of(inventory, *order_id),
                    provider: provider.clone(),
                    provider_ref: provider_ref.clone(),
                    amount_minor: *amount_minor,
                    why: why.clone(),
                },
            ),
            Record::HoldPlaced { .. }
            | Record::HoldReleased { .. }
            | Record::HoldsExpired { .. }
            | Record::ScansRecorded { .. } => {
                return None;
            }
        };
        let event_id = inventory.id();
        let seq = inventory.outbox_seq();
        Some(OutboxEntry {
            event_id,
            seq,
            id: OutboxEntry::id_of(event_id, seq),
            at_ms,
            change,
        })
    }
}

fn order_of(inventory: &Inventory, id: OrderId) -> Order {
    inventory
        .order(id)
        .unwrap_or_else(|_| panic!("order {id:?} was just applied and is not there"))
}
