//! The engine's answer when a request does not get a business outcome: the rejection itself, or
//! why the engine could not decide (unknown event, overload, timeout, storage).

use crate::inventory::{EventId, Rejection};
use crate::wal::StorageError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The inventory said no; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("event {0} not found")]
    EventNotFound(EventId),
    #[error("the engine holds {0} events, its limit")]
    TooManyEvents(u32),
    /// Admission control: the event already has its limit of requests in flight.
    #[error(
        "event {event} has {limit} requests in flight, its limit; retry after {retry_after_ms} ms"
    )]
    Overloaded {
        event: EventId,
        limit: u32,
        retry_after_ms: u64,
    },
    /// The actor did not answer in time; the request may still take effect. Retry with the same
    /// idempotency key to learn its outcome.
    #[error(
        "event {event} did not answer within {timeout_ms} ms; retry with the same idempotency key"
    )]
    Timeout { event: EventId, timeout_ms: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The engine is still bringing its events back from disk; retry shortly.
    #[error("the engine is recovering its events from disk; retry after {retry_after_ms} ms")]
    Recovering { retry_after_ms: u64 },
    /// The state of every event together is at `engine.max_state_mib`: no new holds or events
    /// until holds expire or are released, or an operator raises the limit.
    #[error(
        "event state takes {used_mib} MiB, the engine's limit of {limit_mib} MiB (engine.max_state_mib); retry after holds expire"
    )]
    MemoryLimit { used_mib: u64, limit_mib: u64 },
    #[error("the actor of event {event} did not start: {reason}")]
    ActorStart { event: EventId, reason: String },
}
