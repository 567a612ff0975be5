//! Drives a scenario against one target: shoppers in a closed or open loop, pollers and watchers,
//! a live progress line, then the drain and the audit. Every random choice comes from the
//! scenario's seed.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use proto::v1;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::results::{
    AuditReport, ExpiryWindow, Ledger, Op, Outcomes, Recorder, RunReport, wall_ms,
};
use crate::scenario::{Load, Scenario};
use crate::target::{EventRef, Target};

/// How long the run waits, after the load, for the order events of confirms already answered.
const ORDER_EVENTS_CATCH_UP: Duration = Duration::from_secs(60);

struct Drive {
    target: Arc<Target>,
    scenario: Scenario,
    events: Vec<EventRef>,
    recorder: Recorder,
    ledger: Ledger,
    until: Instant,
    stop: AtomicBool,
    /// When the load stopped, in µs since the start (0: not yet).
    stopped_at_us: AtomicU64,
    measured_visits: AtomicU64,
    quantity_weights: u64,
}

impl Drive {
    fn stopping(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        let over = Instant::now() >= self.until
            || self
                .scenario
                .requests
                .is_some_and(|n| self.measured_visits.load(Ordering::Relaxed) >= n);
        // Closed loop: shoppers check before each visit, so the first to see the end records it.
        if over {
            self.stop.store(true, Ordering::Relaxed);
            let us = (self.recorder.started.elapsed().as_micros() as u64).max(1);
            let _ =
                self.stopped_at_us
                    .compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
        }
        over
    }

    fn requests_done(&self) -> bool {
        let done = self
            .scenario
            .requests
            .is_some_and(|n| self.measured_visits.load(Ordering::Relaxed) >= n);
        if done {
            self.stopping();
        }
        done
    }

    fn quantity(&self, rng: &mut fastrand::Rng) -> u32 {
        let mut pick = rng.u64(..self.quantity_weights);
        for (q, w) in &self.scenario.shoppers.quantity {
            if pick < u64::from(*w) {
                return *q;
            }
            pick -= u64::from(*w);
        }
        1
    }

    fn request(&self, rng: &mut fastrand::Rng, e: usize, t: usize, q: u32) -> v1::ReserveRequest {
        let event = &self.events[e];
        let tier = &event.tiers[t];
        let shoppers = &self.scenario.shoppers;
        let selection = match &tier.seat_map {
            None => v1::reserve_item::Selection::Quantity(q),
            Some(map) if rng.f64() < shoppers.named_seat_share => {
                let section = rng.u32(1..=map.sections);
                let row = rng.u32(1..=shoppers.hot_rows.min(map.rows));
                let first = rng.u32(1..=map.seats_per_row - q + 1);
                v1::reserve_item::Selection::Seats(v1::SeatList {
                    seats: (first..first + q)
                        .map(|n| v1::Seat {
                            section: format!("S{section}"),
                            row: format!("R{row}"),
                            number: n.to_string(),
                        })
                        .collect(),
                })
            }
            Some(_) => v1::reserve_item::Selection::BestAvailable(q),
        };
        v1::ReserveRequest {
            event_id: event.id.clone(),
            customer_id: format!("shopper-{}", rng.u32(..shoppers.customers)),
            items: vec![v1::ReserveItem {
                tier_code: tier.code.clone(),
                selection: Some(selection),
            }],
            hold_ttl_seconds: Some(self.scenario.events.hold_ttl_seconds),
            idempotency_key: String::new(),
        }
    }

    /// One shopper's visit: reserve, then abandon the hold or confirm it after the think time.
    async fn visit(&self, rng: &mut fastrand::Rng, shard: usize, intended: Instant) {
        if intended >= self.recorder.measure_from {
            self.measured_visits.fetch_add(1, Ordering::Relaxed);
        }
        let e = rng.usize(..self.events.len());
        let t = rng.usize(..self.events[e].tiers.len());
        let q = self.quantity(rng);
        let request = self.request(rng, e, t, q);
        let ttl_ms = u64::from(self.scenario.events.hold_ttl_seconds) * 1_000;
        let sent_ms = wall_ms();
        let answer = self.target.reserve(request).await;
        let window = ExpiryWindow {
            earliest_ms: sent_ms + ttl_ms,
            latest_ms: wall_ms() + ttl_ms,
        };
        let held = match answer {
            Ok(held) => {
                self.recorder.record(Op::Reserve, shard, intended, Ok(()));
                held
            }
            Err(refusal) => {
                self.recorder
                    .record(Op::Reserve, shard, intended, Err(&refusal.reason));
                if refusal.reason == "SOLD_OUT" {
                    self.recorder.sold_out(e);
                }
                if !refusal.is_decided() {
                    self.ledger.reserve_unknown(shard, (e, t), q);
                }
                return;
            }
        };
        if rng.f64() < self.scenario.shoppers.abandon_share {
            self.ledger.open(shard, (e, t), held.quantity, window);
            return;
        }
        let think = Duration::from_millis(self.scenario.shoppers.think_time_ms);
        let intended = Instant::now() + think;
        tokio::time::sleep_until(intended.into()).await;
        match self.target.confirm(&self.events[e].id, &held.hold_id).await {
            Ok(()) => {
                if let Some(tap) = self.target.order_events() {
                    tap.answered(&held.hold_id, intended >= self.recorder.measure_from);
                }
                self.recorder.record(Op::Confirm, shard, intended, Ok(()));
                self.ledger
                    .confirmed(shard, (e, t), held.quantity, held.seats);
            }
            Err(refusal) => {
                self.recorder
                    .record(Op::Confirm, shard, intended, Err(&refusal.reason));
                if refusal.is_decided() {
                    self.ledger.open(shard, (e, t), held.quantity, window);
                } else {
                    self.ledger.confirm_unknown(shard, (e, t), held.quantity);
                    self.ledger.open(shard, (e, t), held.quantity, window);
                }
            }
        }
    }

