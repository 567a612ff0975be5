//! Holds expire on time, by the actor's own timer, with and without other traffic, and their
//! tickets go straight back on sale. The lateness is printed; its target (within 100 ms of the
//! deadline) is measured by the bench, not asserted here, since these machines are shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engine::inventory::ReleaseRequest;
use tests::{event, ga_tier, now_ms, reserve_ga};

use crate::{create, fresh_engine};

/// Places `n` one-second holds and waits, without sending the event anything, until the
/// engine's expiry counter shows them all released. Returns the lateness after the last deadline.
async fn expire_quietly(engine: &engine::Engine, handle: &engine::EventHandle, n: u32) -> u64 {
    let before = engine.stats().holds_expired.load(Ordering::Relaxed);
    let mut deadlines = Vec::new();
    for i in 0..n {
        let mut req = reserve_ga(&format!("short{i}"), "GA", 2);
        req.hold_ttl_ms = Some(1_000);
        deadlines.push(handle.reserve(req).await.unwrap().expires_at_ms);
    }
    let first = *deadlines.iter().min().unwrap();
    let last = *deadlines.iter().max().unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let asked_at = now_ms();
        let expired = engine.stats().holds_expired.load(Ordering::Relaxed) - before;
        if asked_at < first {
            assert_eq!(expired, 0, "a hold expired before its deadline");
        }
        if expired >= u64::from(n) {
            assert_eq!(expired, u64::from(n));
            return asked_at.saturating_sub(last);
        }
        assert!(
            Instant::now() < give_up,
            "holds were not released 20 s after their deadline"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_on_their_deadline_without_traffic() {
    let (engine, _dir, _) = fresh_engine(|_| {}).await;
    let handle = create(&engine, event(vec![ga_tier("GA", 100, 4)])).await;
    let late_ms = expire_quietly(&engine, &handle, 10).await;
    println!("quiet: last hold released {late_ms} ms after its deadline");
    let tier = &handle.summary().await.unwrap().tiers[0];
    assert_eq!((tier.available, tier.held), (100, 0));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_on_their_deadline_under_load() {
    let (engine, _dir, _) = fresh_engine(|_| {}).await;
    let handle = create(&engine, event(vec![ga_tier("GA", 1_000_000, 4)])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (h, stop) = (handle.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let batch = (0..32)
                    .map(|i| reserve_ga(&format!("load{worker}-{n}-{i}"), "GA", 1))
                    .collect();
                for hold in h.reserve_many(batch).await.unwrap().into_iter().flatten() {
                    h.release(ReleaseRequest {
                        hold_id: hold.id,
                        idempotency_key: None,
                    })
                    .await
                    .unwrap();
                }
                n += 1;
            }
            n
        }));
    }
    let late_ms = expire_quietly(&engine, &handle, 50).await;
    stop.store(true, Ordering::Relaxed);
    let mut batches = 0;
    for l in load {
        batches += l.await.unwrap();
    }
    println!(
        "under load ({batches} batches of 32 reserve + release): last hold released {late_ms} ms after its deadline"
    );
    assert!(batches > 0);
    let tier = &handle.summary().await.unwrap().tiers[0];
    assert_eq!((tier.available, tier.held), (1_000_000, 0));
    engine.shutdown().await;
}
