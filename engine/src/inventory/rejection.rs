//! Why the inventory said no. A rejection is a business outcome, not a failure: the request changed
//! nothing, and the message tells a storefront developer what to do about it.

use serde::{Deserialize, Serialize};

use super::model::{EventStatus, HoldId, OrderId, OrderStatus, SeatRef, TicketId};

/// How much of a bad value a message quotes.
const QUOTE_BYTES: usize = 48;

/// A value from a request as a rejection quotes it: whole if short, else its first bytes and its
/// length, so that a 20 KB tier code never comes back in a status trailer.
pub fn quote(value: &str) -> String {
    if value.len() <= QUOTE_BYTES + 16 {
        return value.to_string();
    }
    format!("{}... ({} bytes)", prefix(value, QUOTE_BYTES), value.len())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl SeatRef {
    /// The seat as a rejection quotes it (see [`quote`]).
    pub fn quoted(&self) -> SeatRef {
        SeatRef {
            section: quote(&self.section),
            row: quote(&self.row),
            number: quote(&self.number),
        }
    }
}

/// Every way a request can be refused. The variant is stable and machine-readable (the gRPC edge
/// maps each to a status code and reason); the wording of the message may improve.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    // --- the request itself is malformed ---
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("unknown tier `{0}`")]
    UnknownTier(String),
    #[error("unknown seat {0}")]
    UnknownSeat(SeatRef),
    #[error("seat {seat} belongs to tier `{actual}`, not `{requested}`")]
    SeatNotInTier {
        seat: SeatRef,
        requested: String,
        actual: String,
    },
    #[error("seat {0} is named more than once in the request")]
    DuplicateSeat(SeatRef),
    #[error("tier `{tier}` is {kind}; use a {expected} item for it")]
    WrongItemKind {
        tier: String,
        kind: &'static str,
        expected: &'static str,
    },
    #[error("{requested} tickets of tier `{tier}` exceed its maximum of {max} per order")]
    MaxPerOrder {
        tier: String,
        requested: u32,
        max: u32,
    },
    #[error("hold ttl {requested_ms} ms is outside {min_ms}..={max_ms} ms")]
    HoldTtlOutOfRange {
        requested_ms: u64,
        min_ms: u64,
        max_ms: u64,
    },
    #[error("idempotency key was first used with a different request; use a new key")]
    IdempotencyKeyReused,

    // --- the event ---
    #[error("event already exists")]
    EventExists,
    #[error("event is {0:?}, not on sale")]
    NotOnSale(EventStatus),
    #[error("tier `{0}` is outside its sale windows")]
    OutsideSaleWindow(String),
    #[error("event status cannot change from {from:?} to {to:?}")]
    StatusChange { from: EventStatus, to: EventStatus },

    // --- inventory ---
    #[error("tier `{tier}` has {available} tickets left, {requested} requested")]
    SoldOut {
        tier: String,
        requested: u32,
        available: u32,
    },
    #[error("seat {0} is taken")]
    SeatTaken(SeatRef),
    #[error("tier `{tier}` has no row with {quantity} free seats")]
    NoSeatsTogether { tier: String, quantity: u32 },

    // --- limits ---
    #[error("customer would hold {would_have} tickets, over the event's limit of {limit}")]
    CustomerLimit { limit: u32, would_have: u32 },
    #[error("customer already has {limit} open holds for this event; confirm or release one")]
    CustomerHoldLimit { limit: u32 },
    #[error("event has {limit} open holds, its limit; retry after some expire")]
    EventHoldLimit { limit: u32 },

    // --- holds and orders ---
    #[error("hold {0} not found")]
    HoldNotFound(HoldId),
    #[error("hold {0} has expired")]
    HoldExpired(HoldId),
    #[error("hold {0} was released")]
    HoldReleased(HoldId),
    #[error("hold {hold} was already confirmed as order {order}")]
    HoldAlreadyConfirmed { hold: HoldId, order: OrderId },
    #[error("order {0} not found")]
    OrderNotFound(OrderId),
    #[error("order {order} is {status:?} and cannot be cancelled")]
    OrderNotCancellable { order: OrderId, status: OrderStatus },
    #[error("order {order} is {status:?}; only a paid order can be refunded")]
    OrderNotRefundable { order: OrderId, status: OrderStatus },

    // --- check-in ---
    #[error("the token is not a ticket of this event, or not as issued (ticket id {0} as read)")]
    InvalidTicket(TicketId),
    #[error("ticket {ticket} is void: its order is {status:?}")]
    TicketVoid {
        ticket: TicketId,
        status: OrderStatus,
    },
    #[error("check-in limit: {0}")]
    CheckInLimit(String),
    #[error("the event does not allow re-entry: nobody is checked out")]
    ReentryNotAllowed,
    #[error("ticket {0} is not in: never checked in, or checked out since")]
    NotCheckedIn(TicketId),
    #[error("scan {scan_id} at gate {gate} is already another kind of scan of ticket {ticket}")]
    ScanIdTaken {
        ticket: TicketId,
        gate: String,
        scan_id: String,
    },
    #[error("ticket {ticket} was checked in at gate {gate} by scan {scan_id}")]
    AlreadyCheckedIn {
        ticket: TicketId,
        gate: String,
        scan_id: String,
        at_ms: u64,
    },
}