    async fn poll(&self, n: usize) {
        let interval = Duration::from_millis(self.scenario.pollers.interval_ms);
        let event = &self.events[n % self.events.len()];
        while !self.stopping() {
            let intended = Instant::now();
            let answer = self
                .target
                .availability(event, self.scenario.pollers.include_seats)
                .await;
            self.recorder.record(
                Op::Availability,
                n,
                intended,
                answer.as_ref().map(|_| ()).map_err(|r| r.reason.as_str()),
            );
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
        }
    }

    async fn watch(&self, n: usize) -> Result<()> {
        let event = &self.events[n % self.events.len()];
        let mut updates = self.target.watch(&event.id).await?;
        let until = tokio::time::Instant::from(self.until);
        loop {
            tokio::select! {
                message = updates.message() => match message? {
                    Some(_) => self.recorder.watch_update(),
                    None => return Ok(()),
                },
                () = tokio::time::sleep_until(until) => return Ok(()),
            }
        }
    }
}

fn seed_for(seed: u64, n: u64) -> u64 {
    // Distinct, well-spread streams per shopper from one seed (splitmix64's increment).
    seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Runs the scenario on `target` against `events`; prints progress to stderr.
pub async fn drive(
    label: &str,
    target: Arc<Target>,
    scenario: &Scenario,
    events: Vec<EventRef>,
) -> Result<RunReport> {
    let started = Instant::now();
    let measured = Duration::from_secs_f64(scenario.duration_seconds);
    let warmup = Duration::from_secs_f64(scenario.warmup_seconds);
    let drive = Arc::new(Drive {
        target: target.clone(),
        scenario: scenario.clone(),
        recorder: Recorder::new(started, scenario, events.len()),
        events,
        ledger: Ledger::default(),
        until: started + warmup + measured,
        stop: AtomicBool::new(false),
        stopped_at_us: AtomicU64::new(0),
        measured_visits: AtomicU64::new(0),
        quantity_weights: scenario
            .shoppers
            .quantity
            .iter()
            .map(|(_, w)| u64::from(*w))
            .sum(),
    });

    let mut tasks = JoinSet::new();
    match scenario.load {
        Load::Closed { concurrency } => {
            for n in 0..concurrency as usize {
                let drive = drive.clone();
                tasks.spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(seed_for(drive.scenario.seed, n as u64));
                    while !drive.stopping() {
                        drive.visit(&mut rng, n, Instant::now()).await;
                    }
                    Ok(())
                });
            }
        }
        Load::Open {
            rate_per_second,
            max_in_flight,
        } => {
            let drive = drive.clone();
            tasks.spawn(async move {
                let visits = Arc::new(Semaphore::new(max_in_flight as usize));
                let mut running = JoinSet::new();
                let period = 1.0 / rate_per_second;
                for k in 0u64.. {
                    let intended = started + Duration::from_secs_f64(k as f64 * period);
                    // The schedule, not the clock, decides which visits belong to the run, so a
                    // late wake-up neither drops nor adds a visit.
                    if intended >= drive.until {
                        drive.stopping();
                        break;
                    }
                    tokio::time::sleep_until(intended.into()).await;
                    if drive.stop.load(Ordering::Relaxed) || drive.requests_done() {
                        break;
                    }
                    // Waiting here delays the visit, and its latency counts from `intended`.
                    let permit = visits.clone().acquire_owned().await?;
                    let drive = drive.clone();
                    running.spawn(async move {
                        let mut rng = fastrand::Rng::with_seed(seed_for(drive.scenario.seed, k));
                        drive.visit(&mut rng, k as usize, intended).await;
                        drop(permit);
                    });
                    while running.try_join_next().is_some() {}
                }
                while running.join_next().await.is_some() {}
                Ok(())
            });
        }
    }
    for n in 0..scenario.pollers.concurrency as usize {
        let drive = drive.clone();
        tasks.spawn(async move {
            drive.poll(n).await;
            Ok(())
        });
    }
    for n in 0..scenario.pollers.watchers as usize {
        let drive = drive.clone();
        tasks.spawn(async move { drive.watch(n).await });
    }

    // Live progress, once a second.
    let progress = {
        let drive = drive.clone();
        let label = label.to_string();
        // On a terminal the line is rewritten in place; in a log each second gets its own line.
        let terminal = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let mut last = [0u64; 6];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let r = &drive.recorder;
                let now = [
                    r.live_ok[0].load(Ordering::Relaxed),
                    r.live_refused[0].load(Ordering::Relaxed),
                    r.live_ok[1].load(Ordering::Relaxed),
                    r.live_refused[1].load(Ordering::Relaxed),
                    r.live_ok[2].load(Ordering::Relaxed),
                    r.live_refused[2].load(Ordering::Relaxed),
                ];
                let d: Vec<u64> = now.iter().zip(&last).map(|(n, l)| n - l).collect();
                last = now;
                let phase = if Instant::now() < r.measure_from {
                    "warm-up"
                } else if drive.stop.load(Ordering::Relaxed) {
                    "draining"
                } else {
                    "measuring"
                };
                eprint!(
                    "{}  {label} {:>5.0} s {phase:>9}: reserve {:>8}/s held, {:>7}/s refused; confirm {:>6}/s; availability {:>6}/s   ",
                    if terminal { "\r" } else { "\n" },
                    started.elapsed().as_secs_f64(),
                    d[0],
                    d[1],
                    d[2],
                    d[4] + d[5],
                );
                let _ = std::io::stderr().flush();
            }
        })
    };

    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(e.into())),
        }
    }
    progress.abort();
    eprintln!();
    if let Some(e) = failure {
        return Err(e.context("a load task failed"));
    }
    // A request count can end the load before the planned duration.
    let measured = match drive.stopped_at_us.load(Ordering::Relaxed) {
        0 => measured,
        us => Duration::from_micros(us)
            .saturating_sub(warmup)
            .min(measured),
    };
    let mut figures = drive.recorder.summarise(measured);
    // With the relay on: how long after its Confirm's answer each order's event was read.
    let order_events = match target.order_events() {
        Some(tap) => {
            tap.catch_up(ORDER_EVENTS_CATCH_UP).await;
            let (latency, check) = tap.figures(measured);
            if let Some(latency) = latency {
                figures.ops.insert("order_event".into(), latency);
            }
            Some(check)
        }
        None => None,
    };

    // The audit: wait for abandoned holds to expire if that fits the plan, then compare.
    let audit = if target.keeps_state() {
        let grace = target.expiry_grace_ms();
        let all_expired_at = drive.ledger.latest_expiry_ms() + grace + 500;
        let wait_ms = all_expired_at.saturating_sub(wall_ms());
        let waited = if wait_ms as f64 <= scenario.audit.max_wait_seconds * 1_000.0 {
            if wait_ms > 0 {
                eprintln!(
                    "  audit: waiting {:.1} s for abandoned holds to expire",
                    wait_ms as f64 / 1e3
                );
            }
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            wait_ms as f64 / 1e3
        } else {
            0.0
        };
        target.settle().await?;
        let with_seats = scenario.has_seat_maps();
        let read_from_ms = wall_ms();
        let mut counts = Vec::new();
        for event in &drive.events {
            counts.push(target.counts(event, with_seats).await?);
        }
        let read_until_ms = wall_ms();
        let (mut checks, recycled) =
            drive
                .ledger
                .audit(&drive.events, &counts, read_from_ms, read_until_ms, grace);
        checks.extend(order_events);
        AuditReport {
            applicable: true,
            passed: checks.iter().all(|c| c.passed),
            checks,
            holds_recycled_by_expiry: recycled,
            waited_seconds: waited,
        }
    } else {
        AuditReport {
            applicable: false,
            passed: true,
            checks: vec![],
            holds_recycled_by_expiry: 0,
            waited_seconds: 0.0,
        }
    };
    Ok(RunReport {
        target: label.to_string(),
        notes: target.notes().await,
        scenario: scenario.clone(),
        measured_seconds: measured.as_secs_f64(),
        outcomes: Outcomes::of(figures.ops.get("reserve")),
        ops: figures.ops,
        sold_out_after_seconds: figures.sold_out_after_seconds,
        watch_updates: figures.watch_updates,
        timeline: figures.timeline,
        audit,
    })
}
