//! Restart time: an event whose log holds 1,000,000 changes is rebuilt by replaying them all, and
//! after that restart's snapshot, the next restart replays only the records past it. Times printed.

use std::collections::HashSet;
use std::time::Instant;

use engine::inventory::{
    ConfirmRequest, HoldId, Inventory, Limits, OrderId, Record, ReleaseRequest,
};
use engine::wal::{LogStore, SledLog, encode_records, finish_segment};
use tests::{config_in, event, ga_tier, now_ms, reserve_best, reserve_ga, seated_tier};
use uuid::Uuid;

const CHANGES: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_logged_changes_restart_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.limits.max_open_holds_per_customer = 1_000_000;
    let limits = Limits::from(&config);
    let spec = event(vec![
        ga_tier("GA", 10_000_000, 4),
        seated_tier("S", 100, 100, 4),
    ]);
    let id = spec.id;

    // Real records from the real inventory: reservations, releases and confirmations.
    let started = Instant::now();
    let (mut inventory, created) = Inventory::create(spec, &limits).unwrap();
    engine::wal::check_format(dir.path()).unwrap();
    let log = SledLog::open(&engine::wal::log_dir(dir.path()), 64).unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut live: Vec<HoldId> = Vec::new();
    let mut pending: Vec<Record> = vec![created];
    let mut first_lsn = 0u64;
    let now = now_ms();
    let mut n = 0u64;
    while inventory.applied() < CHANGES {
        n += 1;
        let decided = match rng.u32(0..10) {
            0..=5 => {
                let req = if rng.u32(0..4) == 0 {
                    reserve_best(&format!("c{n}"), "S", rng.u32(1..=4))
                } else {
                    reserve_ga(&format!("c{n}"), "GA", rng.u32(1..=4))
                };
                let hold_id = HoldId(Uuid::from_u128(u128::from(n)));
                inventory
                    .reserve(&req, hold_id, now, &limits)
                    .ok()
                    .map(|d| {
                        live.push(hold_id);
                        d.record
                    })
            }
            6..=8 if !live.is_empty() => {
                let hold_id = live.swap_remove(rng.usize(..live.len()));
                let req = ReleaseRequest {
                    hold_id,
                    idempotency_key: None,
                };
                Some(inventory.release(&req, now, &limits).unwrap().record)
            }
            _ if !live.is_empty() => {
                let hold_id = live.swap_remove(rng.usize(..live.len()));
                let req = ConfirmRequest {
                    hold_id,
                    payment_ref: "p".into(),
                    idempotency_key: None,
                    contact: None,
                };
                let order = OrderId(Uuid::from_u128(u128::from(n)));
                Some(inventory.confirm(&req, order, now, &limits).unwrap().record)
            }
            _ => None,
        };
        pending.extend(decided.flatten());
        if pending.len() >= 10_000 || inventory.applied() >= CHANGES {
            let mut frames = Vec::new();
            encode_records(&pending, &mut frames);
            log.write_segment(
                id,
                first_lsn,
                &finish_segment(pending.len() as u32, &frames),
            )
            .unwrap();
            first_lsn += pending.len() as u64;
            pending.clear();
        }
    }
    log.flush().unwrap();
    drop(log);
    println!(
        "wrote {} records in {:?}",
        inventory.applied(),
        started.elapsed()
    );
    assert_eq!(first_lsn, inventory.applied());

    let expected_holds: HashSet<HoldId> = inventory.hold_ids().into_iter().collect();
    let check = |audit: &engine::actor::AuditReport| {
        assert_eq!(audit.summary, inventory.summary());
        assert_eq!(
            audit.hold_ids.iter().copied().collect::<HashSet<_>>(),
            expected_holds
        );
        assert_eq!(audit.orders.len(), inventory.order_list().len());
    };

    // First restart: no snapshot yet, every record replays.
    let started = Instant::now();
    let engine = engine::Engine::open(&config).await.unwrap();
    let full_replay = started.elapsed();
    let report = engine.recovery().clone();
    assert_eq!(report.records_replayed_max, CHANGES);
    check(&engine.event(id).unwrap().audit().await.unwrap());
    engine.shutdown().await;

    // Second restart: the first one wrote a snapshot, so nearly nothing replays.
    let started = Instant::now();
    let engine = engine::Engine::open(&config).await.unwrap();
    let from_snapshot = started.elapsed();
    assert!(engine.recovery().records_replayed_max < config.storage.snapshot_every_records);
    check(&engine.event(id).unwrap().audit().await.unwrap());
    engine.shutdown().await;
    println!(
        "restart with {CHANGES} logged changes: full replay {full_replay:?}, from snapshot {from_snapshot:?} ({} live holds)",
        expected_holds.len()
    );
}
