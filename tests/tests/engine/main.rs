//! The engine end to end: real actors, real group commit, real sled files, real child processes.

mod bad_input;
mod concurrency;
mod crash;
mod expiry;
mod idempotency;
mod restart;
mod storage_faults;
mod storage_sim;

use engine::Engine;
use engine::inventory::EventSpec;
use tempfile::TempDir;
use tests::config_in;

/// An engine on a fresh temporary directory (kept alive by the returned `TempDir`).
pub async fn fresh_engine(
    adjust: impl FnOnce(&mut config::Config),
) -> (Engine, TempDir, config::Config) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config_in(dir.path());
    adjust(&mut config);
    let engine = Engine::open(&config).await.expect("open engine");
    (engine, dir, config)
}

/// Creates `spec` and returns its handle.
pub async fn create(engine: &Engine, spec: EventSpec) -> engine::EventHandle {
    let id = spec.id;
    engine.create_event(spec).await.expect("create event");
    engine.event(id).expect("event exists")
}
