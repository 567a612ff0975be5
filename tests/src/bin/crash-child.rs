//! The process the crash harness kills: opens the engine on the given directory, creates the test
//! event if there is none, prints `READY <event>`, then reserves, confirms and releases from four
//! tasks until it is killed, printing each acknowledgement after it arrives (see `tests::crash`).
//! Holds last 1 to 20 s, so that those nobody confirms or releases end by expiry, the event's
//! open holds stay bounded however many rounds a soak runs, and expiry is killed too.
//!
//! Usage: crash-child <data-dir> <seed>

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use engine::Error;
use engine::inventory::{ConfirmRequest, Hold, ReleaseRequest};
use tests::{
    config_in, event, ga_tier, reserve_best, reserve_ga, reserve_seats, seat_in, seated_tier,
};

/// How long the child's holds last, ms.
const HOLD_TTL_MS: std::ops::Range<u64> = 1_000..20_000;

fn say(text: &str) {
    // One write per batch of lines; a pipe write is never reordered with a later one.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .context("usage: crash-child <data-dir> <seed>")?;
    let seed: u64 = args
        .next()
        .context("usage: crash-child <data-dir> <seed>")?
        .parse()?;
    let mut config = config_in(std::path::Path::new(&dir));
    config.limits.max_open_holds_per_customer = 1_000_000;
    config.storage.snapshot_every_records = 20_000;
    let engine = Arc::new(engine::Engine::open(&config).await?);
    let id = match engine.event_ids().first() {
        Some(id) => *id,
        None => {
            let spec = event(vec![
                ga_tier("GA", 5_000_000, 4),
                seated_tier("SEAT", 40, 50, 4),
            ]);
            let id = spec.id;
            engine.create_event(spec).await?;
            id
        }
    };
    let handle = engine.event(id)?;
    say(&format!("READY {id}\n"));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..4u64 {
        let handle = handle.clone();
        workers.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ (worker << 32));
            let mut mine: Vec<Hold> = Vec::new();
            let mut n = 0u64;
            loop {
                n += 1;
                let customer = format!("w{worker}-{seed}-{n}");
                match rng.u32(0..10) {
                    0..=4 => {
                        let batch: Vec<_> = (0..rng.u32(1..64))
                            .map(|i| {
                                let mut request =
                                    reserve_ga(&format!("{customer}-{i}"), "GA", rng.u32(1..=4));
                                request.hold_ttl_ms = Some(rng.u64(HOLD_TTL_MS));
                                request
                            })
                            .collect();
                        if let Ok(answers) = handle.reserve_many(batch).await {
                            let mut text = String::new();
                            for hold in answers.into_iter().flatten() {
                                text.push_str(&format!("H {} {}\n", hold.id, hold.expires_at_ms));
                                mine.push(hold);
                            }
                            say(&text);
                        }
                    }
                    5 | 6 => {
                        let mut request = if rng.bool() {
                            reserve_best(&customer, "SEAT", rng.u32(1..=4))
                        } else {
                            let seats = (0..2)
                                .map(|_| seat_in("SEAT", rng.u32(1..=40), rng.u32(1..=50)))
                                .collect();
                            reserve_seats(&customer, "SEAT", seats)
                        };
                        request.hold_ttl_ms = Some(rng.u64(HOLD_TTL_MS));
                        if let Ok(hold) = handle.reserve(request).await {
                            say(&format!("H {} {}\n", hold.id, hold.expires_at_ms));
                            mine.push(hold);
                        }
                    }
                    7 | 8 if !mine.is_empty() => {
                        let hold = mine.swap_remove(rng.usize(..mine.len()));
                        say(&format!("c {}\n", hold.id));
                        let request = ConfirmRequest {
                            hold_id: hold.id,
                            payment_ref: "card".into(),
                            idempotency_key: None,
                            contact: None,
                        };
                        if let Ok(order) = handle.confirm(request).await {
                            say(&format!("C {} {}\n", hold.id, order.id));
                        }
                    }
                    9 if !mine.is_empty() => {
                        let hold = mine.swap_remove(rng.usize(..mine.len()));
                        say(&format!("r {}\n", hold.id));
                        let request = ReleaseRequest {
                            hold_id: hold.id,
                            idempotency_key: None,
                        };
                        match handle.release(request).await {
                            Ok(_) => say(&format!("R {}\n", hold.id)),
                            Err(Error::Overloaded { .. }) => {}
                            Err(e) => eprintln!("release {}: {e}", hold.id),
                        }
                    }
                    _ => {}
                }
            }
        });
    }
    // The workers run until the process is killed; one ending means it panicked.
    if let Some(ended) = workers.join_next().await {
        ended?;
    }
    Ok(())
}
