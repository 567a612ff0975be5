//! boxoffice's gRPC edge: the `boxoffice.v1` services over the engine, API-key authentication,
//! the mapping of outcomes to gRPC statuses, Prometheus metrics and the server's lifecycle. It
//! decides nothing about inventory: every answer comes from an event actor.

pub mod answers;
pub mod api;
pub mod auth;
pub mod coalesce;
pub mod connections;
pub mod convert;
pub mod noop;
pub mod payments;
pub mod relay;
pub mod serve;
pub mod status;
pub mod telemetry;

pub use serve::{Running, launch, start};
