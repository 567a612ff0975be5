//! The one mapping from engine outcomes to what a gRPC client sees: a status code, a stable
//! machine-readable reason (`google.rpc.ErrorInfo`, domain "boxoffice"), a message a storefront
//! developer can act on, and for overload a retry hint. The reasons are the contract documented in
//! `proto/boxoffice/v1/reservations.proto`; keep the two in step.

use std::collections::HashMap;
use std::time::Duration;

use engine::Error;
use engine::inventory::Rejection;
use engine::inventory::rejection::prefix;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Retry hint when event state is at the engine's memory limit: about when holds start expiring.
const MEMORY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `ErrorInfo` domain of every boxoffice reason.
pub const ERROR_DOMAIN: &str = "boxoffice";

/// Every reason this server sends; each must be documented in the proto files (tested).
pub const REASONS: &[&str] = &[
    "INVALID_ARGUMENT",
    "MAX_PER_ORDER",
    "IDEMPOTENCY_KEY_REUSED",
    "EVENT_EXISTS",
    "NOT_ON_SALE",
    "INVALID_STATUS_CHANGE",
    "SOLD_OUT",
    "SEAT_TAKEN",
    "NO_SEATS_TOGETHER",
    "CUSTOMER_LIMIT",
    "CUSTOMER_HOLD_LIMIT",
    "EVENT_HOLD_LIMIT",
    "HOLD_NOT_FOUND",
    "HOLD_EXPIRED",
    "HOLD_RELEASED",
    "HOLD_ALREADY_CONFIRMED",
    "ORDER_NOT_FOUND",
    "ORDER_NOT_CANCELLABLE",
    "ORDER_NOT_REFUNDABLE",
    "INVALID_TICKET",
    "TICKET_VOID",
    "ALREADY_CHECKED_IN",
    "CHECK_IN_LIMIT",
    "EVENT_NOT_FOUND",
    "TOO_MANY_EVENTS",
    "OVERLOADED",
    "TIMEOUT",
    "STORAGE",
    "SHUTTING_DOWN",
    "RECOVERING",
    "MEMORY_LIMIT",
    "MALFORMED_STREAM",
    "SLOW_READER",
    "ACTOR_START",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
];

/// Longest message a refusal carries, bytes. Messages quote at most a short prefix of a bad
/// value (`quote`); this cap is the guarantee that a status always fits in a client's metadata
/// limits, whatever the input was.
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Longest metadata value of a refusal, bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 128;
/// The most a refusal takes encoded as a stream item's `ErrorDetail`: its message and at most
/// four metadata entries at their caps, with room for the code, the reason and the keys.
pub const MAX_DETAIL_BYTES: usize = MAX_MESSAGE_BYTES + 4 * (MAX_METADATA_VALUE_BYTES + 64) + 128;
/// A value as quoted in a message: whole if short, else its first bytes and its length.
pub use engine::inventory::rejection::quote;

fn capped(s: &str, max: usize) -> String {
    if s.len() <= max {
        s.to_string()
    } else {
        format!("{}...", prefix(s, max - 3))
    }
}

