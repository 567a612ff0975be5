//! Many callers at once against one event: nothing is sold twice, nothing is lost, and every
//! refusal is the precise one.

use std::collections::HashSet;

use engine::Error;
use engine::inventory::{Hold, Rejection, SeatRef};
use tests::{event, ga_tier, reserve_ga, reserve_seats, seat_in, seated_tier};

use crate::{create, fresh_engine};

/// Sends every request at once, each from its own task, and collects the answers in order.
async fn all_at_once(
    handle: &engine::EventHandle,
    requests: Vec<engine::inventory::ReserveRequest>,
) -> Vec<Result<Hold, Error>> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let h = handle.clone();
            tokio::spawn(async move { h.reserve(r).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for t in tasks {
        answers.push(t.await.expect("task"));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_for_a_thousand_tickets() {
    let (engine, dir, config) = fresh_engine(|_| {}).await;
    let spec = event(vec![ga_tier("GA", 1_000, 4)]);
    let id = spec.id;
    let handle = create(&engine, spec).await;
    let requests = (0..10_000)
        .map(|i| reserve_ga(&format!("c{i}"), "GA", 1))
        .collect();
    let answers = all_at_once(&handle, requests).await;
    let held: Vec<&Hold> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(held.len(), 1_000);
    let ids: HashSet<_> = held.iter().map(|h| h.id).collect();
    assert_eq!(ids.len(), 1_000);
    for a in &answers {
        match a {
            Ok(_) => {}
            Err(Error::Rejected(Rejection::SoldOut { available: 0, .. })) => {}
            Err(e) => panic!("unexpected answer {e}"),
        }
    }
    let audit = handle.audit().await.unwrap();
    let tier = &audit.summary.tiers[0];
    assert_eq!((tier.available, tier.held, tier.sold), (0, 1_000, 0));

    // The same after a restart from the log.
    engine.shutdown().await;
    let engine = engine::Engine::open(&config).await.unwrap();
    let audit = engine.event(id).unwrap().audit().await.unwrap();
    assert_eq!(audit.summary.tiers[0].held, 1_000);
    assert_eq!(audit.hold_ids.iter().copied().collect::<HashSet<_>>(), ids);
    engine.shutdown().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_for_five_hundred_named_seats() {
    let (engine, _dir, _) = fresh_engine(|_| {}).await;
    let handle = create(&engine, event(vec![seated_tier("S", 10, 50, 4)])).await;
    // Every seat is asked for by exactly 20 callers, in a shuffled order.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut seats: Vec<SeatRef> = (0..10_000)
        .map(|i| seat_in("S", (i % 500) / 50 + 1, i % 50 + 1))
        .collect();
    rng.shuffle(&mut seats);
    let requests = seats
        .iter()
        .enumerate()
        .map(|(i, s)| reserve_seats(&format!("c{i}"), "S", vec![s.clone()]))
        .collect();
    let answers = all_at_once(&handle, requests).await;
    let mut owned = HashSet::new();
    let mut taken = 0;
    for a in &answers {
        match a {
            Ok(h) => assert!(owned.insert(h.lines[0].seats[0].clone()), "seat sold twice"),
            Err(Error::Rejected(Rejection::SeatTaken(s))) => {
                assert!(s.section == "S");
                taken += 1;
            }
            Err(e) => panic!("unexpected answer {e}"),
        }
    }
    assert_eq!((owned.len(), taken), (500, 9_500));
    let audit = handle.audit().await.unwrap();
    let tier = &audit.summary.tiers[0];
    assert_eq!((tier.available, tier.held), (0, 500));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_multi_seat_requests_never_share_a_seat() {
    let (engine, _dir, _) = fresh_engine(|_| {}).await;
    let handle = create(&engine, event(vec![seated_tier("S", 10, 50, 4)])).await;
    let seed = tests::now_ms();
    let mut rng = fastrand::Rng::with_seed(seed);
    let requests: Vec<_> = (0..10_000)
        .map(|i| {
            let mut wanted = HashSet::new();
            let n = rng.u32(2..=4) as usize;
            // Heavy overlap: all requests draw from the same 500 seats.
            while wanted.len() < n {
                wanted.insert((rng.u32(1..=10), rng.u32(1..=50)));
            }
            let seats = wanted
                .into_iter()
                .map(|(r, n)| seat_in("S", r, n))
                .collect();
            reserve_seats(&format!("c{i}"), "S", seats)
        })
        .collect();
    let answers = all_at_once(&handle, requests).await;
    let mut owned = HashSet::new();
    for a in &answers {
        match a {
            Ok(h) => {
                for s in &h.lines[0].seats {
                    assert!(owned.insert(s.clone()), "seat {s} sold twice (seed {seed})");
                }
            }
            Err(Error::Rejected(Rejection::SeatTaken(_))) => {}
            Err(e) => panic!("unexpected answer {e} (seed {seed})"),
        }
    }
    let audit = handle.audit().await.unwrap();
    let tier = &audit.summary.tiers[0];
    assert_eq!(tier.held as usize, owned.len(), "seed {seed}");
    assert_eq!(tier.available as usize, 500 - owned.len(), "seed {seed}");
    let seats = handle.seats(None).await.unwrap();
    let held: HashSet<SeatRef> = seats
        .into_iter()
        .filter(|s| s.state == engine::inventory::SeatState::Held)
        .map(|s| s.seat)
        .collect();
    assert_eq!(held, owned, "seed {seed}");
    engine.shutdown().await;
}
