//! The crash harness: runs the engine under load in a child process (`crash-child`), kills it with
//! SIGKILL at a random moment (now and then while it is still recovering), reopens the same sled
//! directory and checks that every change the child acknowledged before the kill is there and that
//! the invariants hold. Repeats on the same directory, so each round also recovers everything the
//! earlier rounds left.
//!
//! The child prints one line per fact, always after the fact:
//! - `READY <event>` once the engine is open and the event exists;
//! - `H <hold> <expires at, unix ms>` after a reservation was acknowledged;
//! - `c <hold>` / `r <hold>` before it asks to confirm / release a hold;
//! - `C <hold> <order>` / `R <hold>` after the confirm / release was acknowledged.
//!
//! A pipe keeps what was written before the kill, so every `H`, `C` and `R` line read back is an
//! acknowledgement the engine must honour after restart. A hold nobody confirmed or released may
//! be gone only once its deadline has passed (expired); gone earlier, it was lost.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use engine::inventory::{EventId, HoldId, OrderId, OrderStatus};
use uuid::Uuid;

#[derive(Default, Debug, Clone)]
struct Fate {
    expires_at_ms: u64,
    confirm_asked: bool,
    release_asked: bool,
    confirmed: Option<OrderId>,
    released: bool,
    /// Gone by its deadline, seen after a restart.
    expired: bool,
}

#[derive(Debug, Default, Clone)]
pub struct CrashReport {
    pub kills: u32,
    /// Kills before the child said READY: during its recovery (or its start).
    pub kills_while_starting: u32,
    pub holds_acknowledged: usize,
    pub confirms_acknowledged: usize,
    pub releases_acknowledged: usize,
    /// Holds nobody confirmed or released, found gone after their deadline.
    pub holds_expired: usize,
    pub recovery_ms_max: u128,
    /// The median time to reopen after a kill.
    pub recovery_ms_p50: u128,
    pub records_max: u64,
}

fn parse_id(word: Option<&str>) -> Result<Uuid> {
    Ok(Uuid::parse_str(word.context("missing id")?)?)
}

