//! The gRPC API over a real `boxoffice serve` process on loopback: real sockets, real sled files,
//! real signals.

mod support;

mod bad_input;
mod deadline;
mod flow;
mod health;
mod idempotency;
mod overload;
mod stream;