/// A refusal on its way to a client, as a unary status or as a stream item's `ErrorDetail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub reason: &'static str,
    pub message: String,
    pub metadata: HashMap<String, String>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            metadata: HashMap::new(),
            retry_after: None,
        }
    }

    /// A malformed request; `message` names the field.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidArgument, "INVALID_ARGUMENT", message)
    }

    pub fn with(mut self, key: &str, value: impl ToString) -> ApiError {
        let value = capped(&value.to_string(), MAX_METADATA_VALUE_BYTES);
        self.metadata.insert(key.to_string(), value);
        self
    }

    pub fn retry_after(mut self, after: Duration) -> ApiError {
        self.retry_after = Some(after);
        self.with("retry_after_ms", after.as_millis())
    }

    /// The stream item form of this refusal.
    pub fn to_detail(&self) -> proto::v1::ErrorDetail {
        proto::v1::ErrorDetail {
            code: self.code as i32,
            reason: self.reason.to_string(),
            message: capped(&self.message, MAX_MESSAGE_BYTES),
            metadata: self.metadata.clone(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut details = ErrorDetails::with_error_info(e.reason, ERROR_DOMAIN, e.metadata);
        if let Some(after) = e.retry_after {
            details.set_retry_info(Some(after));
        }
        Status::with_error_details(e.code, capped(&e.message, MAX_MESSAGE_BYTES), details)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let message = e.to_string();
        match e {
            Error::Rejected(r) => rejection(r, message),
            Error::EventNotFound(id) => {
                ApiError::new(Code::NotFound, "EVENT_NOT_FOUND", message).with("event_id", id)
            }
            Error::TooManyEvents(limit) => {
                ApiError::new(Code::ResourceExhausted, "TOO_MANY_EVENTS", message)
                    .with("limit", limit)
            }
            Error::Overloaded {
                event,
                retry_after_ms,
                ..
            } => ApiError::new(Code::ResourceExhausted, "OVERLOADED", message)
                .with("event_id", event)
                .retry_after(Duration::from_millis(retry_after_ms)),
            Error::Timeout { event, .. } => {
                ApiError::new(Code::Unavailable, "TIMEOUT", message).with("event_id", event)
            }
            Error::Storage(_) => ApiError::new(Code::Internal, "STORAGE", message),
            Error::ShuttingDown => ApiError::new(Code::Unavailable, "SHUTTING_DOWN", message),
            Error::Recovering { retry_after_ms } => {
                ApiError::new(Code::Unavailable, "RECOVERING", message)
                    .retry_after(Duration::from_millis(retry_after_ms))
            }
            Error::MemoryLimit {
                used_mib,
                limit_mib,
            } => ApiError::new(Code::ResourceExhausted, "MEMORY_LIMIT", message)
                .with("used_mib", used_mib)
                .with("limit_mib", limit_mib)
                .retry_after(MEMORY_RETRY_AFTER),
            Error::ActorStart { event, .. } => {
                ApiError::new(Code::Internal, "ACTOR_START", message).with("event_id", event)
            }
        }
    }
}

/// One arm per rejection: a business outcome with its own code and reason.
fn rejection(r: Rejection, message: String) -> ApiError {
    use Code::{AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted};
    let new = |code, reason| ApiError::new(code, reason, message.clone());
    match r {
        Rejection::Invalid(_)
        | Rejection::WrongItemKind { .. }
        | Rejection::HoldTtlOutOfRange { .. } => new(InvalidArgument, "INVALID_ARGUMENT"),
        Rejection::UnknownTier(tier) => {
            new(InvalidArgument, "INVALID_ARGUMENT").with("tier_code", tier)
        }
        Rejection::UnknownSeat(seat)
        | Rejection::SeatNotInTier { seat, .. }
        | Rejection::DuplicateSeat(seat) => {
            new(InvalidArgument, "INVALID_ARGUMENT").with("seat", seat)
        }
        Rejection::MaxPerOrder { tier, max, .. } => new(InvalidArgument, "MAX_PER_ORDER")
            .with("tier_code", tier)
            .with("max_per_order", max),
        Rejection::IdempotencyKeyReused => new(InvalidArgument, "IDEMPOTENCY_KEY_REUSED"),
        Rejection::EventExists => new(AlreadyExists, "EVENT_EXISTS"),
        Rejection::NotOnSale(_) => new(FailedPrecondition, "NOT_ON_SALE"),
        Rejection::OutsideSaleWindow(tier) => {
            new(FailedPrecondition, "NOT_ON_SALE").with("tier_code", tier)
        }
        Rejection::StatusChange { .. } => new(FailedPrecondition, "INVALID_STATUS_CHANGE"),
        Rejection::SoldOut {
            tier, available, ..
        } => new(FailedPrecondition, "SOLD_OUT")
            .with("tier_code", tier)
            .with("available", available),
        Rejection::SeatTaken(seat) => new(FailedPrecondition, "SEAT_TAKEN").with("seat", seat),
        Rejection::NoSeatsTogether { tier, .. } => {
            new(FailedPrecondition, "NO_SEATS_TOGETHER").with("tier_code", tier)
        }
        Rejection::CustomerLimit { limit, .. } => {
            new(FailedPrecondition, "CUSTOMER_LIMIT").with("limit", limit)
        }
        Rejection::CustomerHoldLimit { limit } => {
            new(FailedPrecondition, "CUSTOMER_HOLD_LIMIT").with("limit", limit)
        }
        Rejection::EventHoldLimit { limit } => {
            new(ResourceExhausted, "EVENT_HOLD_LIMIT").with("limit", limit)
        }
        Rejection::HoldNotFound(hold) => new(NotFound, "HOLD_NOT_FOUND").with("hold_id", hold),
        Rejection::HoldExpired(hold) => {
            new(FailedPrecondition, "HOLD_EXPIRED").with("hold_id", hold)
        }
        Rejection::HoldReleased(hold) => {
            new(FailedPrecondition, "HOLD_RELEASED").with("hold_id", hold)
        }
        Rejection::HoldAlreadyConfirmed { hold, order } => {
            new(FailedPrecondition, "HOLD_ALREADY_CONFIRMED")
                .with("hold_id", hold)
                .with("order_id", order)
        }
        Rejection::OrderNotFound(order) => new(NotFound, "ORDER_NOT_FOUND").with("order_id", order),
        Rejection::OrderNotCancellable { order, .. } => {
            new(FailedPrecondition, "ORDER_NOT_CANCELLABLE").with("order_id", order)
        }
        Rejection::OrderNotRefundable { order, status } => {
            new(FailedPrecondition, "ORDER_NOT_REFUNDABLE")
                .with("order_id", order)
                .with("status", crate::convert::order_status_name(status))
        }
        Rejection::InvalidTicket(ticket) => {
            new(InvalidArgument, "INVALID_TICKET").with("ticket_id", ticket)
        }
        Rejection::CheckInLimit(_) => new(ResourceExhausted, "CHECK_IN_LIMIT"),
        Rejection::TicketVoid { ticket, status } => new(FailedPrecondition, "TICKET_VOID")
            .with("ticket_id", ticket)
            .with("status", crate::convert::order_status_name(status)),
        Rejection::ReentryNotAllowed => new(FailedPrecondition, "REENTRY_NOT_ALLOWED"),
        Rejection::NotCheckedIn(ticket) => {
            new(FailedPrecondition, "NOT_CHECKED_IN").with("ticket_id", ticket)
        }
        Rejection::ScanIdTaken {
            ticket,
            gate,
            scan_id,
        } => new(FailedPrecondition, "SCAN_ID_TAKEN")
            .with("ticket_id", ticket)
            .with("gate_id", gate)
            .with("scan_id", scan_id),
        Rejection::AlreadyCheckedIn {
            ticket,
            gate,
            scan_id,
            at_ms,
        } => new(FailedPrecondition, "ALREADY_CHECKED_IN")
            .with("ticket_id", ticket)
            .with("gate_id", gate)
            .with("scan_id", scan_id)
            .with("checked_in_at", kafka::rfc3339_ms(at_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proto comments are the documented contract; every reason sent must be listed there.
    #[test]
    fn every_reason_is_documented_in_the_proto_files() {
        let docs = [
            include_str!("../../proto/boxoffice/v1/reservations.proto"),
            include_str!("../../proto/boxoffice/v1/event_admin.proto"),
            include_str!("../../proto/boxoffice/v1/check_in.proto"),
        ]
        .concat();
        for reason in REASONS {
            assert!(
                docs.contains(&format!("// - {reason} ("))
                    || docs.contains(&format!(", {reason} (")),
                "{reason} is not documented in proto/boxoffice/v1"
            );
        }
    }

    #[test]
    fn overload_carries_a_retry_hint() {
        let e = ApiError::from(Error::Overloaded {
            event: engine::inventory::EventId(uuid::Uuid::nil()),
            limit: 8,
            retry_after_ms: 5,
        });
        assert_eq!(e.code, Code::ResourceExhausted);
        assert_eq!(e.reason, "OVERLOADED");
        assert_eq!(e.retry_after, Some(Duration::from_millis(5)));
        assert_eq!(e.metadata["retry_after_ms"], "5");
        assert!(REASONS.contains(&e.reason));
    }
}
