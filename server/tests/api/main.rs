//! The gRPC API over a real `boxoffice serve` process on loopback: real sockets, real sled files,
//! real signals.

mod raw;
mod support;

mod bad_input;
mod bounded;
mod check_in;
mod connections;
mod deadline;
mod flow;
mod full_disk;
mod health;
mod idempotency;
mod order_event_outages;
mod order_events;
mod overload;
mod payments;
mod startup;
mod stream;
mod stream_ends;
