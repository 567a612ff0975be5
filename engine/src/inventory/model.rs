//! The domain's values: ids, the event specification, requests and the answers built from state.
//! Plain data with no behaviour beyond formatting; the rules live in `inventory`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("Identifies ", $what, ".")]
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize,
        )]
        pub struct $name(pub Uuid);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(EventId, "an event");
uuid_id!(HoldId, "a hold");
uuid_id!(OrderId, "an order");
uuid_id!(TicketId, "a ticket");

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Currency(pub [u8; 3]);

impl Currency {
    /// Parses `"EUR"`-style codes; anything but three upper-case ASCII letters is `None`.
    pub fn parse(code: &str) -> Option<Currency> {
        let bytes: [u8; 3] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Currency(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from upper-case ASCII (`parse`) or deserialized and then validated.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum EventStatus {
    Draft,
    OnSale,
    Paused,
    Closed,
}

/// `[opens_at_ms, closes_at_ms)`, milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct SaleWindow {
    pub opens_at_ms: u64,
    pub closes_at_ms: u64,
}

impl SaleWindow {
    pub fn contains(&self, now_ms: u64) -> bool {
        self.opens_at_ms <= now_ms && now_ms < self.closes_at_ms
    }
}

/// What a tier sells: a number of interchangeable tickets, or named seats.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Stock {
    General { capacity: u32 },
    Seated { sections: Vec<SectionSpec> },
}

/// A section of the seat map. Rows are listed front first: row 0 is nearest the stage.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SectionSpec {
    pub name: String,
    pub rows: Vec<RowSpec>,
}

/// A row; its seats are listed in physical order, so neighbours in the list sit side by side.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RowSpec {
    pub name: String,
    pub seats: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TierSpec {
    pub code: String,
    pub name: String,
    pub price_minor: u64,
    pub fee_minor: u64,
    pub max_per_order: u32,
    /// Empty: on sale whenever the event is. Otherwise only inside one of these windows.
    pub sale_windows: Vec<SaleWindow>,
    pub stock: Stock,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EventSpec {
    pub id: EventId,
    pub name: String,
    pub venue: String,
    pub starts_at_ms: u64,
    pub status: EventStatus,
    /// One currency for every tier of the event.
    pub currency: Currency,
    /// Tickets one customer may hold or have bought, over all tiers; `None` is no limit.
    pub customer_limit: Option<u32>,
    pub hold_ttl_ms: u64,
    /// Time a confirmed order has to be paid; unpaid past it, the engine cancels it.
    pub payment_ttl_ms: u64,
    pub tiers: Vec<TierSpec>,
    /// The IANA time zone the event takes place in, for local times on tickets and in emails.
    pub time_zone: String,
    /// Whether a ticket let in may leave (`Inventory::check_out`) and be let in again.
    pub allow_reentry: bool,
}

/// A seat by its printed labels.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct SeatRef {
    pub section: String,
    pub row: String,
    pub number: String,
}

impl fmt::Display for SeatRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.section, self.row, self.number)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum ReserveItem {
    /// `quantity` interchangeable tickets of a general-admission tier.
    General { tier: String, quantity: u32 },
    /// Exactly these seats of a seated tier.
    Seats { tier: String, seats: Vec<SeatRef> },
    /// The best `quantity` seats side by side in one row of a seated tier.
    BestAvailable { tier: String, quantity: u32 },
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub customer: String,
    pub items: Vec<ReserveItem>,
    /// `None`: the event's default TTL.
    pub hold_ttl_ms: Option<u64>,
    pub idempotency_key: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ConfirmRequest {
    pub hold_id: HoldId,
    /// The storefront's reference for the payment (method token, cart id); carried to the order.
    pub payment_ref: String,
    pub idempotency_key: Option<String>,
    /// Where the order's tickets and notices go; carried to the order.
    pub contact: Option<Contact>,
}

/// The buyer's contact details for an order, as given at confirm (checked by
/// `spec::check_contact`).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Contact {
    /// `local@domain`.
    pub email: String,
    /// Printed on the tickets; may be empty.
    pub name: String,
    /// A BCP 47 tag for the emails' language; may be empty.
    pub language: String,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub hold_id: HoldId,
    pub idempotency_key: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct CancelOrderRequest {
    pub order_id: OrderId,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

/// One tier's share of a hold or an order.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Line {
    pub tier: Arc<str>,
    pub quantity: u32,
    /// The seats, for a seated tier; empty for general admission.
    pub seats: Vec<SeatRef>,
    pub unit_price_minor: u64,
    pub unit_fee_minor: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    pub event_id: EventId,
    pub customer: Arc<str>,
    pub lines: Vec<Line>,
    pub currency: Currency,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl Hold {
    pub fn tickets(&self) -> u32 {
        self.lines.iter().map(|l| l.quantity).sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Cancelled,
    Refunded,
}

/// Why an order was cancelled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum CancelCause {
    /// `CancelOrder`, with the caller's reason.
    Requested,
    /// The payment provider declined the payment.
    PaymentDeclined,
    /// No payment came before the order's payment deadline.
    PaymentTimeout,
}

/// How an order was paid, as the payment adapter reported it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Payment {
    /// The provider that took the payment (`test`, `wallet`, `webhook`, ...).
    pub provider: String,
    /// The provider's id of the payment.
    pub provider_ref: String,
    pub amount_minor: u64,
    pub paid_at_ms: u64,
}

/// An issued ticket: one per seat, or per general-admission unit, of a paid order.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub tier: Arc<str>,
    /// `None` for general admission.
    pub seat: Option<SeatRef>,
    pub holder: Arc<str>,
    /// The signed token its QR code holds (see `crate::tickets`).
    pub token: String,
}

