//! The storage-fault simulation in the suite: a bounded run of random seeds, a check that a seed
//! replays to the same run, and crashes at every write of a snapshot, a compaction and a
//! recovery over the simulated store (`tests::sim`), where a crash can keep any prefix of the
//! unflushed writes. The same faults on real sled files are in `storage_faults.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engine::commit::{GroupCommit, Waiter};
use engine::inventory::{ConfirmRequest, HoldId, Inventory, Limits, OrderId, Record};
use engine::outbox::OutboxEntry;
use engine::registry::{RecoveredEvent, recover_event};
use engine::wal::{LogStore, SnapshotStore, StorageError, encode_records};
use tests::sim::{Faults, SimOptions, SimStorage, is_crash, state_fingerprint};
use tests::{event, ga_tier, now_ms, reserve_ga};
use uuid::Uuid;

/// Random seeds for a bounded time (`BOXOFFICE_SIM_SECONDS`, 8 by default), or the one seed
/// `BOXOFFICE_SIM_SEED` names, replayed.
#[test]
fn storage_sim_random_seeds_lose_nothing_acknowledged() {
    tests::sim::report_panics();
    let steps: u64 = std::env::var("BOXOFFICE_SIM_STEPS")
        .ok()
        .map(|s| s.parse().expect("BOXOFFICE_SIM_STEPS is a number"))
        .unwrap_or(2_000);
    let (seed, runs, deadline) = match std::env::var("BOXOFFICE_SIM_SEED") {
        Ok(seed) => (
            seed.parse().expect("BOXOFFICE_SIM_SEED is a number"),
            1,
            None,
        ),
        Err(_) => {
            let seconds: u64 = std::env::var("BOXOFFICE_SIM_SECONDS")
                .ok()
                .map(|s| s.parse().expect("BOXOFFICE_SIM_SECONDS is a number"))
                .unwrap_or(8);
            (
                now_ms(),
                u64::MAX,
                Some(Instant::now() + Duration::from_secs(seconds)),
            )
        }
    };
    println!("storage simulation: seeds from {seed}, {steps} steps a run");
    match tests::sim::run_many(seed, runs, steps, deadline, false, |_, _| {}) {
        Ok(total) => {
            println!("{total}");
            assert!(total.steps >= steps, "not one run finished");
            assert!(total.crashes > 0 && total.acknowledged > 0, "{total}");
        }
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn storage_sim_same_seed_same_run() {
    let run = |seed| {
        tests::sim::Sim::new(SimOptions {
            seed,
            steps: 1_500,
            verbose: false,
        })
        .run()
        .unwrap_or_else(|f| panic!("{f}"))
    };
    let first = run(42);
    assert_eq!(first, run(42));
    assert!(first.crashes > 0 && first.snapshots > 0, "{first}");
    assert_ne!(first.trace, run(43).trace);
}

/// One event over the simulated store, its changes queued and committed by a real
/// `GroupCommit` without its thread: what an actor and the commit thread do, step by step.
struct Rig {
    storage: SimStorage,
    commit: GroupCommit,
    inv: Inventory,
    limits: Limits,
    /// Records acknowledged: their round flushed.
    acked: Arc<AtomicU64>,
    /// The state after each lsn: `applied -> fingerprint`.
    history: BTreeMap<u64, u64>,
    made: BTreeMap<u64, OutboxEntry>,
    n: u128,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        let limits = Limits::default();
        let (inv, created) =
            Inventory::create(event(vec![ga_tier("GA", 10_000, 4)]), &limits).unwrap();
        let mut rig = Rig {
            storage: SimStorage::default(),
            commit: GroupCommit::without_thread(),
            inv,
            limits,
            acked: Arc::new(AtomicU64::new(0)),
            history: BTreeMap::new(),
            made: BTreeMap::new(),
            n: 0,
            now: now_ms(),
        };
        rig.submit(created);
        assert!(rig.commit.run_round(&rig.storage));
        rig
    }

    fn id(&self) -> engine::inventory::EventId {
        self.inv.id()
    }

    /// Queues a record already applied, with its outbox entry, as `EventState::commit`.
    fn submit(&mut self, record: Record) {
        let mut frames = Vec::new();
        let mut outbox = Vec::new();
        encode_records(std::slice::from_ref(&record), &mut frames);
        if let Some(entry) = OutboxEntry::after(&self.inv, &record, self.now) {
            outbox.push((entry.seq, entry.encode()));
            self.made.insert(entry.seq, entry);
        }
        let applied = self.inv.applied();
        self.history.insert(applied, state_fingerprint(&self.inv));
        let acked = self.acked.clone();
        let waiter: Waiter = Box::new(move |durable| {
            if durable.is_ok() {
                acked.fetch_max(applied, Ordering::Relaxed);
            }
        });
        self.commit.submit(
            self.id(),
            applied - 1,
            1,
            &frames,
            &mut outbox,
            Some(waiter),
        );
    }

    /// A reservation and its confirmation, one message each (two records, one outbox entry).
    fn change(&mut self) {
        for step in 0..2 {
            self.n += 1;
            let hold_id = HoldId(Uuid::from_u128(self.n));
            let record = if step == 0 {
                let req = reserve_ga(&format!("c{}", self.n), "GA", 1);
                self.inv
                    .reserve(&req, hold_id, self.now, &self.limits)
                    .unwrap()
                    .record
            } else {
                let req = ConfirmRequest {
                    hold_id: HoldId(Uuid::from_u128(self.n - 1)),
                    payment_ref: "cart".into(),
                    idempotency_key: None,
                    contact: None,
                };
                let order_id = OrderId(Uuid::from_u128(self.n));
                self.inv
                    .confirm(&req, order_id, self.now, &self.limits)
                    .unwrap()
                    .record
            };
            self.submit(record.expect("a change"));
        }
    }

    /// `count` changes in `count` rounds: `count` segments of two records.
    fn changes_in_rounds(&mut self, count: usize) {
        for _ in 0..count {
            self.change();
            assert!(self.commit.run_round(&self.storage));
        }
    }

    /// What the actor's snapshot task does once the log holds everything it covers.
    fn snapshot(&self) -> Result<u64, StorageError> {
        let lsn = self.inv.applied();
        assert_eq!(
            self.acked.load(Ordering::Relaxed),
            lsn,
            "snapshot of records not durable"
        );
        let state = postcard::to_allocvec(&self.inv).unwrap();
        SnapshotStore::write(&self.storage, self.id(), lsn, &state)?;
        Ok(lsn)
    }

    fn recover(&self, storage: &SimStorage) -> Result<RecoveredEvent, StorageError> {
        recover_event(storage, storage, self.id(), self.now)
    }

    /// The recovered event holds every acknowledged record, is the state decided at its lsn,
    /// and its outbox holds every entry the broker has not acknowledged, as made.
    fn check(&self, storage: &SimStorage, recovered: &RecoveredEvent, case: &str) {
        let inv = &recovered.inventory;
        let n = inv.applied();
        let acked = self.acked.load(Ordering::Relaxed);
        assert!(
            n >= acked,
            "{case}: recovered {n} records of {acked} acknowledged"
        );
        assert_eq!(
            self.history.get(&n),
            Some(&state_fingerprint(inv)),
            "{case}: the state recovered at lsn {n} is not the one decided"
        );
        let stored = storage.outbox(self.id());
        for seq in storage.outbox_acked(self.id()).unwrap() + 1..=inv.outbox_seq() {
            let entry =
                OutboxEntry::decode(stored.get(&seq).unwrap_or_else(|| {
                    panic!("{case}: outbox entry {seq} missing after recovery")
                }))
                .unwrap();
            assert_eq!(entry.change, self.made[&seq].change, "{case}: entry {seq}");
        }
        assert!(
            stored.keys().all(|seq| *seq <= inv.outbox_seq()),
            "{case}: outbox entries of changes the log lost remain"
        );
    }
}

#[test]
fn sim_crash_while_writing_a_snapshot_keeps_the_previous_one() {
    let mut rig = Rig::new();
    rig.changes_in_rounds(5);
    let first = rig.snapshot().unwrap();
    rig.commit.submit_compaction(rig.id(), first);
    rig.changes_in_rounds(5); // the first of these rounds carries the compaction
    assert_eq!(rig.storage.durable_segments(rig.id()).len(), 5);
    rig.storage.arm(Faults {
        crash_after_writes: Some(0),
        ..Faults::default()
    });
    let err = rig.snapshot().unwrap_err();
    assert!(is_crash(&err), "{err}");
    rig.storage.crash_keeping(0, None);
    let recovered = rig.recover(&rig.storage).unwrap();
    assert_eq!(
        recovered.snapshot_lsn, first,
        "the previous snapshot is the one read"
    );
    assert_eq!(recovered.inventory.applied(), rig.inv.applied());
    rig.check(&rig.storage, &recovered, "crash while writing a snapshot");
}

#[test]
fn sim_crash_after_a_snapshot_before_its_compaction() {
    let mut rig = Rig::new();
    rig.changes_in_rounds(6);
    let lsn = rig.snapshot().unwrap();
    rig.commit.submit_compaction(rig.id(), lsn);
    rig.storage.crash_keeping(0, None); // the compaction's round never ran
    assert_eq!(rig.storage.durable_segments(rig.id()).len(), 7);
    let recovered = rig.recover(&rig.storage).unwrap();
    assert_eq!(recovered.snapshot_lsn, lsn);
    rig.check(&rig.storage, &recovered, "crash before compaction");
    // The next process compacts, and recovers the same from what is left.
    let commit = GroupCommit::without_thread();
    commit.submit_compaction(rig.id(), lsn);
    assert!(commit.run_round(&rig.storage));
    assert!(rig.storage.durable_segments(rig.id()).is_empty());
    let again = rig.recover(&rig.storage).unwrap();
    rig.check(&rig.storage, &again, "compacted after the crash");
}

#[test]
fn sim_crash_at_every_write_of_a_compaction() {
    let mut rig = Rig::new();
    rig.changes_in_rounds(6);
    let lsn = rig.snapshot().unwrap();
    rig.changes_in_rounds(2);
    // Dropping 7 segments is 7 writes, then the flush.
    let mut cases = 0;
    for crash_at in 0..=7 {
        let disk = rig.storage.copy();
        let commit = GroupCommit::without_thread();
        commit.submit_compaction(rig.id(), lsn);
        disk.arm(Faults {
            crash_after_writes: Some(crash_at),
            ..Faults::default()
        });
        assert!(commit.run_round(&disk));
        assert!(disk.crashed(), "crash at write {crash_at}");
        for kept in 0..=disk.pending_writes() {
            let after = disk.copy();
            after.crash_keeping(kept, None);
            let recovered = rig.recover(&after).unwrap();
            rig.check(
                &after,
                &recovered,
                &format!("compaction crashed at write {crash_at}, {kept} writes kept"),
            );
            assert_eq!(recovered.inventory.applied(), rig.inv.applied());
            cases += 1;
        }
    }
    assert_eq!(cases, (1..=8).sum::<usize>());
}

#[test]
fn sim_crash_at_every_write_of_a_recovery_then_recover_again() {
    let mut rig = Rig::new();
    rig.changes_in_rounds(3);
    // One round of four confirmations whose crash keeps the segment and none of its outbox
    // entries: recovery must write the four again (four writes, then a flush).
    for _ in 0..4 {
        rig.change();
    }
    let before = rig.acked.load(Ordering::Relaxed);
    rig.storage.arm(Faults {
        crash_after_writes: Some(1),
        ..Faults::default()
    });
    assert!(rig.commit.run_round(&rig.storage));
    assert_eq!(
        rig.acked.load(Ordering::Relaxed),
        before,
        "nothing of a crashed round is acknowledged"
    );
    rig.storage.crash_keeping(1, None);
    let mut cases = 0;
    for crash_at in 0..=4 {
        let disk = rig.storage.copy();
        disk.arm(Faults {
            crash_after_writes: Some(crash_at),
            ..Faults::default()
        });
        let err = rig.recover(&disk).unwrap_err();
        assert!(is_crash(&err), "{err}");
        for kept in 0..=disk.pending_writes() {
            let after = disk.copy();
            after.crash_keeping(kept, None);
            let recovered = rig.recover(&after).unwrap();
            assert_eq!(
                recovered.inventory.applied(),
                rig.inv.applied(),
                "the segment was kept"
            );
            rig.check(
                &after,
                &recovered,
                &format!("recovery crashed at write {crash_at}, {kept} writes kept"),
            );
            cases += 1;
        }
    }
    assert_eq!(cases, (1..=5).sum::<usize>());
}

#[test]
fn sim_a_failed_flush_acknowledges_nothing_and_refuses_what_follows() {
    let mut rig = Rig::new();
    rig.changes_in_rounds(2);
    let before = rig.acked.load(Ordering::Relaxed);
    rig.change();
    rig.storage.arm(Faults {
        fail_next_flush: true,
        ..Faults::default()
    });
    assert!(rig.commit.run_round(&rig.storage));
    assert_eq!(rig.acked.load(Ordering::Relaxed), before);
    // Later changes are refused at once and nothing more is written.
    let refused = Arc::new(AtomicU64::new(0));
    let seen = refused.clone();
    rig.change();
    rig.commit.submit(
        rig.id(),
        0,
        0,
        &[],
        &mut Vec::new(),
        Some(Box::new(move |durable: Result<(), StorageError>| {
            if matches!(durable, Err(StorageError::Poisoned(_))) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }) as Waiter),
    );
    assert_eq!(refused.load(Ordering::Relaxed), 1);
    let written = rig.storage.pending_writes();
    assert!(!rig.commit.run_round(&rig.storage) || rig.storage.pending_writes() == written);
    assert_eq!(rig.acked.load(Ordering::Relaxed), before);
    // Whatever part of the failed round reached the disk, a restart finds every acknowledged
    // change and nothing that was not decided.
    for kept in 0..=written {
        let after = rig.storage.copy();
        after.crash_keeping(kept, None);
        let recovered = rig.recover(&after).unwrap();
        rig.check(
            &after,
            &recovered,
            &format!("failed flush, {kept} writes kept"),
        );
    }
}
