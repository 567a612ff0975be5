//! Crashes during a snapshot, a compaction and a recovery, on real sled files and real snapshot
//! files: the engine makes acknowledged changes, stops, the files are left as a crash at that
//! point leaves them (or a real process is killed during its recovery), and a new engine must
//! bring every acknowledged change back. Crashes at every single write, which only a simulated
//! store can stop at, are in `storage_sim.rs`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use engine::Engine;
use engine::inventory::{ConfirmRequest, EventId, HoldId, Inventory, Limits, OrderId, OrderStatus};
use engine::outbox::{Change, OutboxEntry};
use engine::registry::recover_event;
use engine::wal::{self, LogStore, SledLog, SnapshotDir, encode_records, finish_segment};
use tests::{config_in, event, ga_tier, now_ms, reserve_ga};
use uuid::Uuid;

use crate::create;

/// Changes the engine acknowledged: holds still open and orders confirmed.
#[derive(Default)]
struct Acknowledged {
    holds: Vec<HoldId>,
    orders: Vec<(OrderId, HoldId)>,
}

/// `count` reservations, one call each, every second one confirmed.
async fn acknowledged_changes(engine: &Engine, id: EventId, count: usize, into: &mut Acknowledged) {
    let handle = engine.event(id).unwrap();
    for i in 0..count {
        let hold = handle
            .reserve(reserve_ga(
                &format!("c{}-{i}", into.holds.len() + into.orders.len()),
                "GA",
                1,
            ))
            .await
            .unwrap();
        if i % 2 == 0 {
            into.holds.push(hold.id);
        } else {
            let order = handle
                .confirm(ConfirmRequest {
                    hold_id: hold.id,
                    payment_ref: "cart".into(),
                    idempotency_key: None,
                    contact: None,
                })
                .await
                .unwrap();
            into.orders.push((order.id, hold.id));
        }
    }
}