/// Runs `kills` rounds of start, load, SIGKILL, verify against `data_dir`.
pub async fn run(child: &Path, data_dir: &Path, kills: u32, seed: u64) -> Result<CrashReport> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut fates: HashMap<HoldId, Fate> = HashMap::new();
    let mut event: Option<EventId> = None;
    let mut report = CrashReport::default();
    let mut recoveries: Vec<u128> = Vec::with_capacity(kills as usize);
    for round in 0..kills {
        let child_seed = rng.u64(..);
        let mut process = Command::new(child)
            .arg(data_dir)
            .arg(child_seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", child.display()))?;
        let stdout = process.stdout.take().context("child stdout")?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || -> Vec<String> {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    // A line cut short by the kill has no newline: it was never complete.
                    Ok(_) if buf.last() != Some(&b'\n') => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if line.starts_with("READY") {
                            let _ = ready_tx.send(());
                        }
                        lines.push(line);
                    }
                }
            }
            lines
        });
        // One round in ten (once the event exists) kills the child within 300 ms of its start,
        // most often while it is still recovering what earlier rounds left.
        if event.is_some() && rng.u32(0..10) == 0 {
            let within = Duration::from_millis(rng.u64(1..300));
            if ready_rx.recv_timeout(within).is_err() {
                report.kills_while_starting += 1;
            }
        } else if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = process.kill();
            bail!("round {round}: the child never became ready");
        } else {
            std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        }
        process.kill().context("SIGKILL the child")?;
        let status = process.wait()?;
        ensure!(
            !status.success(),
            "round {round}: the child exited by itself ({status})"
        );
        let lines = reader.join().expect("reader thread");
        report.kills += 1;

        for line in &lines {
            let mut words = line.split(' ');
            let tag = words.next().unwrap_or_default();
            match tag {
                "READY" => {
                    let id = EventId(parse_id(words.next())?);
                    ensure!(event.is_none_or(|e| e == id), "child switched events");
                    event = Some(id);
                }
                "H" => {
                    let hold = HoldId(parse_id(words.next())?);
                    let expires_at_ms = words.next().context("H without a deadline")?.parse()?;
                    let fate = Fate {
                        expires_at_ms,
                        ..Fate::default()
                    };
                    ensure!(
                        fates.insert(hold, fate).is_none(),
                        "hold {hold} acknowledged twice"
                    );
                }
                "c" | "r" | "C" | "R" => {
                    let hold = HoldId(parse_id(words.next())?);
                    let fate = fates
                        .get_mut(&hold)
                        .with_context(|| format!("{line}: unknown hold"))?;
                    match tag {
                        "c" => fate.confirm_asked = true,
                        "r" => fate.release_asked = true,
                        "C" => fate.confirmed = Some(OrderId(parse_id(words.next())?)),
                        _ => fate.released = true,
                    }
                }
                other => bail!("unexpected line from the child: {other:?}"),
            }
        }

        let event = event.context("no event")?;
        let started = Instant::now();
        let engine = engine::Engine::open(&crate::config_in(data_dir))
            .await
            .with_context(|| format!("round {round}: reopen after SIGKILL"))?;
        let recovery_ms = started.elapsed().as_millis();
        report.recovery_ms_max = report.recovery_ms_max.max(recovery_ms);
        recoveries.push(recovery_ms);
        recoveries.sort_unstable();
        report.recovery_ms_p50 = recoveries[recoveries.len() / 2];
        let handle = engine.event(event)?;
        // The audit re-checks every invariant inside the actor, panicking on any breach.
        let audit = handle
            .audit()
            .await
            .with_context(|| format!("round {round}: audit"))?;
        // Read after the audit, which releases the holds due first: a hold the engine expired had
        // its deadline before now.
        let now_ms = crate::now_ms();
        report.records_max = report.records_max.max(audit.applied_records);
        for tier in &audit.summary.tiers {
            ensure!(
                tier.available + tier.held + tier.sold == tier.capacity,
                "tier {} invariant",
                tier.code
            );
        }
        let live: HashSet<HoldId> = audit.hold_ids.iter().copied().collect();
        let orders: HashMap<HoldId, (OrderId, OrderStatus)> = audit
            .orders
            .iter()
            .map(|(o, h, s)| (*h, (*o, *s)))
            .collect();
        for (hold, fate) in &fates {
            let is_live = live.contains(hold);
            let order = orders.get(hold);
            ensure!(
                !(is_live && order.is_some()),
                "hold {hold} is both live and an order"
            );
            if let Some(acked) = fate.confirmed {
                ensure!(
                    order.map(|o| o.0) == Some(acked),
                    "round {round}: acknowledged order {acked} of hold {hold} lost"
                );
            } else if fate.released || fate.expired {
                ensure!(
                    !is_live && order.is_none(),
                    "round {round}: ended hold {hold} came back"
                );
            } else if !fate.confirm_asked && !fate.release_asked {
                ensure!(
                    is_live || now_ms >= fate.expires_at_ms,
                    "round {round}: acknowledged hold {hold} lost {} ms before its deadline",
                    fate.expires_at_ms - now_ms
                );
            }
        }
        // What the engine kept is now the truth for the unacknowledged requests too.
        for (hold, fate) in fates.iter_mut() {
            if let Some((order, _)) = orders.get(hold) {
                fate.confirmed = Some(*order);
            } else if !live.contains(hold) && !fate.released && !fate.expired {
                // Gone without an order: released if that was asked, expired otherwise.
                fate.released = fate.release_asked;
                fate.expired = !fate.release_asked;
            }
        }
        engine.shutdown().await;
        // A long soak says how far it got, so that a run cut short still tells.
        if (round + 1) % 50 == 0 {
            println!(
                "after {} kills ({} while starting): {} holds, {} confirms and {} releases acknowledged, {} holds \
                 expired, none lost; recovery p50 {} ms, max {} ms; {} records at most",
                round + 1,
                report.kills_while_starting,
                fates.len(),
                fates.values().filter(|f| f.confirmed.is_some()).count(),
                fates.values().filter(|f| f.released).count(),
                fates.values().filter(|f| f.expired).count(),
                report.recovery_ms_p50,
                report.recovery_ms_max,
                report.records_max
            );
        }
    }
    report.holds_acknowledged = fates.len();
    report.confirms_acknowledged = fates.values().filter(|f| f.confirmed.is_some()).count();
    report.releases_acknowledged = fates.values().filter(|f| f.released).count();
    report.holds_expired = fates.values().filter(|f| f.expired).count();
    Ok(report)
}