/// What a ticket's signed token binds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TicketClaims {
    pub ticket_id: TicketId,
    pub event_id: EventId,
    pub tier: String,
    /// `None` for general admission.
    pub seat: Option<SeatRef>,
    pub holder: String,
}

/// A payment outcome, as the payment adapter reports it on `boxoffice.payments.v1`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct PaymentResult {
    pub order_id: OrderId,
    pub provider: String,
    pub outcome: PaymentOutcome,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum PaymentOutcome {
    /// The provider took `amount_minor` in `currency` as payment `provider_ref`.
    Approved {
        provider_ref: String,
        amount_minor: u64,
        currency: Currency,
    },
    /// The provider refused the payment; nothing was taken.
    Declined { reason: String },
}

/// What a payment result did to its order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Settlement {
    /// The order is paid now and its tickets are issued.
    Paid,
    /// The order is cancelled now (declined); its tickets are back on sale.
    Cancelled,
    /// The money taken cannot pay the order (it is cancelled or refunded, already paid by
    /// another payment, or the amount or currency differ): a refund of it is requested.
    RefundRequested,
    /// Nothing changed: the result was applied before, or a decline came for an order that is no
    /// longer pending.
    Unchanged,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct RefundOrderRequest {
    pub order_id: OrderId,
    pub reason: String,
    pub idempotency_key: Option<String>,
}

/// An order with the prices it was confirmed at; later price changes never touch it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub event_id: EventId,
    pub hold_id: HoldId,
    pub customer: Arc<str>,
    pub lines: Vec<Line>,
    pub currency: Currency,
    pub subtotal_minor: u64,
    pub fees_minor: u64,
    pub total_minor: u64,
    pub payment_ref: String,
    pub status: OrderStatus,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Unpaid past this, the engine cancels the order (`CancelCause::PaymentTimeout`).
    pub payment_due_at_ms: u64,
    /// Set once paid.
    pub payment: Option<Payment>,
    /// Issued when paid; empty before. Kept after a refund, void (check-in refuses them).
    pub tickets: Vec<Ticket>,
    /// Set once cancelled: why, and the caller's or the provider's words.
    pub cancelled: Option<(CancelCause, String)>,
    /// Minor units given back by refunds.
    pub refunded_minor: u64,
    /// Where its tickets and notices go, if the storefront said. Boxed: orders are kept as the
    /// answers of confirm keys, and most have no contact.
    pub contact: Option<Box<Contact>>,
}

/// Counts for one tier. `available + held + sold == capacity` always.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TierAvailability {
    pub code: String,
    pub capacity: u32,
    pub available: u32,
    pub held: u32,
    pub sold: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SeatState {
    Free,
    Held,
    Sold,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SeatAvailability {
    pub seat: SeatRef,
    pub tier: String,
    pub state: SeatState,
}

/// What an event looks like now: its spec (with current status) and per-tier counts.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct EventSummary {
    pub id: EventId,
    pub name: String,
    pub venue: String,
    pub starts_at_ms: u64,
    pub status: EventStatus,
    pub tiers: Vec<TierAvailability>,
    pub open_holds: u32,
    pub orders: u32,
}