/// Every acknowledged hold is open and every order confirmed, after the actor's full audit.
async fn assert_acknowledged(engine: &Engine, id: EventId, acked: &Acknowledged, case: &str) {
    let report = engine.event(id).unwrap().audit().await.unwrap();
    let holds: HashSet<HoldId> = report.hold_ids.into_iter().collect();
    let orders: HashMap<OrderId, (HoldId, OrderStatus)> = report
        .orders
        .into_iter()
        .map(|(order, hold, status)| (order, (hold, status)))
        .collect();
    for hold in &acked.holds {
        assert!(
            holds.contains(hold),
            "{case}: acknowledged hold {hold:?} lost"
        );
    }
    for (order, hold) in &acked.orders {
        assert_eq!(
            orders.get(order),
            Some(&(*hold, OrderStatus::PendingPayment)),
            "{case}: acknowledged order {order:?}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn snapshot_path(data_dir: &Path, id: EventId) -> std::path::PathBuf {
    wal::snapshot_dir(data_dir).join(format!("{id}.snapshot"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_writing_a_snapshot_leaves_the_previous_one_and_a_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.storage.snapshot_every_records = 100;
    let engine = Engine::open(&config).await.unwrap();
    // One event with snapshots, one that has not reached its first.
    let snapshotted = create(&engine, event(vec![ga_tier("GA", 10_000, 4)]))
        .await
        .id();
    let fresh = create(&engine, event(vec![ga_tier("GA", 10_000, 4)]))
        .await
        .id();
    let (mut a, mut b) = (Acknowledged::default(), Acknowledged::default());
    acknowledged_changes(&engine, snapshotted, 250, &mut a).await;
    acknowledged_changes(&engine, fresh, 20, &mut b).await;
    engine.shutdown().await;
    drop(engine);
    let snapshot = std::fs::read(snapshot_path(dir.path(), snapshotted)).expect("a snapshot");
    assert!(!snapshot_path(dir.path(), fresh).exists());

    // What a crash inside `SnapshotDir::write` leaves: the temporary file cut short (or whole,
    // not yet renamed) beside the previous snapshot, or beside none for a first snapshot.
    let tmp = |id: EventId| wal::snapshot_dir(dir.path()).join(format!("{id}.snapshot.tmp"));
    std::fs::write(tmp(snapshotted), &snapshot[..snapshot.len() / 2]).unwrap();
    std::fs::write(tmp(fresh), b"\x07\x00\x00").unwrap();
    let engine = Engine::open(&config).await.unwrap();
    assert_acknowledged(&engine, snapshotted, &a, "beside a torn temporary file").await;
    assert_acknowledged(&engine, fresh, &b, "first snapshot torn").await;
    // Snapshotting goes on over the leftover temporary file.
    acknowledged_changes(&engine, snapshotted, 400, &mut a).await;
    engine.shutdown().await;
    drop(engine);
    assert_ne!(
        std::fs::read(snapshot_path(dir.path(), snapshotted)).unwrap(),
        snapshot,
        "a new snapshot replaced the old one"
    );

    std::fs::write(tmp(snapshotted), &snapshot).unwrap();
    let engine = Engine::open(&config).await.unwrap();
    assert_acknowledged(&engine, snapshotted, &a, "beside a whole temporary file").await;
    assert_acknowledged(&engine, fresh, &b, "untouched").await;
    engine.shutdown().await;
}

/// An event with `changes` acknowledged changes, no snapshot and one segment per change, in a
/// stopped engine's directory; then a snapshot of all of it written as the actor's task writes
/// it, and no compaction: the disk a crash right after `SnapshotDir::write` leaves.
async fn snapshot_without_compaction(dir: &Path, changes: usize) -> (EventId, Acknowledged, u64) {
    let config = config_in(dir);
    let engine = Engine::open(&config).await.unwrap();
    let id = create(&engine, event(vec![ga_tier("GA", 10_000, 4)]))
        .await
        .id();
    let mut acked = Acknowledged::default();
    acknowledged_changes(&engine, id, changes, &mut acked).await;
    engine.shutdown().await;
    drop(engine);
    let log = SledLog::open(&wal::log_dir(dir), 16).unwrap();
    let snapshots = SnapshotDir::open(&wal::snapshot_dir(dir)).unwrap();
    let state = recover_event(&log, &snapshots, id, now_ms())
        .unwrap()
        .inventory;
    let lsn = state.applied();
    snapshots
        .write(id, lsn, &postcard::to_allocvec(&state).unwrap())
        .unwrap();
    assert_eq!(log.segments(id).unwrap()[0].0, 0, "no segment was dropped");
    (id, acked, lsn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_snapshot_before_its_compaction_recovers_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (id, mut acked, _) = snapshot_without_compaction(dir.path(), 300).await;
    let config = config_in(dir.path());
    let engine = Engine::open(&config).await.unwrap();
    assert_eq!(
        engine.recovery().records_replayed_max,
        0,
        "every record is in the snapshot"
    );
    assert_acknowledged(&engine, id, &acked, "snapshot, segments kept").await;
    acknowledged_changes(&engine, id, 50, &mut acked).await;
    engine.shutdown().await;
    drop(engine);
    let engine = Engine::open(&config).await.unwrap();
    assert_acknowledged(&engine, id, &acked, "and after more changes").await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_compaction_leaves_a_log_that_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (id, acked, lsn) = snapshot_without_compaction(dir.path(), 300).await;
    {
        // Part of the segments the snapshot covers dropped, the rest not yet: what a crash
        // between the removals leaves on a store that keeps part of a flush.
        let log = SledLog::open(&wal::log_dir(dir.path()), 16).unwrap();
        let firsts: Vec<u64> = log.segments(id).unwrap().iter().map(|s| s.0).collect();
        let middle = firsts[firsts.len() / 2];
        assert!(middle < lsn);
        log.drop_segments_before(id, middle).unwrap();
        log.flush().unwrap();
        assert_eq!(log.segments(id).unwrap()[0].0, middle);
    }
    let engine = Engine::open(&config_in(dir.path())).await.unwrap();
    assert_acknowledged(&engine, id, &acked, "half compacted").await;
    engine.shutdown().await;
}

/// A real process killed while it recovers, again and again. The log (real records from the
/// real inventory, 60,000 of them) has no outbox entries but the creation's, as a crash between
/// the log's trees can leave it on a store that keeps part of a flush, so each recovery replays
/// and writes tens of thousands of entries again before its flush. Kill times are drawn from the
/// first 60% of the time one recovery takes in process (a child also starts), until three
/// kills landed before the process reported it was ready (at most 15 kills).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_during_recovery_recovers_everything_acknowledged() {
    const RECORDS: u64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let limits = Limits::from(&config);
    let (mut inventory, created) =
        Inventory::create(event(vec![ga_tier("GA", 10_000_000, 4)]), &limits).unwrap();
    let id = inventory.id();
    wal::check_format(dir.path()).unwrap();
    let mut acked = Acknowledged::default();
    {
        let log = SledLog::open(&wal::log_dir(dir.path()), 64).unwrap();
        let entry = OutboxEntry::after(&inventory, &created, now_ms()).unwrap();
        log.write_outbox(id, entry.seq, &entry.encode()).unwrap();
        let (mut pending, mut first_lsn, now) = (vec![created], 0u64, now_ms());
        let mut n = 0u128;
        while inventory.applied() < RECORDS {
            n += 1;
            let hold_id = HoldId(Uuid::from_u128(n));
            let req = reserve_ga(&format!("c{n}"), "GA", 1);
            pending.extend(
                inventory
                    .reserve(&req, hold_id, now, &limits)
                    .unwrap()
                    .record,
            );
            if n.is_multiple_of(4) {
                let order_id = OrderId(Uuid::from_u128(n));
                let req = ConfirmRequest {
                    hold_id,
                    payment_ref: "cart".into(),
                    idempotency_key: None,
                    contact: None,
                };
                pending.extend(
                    inventory
                        .confirm(&req, order_id, now, &limits)
                        .unwrap()
                        .record,
                );
                acked.orders.push((order_id, hold_id));
            } else {
                acked.holds.push(hold_id);
            }
            if pending.len() >= 10_000 || inventory.applied() >= RECORDS {
                let mut frames = Vec::new();
                encode_records(&pending, &mut frames);
                let segment = finish_segment(pending.len() as u32, &frames);
                log.write_segment(id, first_lsn, &segment).unwrap();
                first_lsn += pending.len() as u64;
                pending.clear();
            }
        }
        log.flush().unwrap();
    }
    // One recovery's time in process, on a copy (a child adds its start), to draw kill times
    // from.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let timed = Instant::now();
    Engine::open(&config_in(copy.path()))
        .await
        .unwrap()
        .shutdown()
        .await;
    let recovery_ms = timed.elapsed().as_millis() as u64;
    let mut rng = fastrand::Rng::with_seed(now_ms());
    let child = Path::new(env!("CARGO_BIN_EXE_crash-child"));
    let mut before_ready = 0;
    // Kills until three landed before the process was ready, the later ones sooner.
    let mut kills = 0;
    while before_ready < 3 && kills < 15 {
        let kill = kills;
        kills += 1;
        let delay_ms =
            rng.u64(recovery_ms / 20..=(recovery_ms * 6 / 10 / kills).max(recovery_ms / 20));
        let started = Instant::now();
        let mut process = Command::new(child)
            .arg(dir.path())
            .arg(rng.u64(..).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        process.kill().unwrap();
        process.wait().unwrap();
        let mut out = String::new();
        process
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        if !out.contains("READY") {
            before_ready += 1;
        }
        println!(
            "kill {kill} after {} ms{}",
            started.elapsed().as_millis(),
            if out.contains("READY") {
                ", after it was ready"
            } else {
                ", while recovering"
            }
        );
    }
    println!(
        "{before_ready} of {kills} kills landed before the process was ready (one recovery: \
         {recovery_ms} ms)"
    );
    assert!(before_ready > 0, "no kill landed during a recovery");
    let engine = Engine::open(&config).await.unwrap();
    assert_acknowledged(&engine, id, &acked, "after kills during recovery").await;
    // Every confirmed order's entry is back in the outbox, once.
    let entries = engine.outbox_after(None, 1_000_000).unwrap();
    let confirmed: HashSet<OrderId> = entries
        .iter()
        .filter_map(|e| match &e.change {
            Change::OrderConfirmed { order } if e.event_id == id => Some(order.id),
            _ => None,
        })
        .collect();
    for (order, _) in &acked.orders {
        assert!(
            confirmed.contains(order),
            "outbox entry of order {order:?} lost"
        );
    }
    let seqs: Vec<u64> = entries
        .iter()
        .filter(|e| e.event_id == id)
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "outbox seqs gap-free"
    );
    engine.shutdown().await;
}

/// Damage to what the engine acknowledged is refused at start, naming the event and the lsn,
/// never recovered around: a snapshot file changed or cut short, a segment with a changed byte,
/// the last segment cut short (a store whose writes tear at a crash; sled's do not). Put back,
/// the same files recover everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_snapshots_and_segments_are_refused_naming_event_and_lsn() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.storage.snapshot_every_records = 100;
    let engine = Engine::open(&config).await.unwrap();
    let id = create(&engine, event(vec![ga_tier("GA", 10_000, 4)]))
        .await
        .id();
    let mut acked = Acknowledged::default();
    acknowledged_changes(&engine, id, 300, &mut acked).await;
    engine.shutdown().await;
    drop(engine);
    let refusal = |config: config::Config| async move {
        match Engine::open(&config).await {
            Ok(engine) => {
                engine.shutdown().await;
                panic!("damaged storage recovered")
            }
            Err(e) => e.to_string(),
        }
    };

    let path = snapshot_path(dir.path(), id);
    let snapshot = std::fs::read(&path).unwrap();
    let lsn = u64::from_le_bytes(snapshot[..8].try_into().unwrap());
    let mut changed = snapshot.clone();
    *changed.last_mut().unwrap() ^= 0x40;
    std::fs::write(&path, &changed).unwrap();
    let err = refusal(config.clone()).await;
    assert!(
        err.contains(&id.to_string()) && err.contains(&format!("snapshot of lsn {lsn}")),
        "{err}"
    );
    std::fs::write(&path, &snapshot[..snapshot.len() - 3]).unwrap();
    let err = refusal(config.clone()).await;
    assert!(err.contains(&format!("snapshot of lsn {lsn}")), "{err}");
    std::fs::write(&path, &snapshot).unwrap();

    let segments = {
        let log = SledLog::open(&wal::log_dir(dir.path()), 16).unwrap();
        log.segments(id).unwrap()
    };
    assert!(segments.len() >= 3, "{} segments", segments.len());
    for (case, (first, original)) in [
        ("changed", segments[segments.len() / 2].clone()),
        ("cut short", segments[segments.len() - 1].clone()),
    ] {
        let mut bad = original.clone();
        if case == "changed" {
            *bad.last_mut().unwrap() ^= 0x40;
        } else {
            bad.truncate(bad.len() - 5);
        }
        let put = |bytes: &[u8]| {
            let log = SledLog::open(&wal::log_dir(dir.path()), 16).unwrap();
            log.write_segment(id, first, bytes).unwrap();
            log.flush().unwrap();
        };
        put(&bad);
        let err = refusal(config.clone()).await;
        assert!(
            err.contains(&id.to_string()) && err.contains(&format!("segment from lsn {first}:")),
            "{case}: {err}"
        );
        put(&original);
    }
    let engine = Engine::open(&config).await.unwrap();
    assert_acknowledged(&engine, id, &acked, "the damage undone").await;
    engine.shutdown().await;
}

/// Regression: an outbox entry whose change the log does not hold (a store that kept the entry
/// and lost its record, or a segment removed by hand) was left in the outbox for the relay to
/// publish, and its seq, so its id, went to the next change. Recovery removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_removes_outbox_entries_of_changes_the_log_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let engine = Engine::open(&config).await.unwrap();
    let id = create(&engine, event(vec![ga_tier("GA", 100, 4)]))
        .await
        .id();
    let mut acked = Acknowledged::default();
    acknowledged_changes(&engine, id, 6, &mut acked).await;
    let entries = engine.outbox_after(None, 100).unwrap();
    let last = entries.last().unwrap().clone();
    assert_eq!(last.seq, 4, "the creation and three confirms");
    engine.shutdown().await;
    drop(engine);
    {
        let log = SledLog::open(&wal::log_dir(dir.path()), 16).unwrap();
        let mut ghost = last.clone();
        ghost.seq = 5;
        ghost.id = OutboxEntry::id_of(id, 5);
        log.write_outbox(id, 5, &ghost.encode()).unwrap();
        log.flush().unwrap();
    }
    let engine = Engine::open(&config).await.unwrap();
    let seqs: Vec<u64> = engine
        .outbox_after(None, 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "the entry without a change is gone");
    acknowledged_changes(&engine, id, 2, &mut acked).await;
    let fifth = engine.outbox_after(Some((id, 4)), 100).unwrap();
    let (order, _) = acked.orders.last().unwrap();
    assert!(
        matches!(&fifth[..], [e] if e.seq == 5
            && matches!(&e.change, Change::OrderConfirmed { order: o } if o.id == *order)),
        "seq 5 is the next change's: {fifth:?}"
    );
    assert_acknowledged(&engine, id, &acked, "after the ghost entry").await;
    engine.shutdown().await;
}
