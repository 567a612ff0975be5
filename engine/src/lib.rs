//! The boxoffice engine: one actor per event owns that event's inventory in memory and makes every
//! change durable in a sled write-ahead log before anyone hears about it.
//!
//! `inventory` is the pure state machine; `wal` is the log on disk; `commit` shares one fsync among
//! every record written since the previous one; `actor` is the thin shell that feeds requests to an
//! inventory and its records to the log; `registry` spawns and recovers the actors;
//! `outbox` builds the entries of changes that services downstream hear of.

pub mod actor;
pub mod commit;
pub mod error;
pub mod inventory;
pub mod journal;
pub mod journal_files;
pub mod memory;
pub mod outbox;
pub mod registry;
pub mod tickets;
pub mod wal;

pub use error::Error;
pub use registry::{Engine, EventHandle, RecoveryReport};
