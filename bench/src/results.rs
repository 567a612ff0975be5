//! What a run measured and what it proved: latencies in HDR histograms per operation, outcomes by
//! reason, a timeline, and the audit that compares what the clients were told with what the target
//! reports. The report types are what `--json` writes and the HTML report reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::target::{EventCounts, EventRef};

/// Latencies above a minute are recorded as a minute.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Tasks spread their records over this many locks.
const SHARDS: usize = 16;
/// The timeline has at most this many points, however long the run.
const MAX_TIMELINE_POINTS: u64 = 240;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Reserve = 0,
    Confirm = 1,
    Availability = 2,
}

const OPS: [(Op, &str); 3] = [
    (Op::Reserve, "reserve"),
    (Op::Confirm, "confirm"),
    (Op::Availability, "availability"),
];

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn histogram(significant_figures: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, significant_figures).expect("valid bounds")
}

#[derive(Default)]
struct Bucket {
    ok: u64,
    refused: u64,
    latency: Option<Histogram<u64>>,
}

struct OpShard {
    latency: Histogram<u64>,
    outcomes: HashMap<String, u64>,
    timeline: Vec<Bucket>,
}

/// Latencies and outcomes, recorded by many tasks at once.
pub struct Recorder {
    shards: Vec<Mutex<Vec<OpShard>>>,
    pub started: Instant,
    pub measure_from: Instant,
    bucket: Duration,
    buckets: usize,
    /// Since the start, for the live progress line.
    pub live_ok: [AtomicU64; 3],
    pub live_refused: [AtomicU64; 3],
    watch_updates: Vec<AtomicU64>,
    /// Per event: microseconds from the start to the first SOLD_OUT answer (0: none).
    first_sold_out_us: Vec<AtomicU64>,
}

impl Recorder {
    pub fn new(started: Instant, scenario: &Scenario, events: usize) -> Recorder {
        let measured = Duration::from_secs_f64(scenario.duration_seconds);
        let bucket = Duration::from_millis(
            (measured.as_millis() as u64)
                .div_ceil(MAX_TIMELINE_POINTS)
                .max(1_000),
        );
        // One more bucket for answers that arrive while the last visits drain.
        let buckets = (measured.as_millis() / bucket.as_millis()) as usize + 2;
        let op_shard = || OpShard {
            latency: histogram(3),
            outcomes: HashMap::new(),
            timeline: (0..buckets).map(|_| Bucket::default()).collect(),
        };
        Recorder {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(OPS.iter().map(|_| op_shard()).collect()))
                .collect(),
            started,
            measure_from: started + Duration::from_secs_f64(scenario.warmup_seconds),
            bucket,
            buckets,
            live_ok: Default::default(),
            live_refused: Default::default(),
            watch_updates: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            first_sold_out_us: (0..events).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn bucket_of(&self, at: Instant) -> Option<usize> {
        let since = at.checked_duration_since(self.measure_from)?;
        Some(((since.as_millis() / self.bucket.as_millis()) as usize).min(self.buckets - 1))
    }

    /// One answer: `intended` is when the request should have gone out (open loop) or went out
    /// (closed loop); the latency runs from there. Requests meant for the warm-up are not
    /// measured.
    pub fn record(&self, op: Op, shard: usize, intended: Instant, outcome: Result<(), &str>) {
        let answered = Instant::now();
        let i = op as usize;
        match outcome {
            Ok(()) => self.live_ok[i].fetch_add(1, Ordering::Relaxed),
            Err(_) => self.live_refused[i].fetch_add(1, Ordering::Relaxed),
        };
        if intended < self.measure_from {
            return;
        }
        let us = (answered.saturating_duration_since(intended).as_micros() as u64)
            .clamp(1, MAX_LATENCY_US);
        let bucket = self.bucket_of(answered);
        let mut shard = self.shards[shard % SHARDS].lock().expect("recorder lock");
        let stats = &mut shard[i];
        stats.latency.saturating_record(us);
        match outcome {
            Ok(()) => *stats.outcomes.entry(ok_name(op).into()).or_default() += 1,
            Err(reason) => match stats.outcomes.get_mut(reason) {
                Some(n) => *n += 1,
                None => {
                    stats.outcomes.insert(reason.to_string(), 1);
                }
            },
        }
        if let Some(b) = bucket {
            let slot = &mut stats.timeline[b];
            match outcome {
                Ok(()) => slot.ok += 1,
                Err(_) => slot.refused += 1,
            }
            slot.latency
                .get_or_insert_with(|| histogram(2))
                .saturating_record(us);
        }
    }

    pub fn watch_update(&self) {
        if let Some(b) = self.bucket_of(Instant::now()) {
            self.watch_updates[b].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn sold_out(&self, event: usize) {
        let us = (self.started.elapsed().as_micros() as u64).max(1);
        let _ = self.first_sold_out_us[event].compare_exchange(
            0,
            us,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Merges the shards into the report's figures.
    pub fn summarise(&self, measured: Duration) -> Measured {
        let seconds = measured.as_secs_f64().max(1e-9);
        let mut ops = BTreeMap::new();
        let mut timelines: Vec<Vec<Bucket>> = Vec::new();
        for (op, name) in OPS {
            let mut latency = histogram(3);
            let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
            let mut timeline: Vec<Bucket> = (0..self.buckets).map(|_| Bucket::default()).collect();
            for shard in &self.shards {
                let shard = shard.lock().expect("recorder lock");
                let stats = &shard[op as usize];
                latency.add(&stats.latency).expect("same bounds");
                for (k, v) in &stats.outcomes {
                    *outcomes.entry(k.clone()).or_default() += v;
                }
                for (into, from) in timeline.iter_mut().zip(&stats.timeline) {
                    into.ok += from.ok;
                    into.refused += from.refused;
                    if let Some(h) = &from.latency {
                        into.latency
                            .get_or_insert_with(|| histogram(2))
                            .add(h)
                            .expect("same bounds");
                    }
                }
            }
            if !latency.is_empty() {
                let ok = outcomes.get(ok_name(op)).copied().unwrap_or(0);
                ops.insert(
                    name.to_string(),
                    op_report(&latency, measured, outcomes, ok),
                );
            }
            timelines.push(timeline);
        }
        let bucket_s = self.bucket.as_secs_f64();
        // Only buckets inside the measured window are shown; the last is cut where it ends.
        let shown = ((seconds / bucket_s).ceil() as usize).clamp(1, self.buckets);
        let timeline = (0..shown)
            .map(|b| {
                let width = (seconds - b as f64 * bucket_s).min(bucket_s).max(1e-3);
                let reserve = &timelines[0][b];
                let quantile = |q: f64| reserve.latency.as_ref().map(|h| h.value_at_quantile(q));
                TimePoint {
                    t_seconds: (b as f64 + 1.0) * bucket_s.min(seconds),
                    reserve_ok_per_second: reserve.ok as f64 / width,
                    reserve_refused_per_second: reserve.refused as f64 / width,
                    confirm_ok_per_second: timelines[1][b].ok as f64 / width,
                    availability_per_second: (timelines[2][b].ok + timelines[2][b].refused) as f64
                        / width,
                    watch_updates_per_second: self.watch_updates[b].load(Ordering::Relaxed) as f64
                        / width,
                    reserve_p50_us: quantile(0.5),
                    reserve_p99_us: quantile(0.99),
                }
            })
            .collect();
        let sold_out_after_seconds = self
            .first_sold_out_us
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|us| *us > 0)
            .max()
            .map(|us| us as f64 / 1e6);
        Measured {
            ops,
            timeline,
            watch_updates: self
                .watch_updates
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .sum(),
            sold_out_after_seconds,
        }
    }
}

/// The figures of one operation over `measured`: its latencies, its answers by outcome, and how
/// many of them were successes.
pub fn op_report(
    latency: &Histogram<u64>,
    measured: Duration,
    outcomes: BTreeMap<String, u64>,
    ok: u64,
) -> OpReport {
    let seconds = measured.as_secs_f64().max(1e-9);
    let count = latency.len();
    OpReport {
        count,
        per_second: count as f64 / seconds,
        ok_per_second: ok as f64 / seconds,
        outcomes,
        latency_us: Latency::of(latency),
        distribution: distribution(latency),
    }
}

fn ok_name(op: Op) -> &'static str {
    match op {
        Op::Reserve => "HELD",
        Op::Confirm => "CONFIRMED",
        Op::Availability => "OK",
    }
}

pub struct Measured {
    pub ops: BTreeMap<String, OpReport>,
    pub timeline: Vec<TimePoint>,
    pub watch_updates: u64,
    pub sold_out_after_seconds: Option<f64>,
}

const PERCENTILES: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
];

fn distribution(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    PERCENTILES
        .iter()
        .map(|p| (*p, h.value_at_quantile(p / 100.0)))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpReport {
    /// Answers to requests sent in the measured window.
    pub count: u64,
    pub per_second: f64,
    /// Successful answers (HELD, CONFIRMED, OK) per second.
    pub ok_per_second: f64,
    /// Answers by outcome: HELD / CONFIRMED / OK, or the refusal's reason.
    pub outcomes: BTreeMap<String, u64>,
    pub latency_us: Latency,
    /// `(percentile, latency_us)` pairs for the distribution chart.
    pub distribution: Vec<(f64, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimePoint {
    /// The end of this point's interval, in seconds since measuring started.
    pub t_seconds: f64,
    pub reserve_ok_per_second: f64,
    pub reserve_refused_per_second: f64,
    pub confirm_ok_per_second: f64,
    pub availability_per_second: f64,
    pub watch_updates_per_second: f64,
    pub reserve_p50_us: Option<u64>,
    pub reserve_p99_us: Option<u64>,
}

/// The reservation outcomes a load-testing team reads first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcomes {
    pub held: u64,
    /// SOLD_OUT, SEAT_TAKEN and NO_SEATS_TOGETHER: the answer a shopper gets when there is
    /// nothing left for them.
    pub sold_out: u64,
    pub overloaded: u64,
    /// Other refusals the target decided (limits, invalid requests).
    pub other_refusals: u64,
    /// Failures that leave the outcome unknown (timeouts, transport, storage).
    pub errors: u64,
}

impl Outcomes {
    pub fn of(reserve: Option<&OpReport>) -> Outcomes {
        let mut o = Outcomes::default();
        for (reason, n) in reserve.map(|r| &r.outcomes).into_iter().flatten() {
            let refusal = crate::target::Refusal::new(reason.clone());
            match reason.as_str() {
                "HELD" => o.held += n,
                "SOLD_OUT" | "SEAT_TAKEN" | "NO_SEATS_TOGETHER" => o.sold_out += n,
                "OVERLOADED" => o.overloaded += n,
                _ if refusal.is_decided() => o.other_refusals += n,
                _ => o.errors += n,
            }
        }
        o
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    /// False for the no-op target, which keeps nothing to audit.
    pub applicable: bool,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// Abandoned holds whose expiry had passed before the audit read the counts; the audit's
    /// `held` check proves their tickets went back on sale.
    pub holds_recycled_by_expiry: u64,
    /// How long the audit waited for abandoned holds to expire.
    pub waited_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub target: String,
    pub notes: Vec<String>,
    pub scenario: Scenario,
    pub measured_seconds: f64,
    pub ops: BTreeMap<String, OpReport>,
    pub outcomes: Outcomes,
    /// Seconds from the start of the run (warm-up included) to the last event's first SOLD_OUT.
    pub sold_out_after_seconds: Option<f64>,
    pub watch_updates: u64,
    pub timeline: Vec<TimePoint>,
    pub audit: AuditReport,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportFile {
    pub tool: String,
    pub version: String,
    pub machine: String,
    pub command: String,
    pub created_at_unix_seconds: u64,
    pub runs: Vec<RunReport>,
}

/// One tier's bookkeeping, from the clients' side.
#[derive(Default)]
struct TierLedger {
    confirmed: u64,
    /// Confirms whose outcome is unknown (they may have sold).
    unknown_confirm: u64,
    /// Reservations whose outcome is unknown (they may be held until they expire).
    unknown_reserve: u64,
    /// Held tickets not bought, by (earliest expiry, latest expiry) in whole seconds.
    open: BTreeMap<(u64, u64), u64>,
    confirmed_seats: Vec<(String, String, String)>,
}

/// What every client was told, for the audit: warm-up answers count too.
pub struct Ledger {
    shards: Vec<Mutex<HashMap<(usize, usize), TierLedger>>>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// A held ticket's expiry lies between `sent + ttl` and `answered + ttl` (wall clock, ms).
#[derive(Debug, Clone, Copy)]
pub struct ExpiryWindow {
    pub earliest_ms: u64,
    pub latest_ms: u64,
}

impl Ledger {
    fn with(&self, shard: usize, key: (usize, usize), f: impl FnOnce(&mut TierLedger)) {
        let mut shard = self.shards[shard % SHARDS].lock().expect("ledger lock");
        f(shard.entry(key).or_default());
    }

    pub fn open(&self, shard: usize, key: (usize, usize), quantity: u32, window: ExpiryWindow) {
        self.with(shard, key, |t| {
            *t.open
                .entry((window.earliest_ms / 1_000, window.latest_ms.div_ceil(1_000)))
                .or_default() += u64::from(quantity);
        });
    }

    pub fn confirmed(
        &self,
        shard: usize,
        key: (usize, usize),
        quantity: u32,
        seats: Vec<(String, String, String)>,
    ) {
        self.with(shard, key, |t| {
            t.confirmed += u64::from(quantity);
            t.confirmed_seats.extend(seats);
        });
    }

    pub fn confirm_unknown(&self, shard: usize, key: (usize, usize), quantity: u32) {
        self.with(shard, key, |t| t.unknown_confirm += u64::from(quantity));
    }

    pub fn reserve_unknown(&self, shard: usize, key: (usize, usize), quantity: u32) {
        self.with(shard, key, |t| t.unknown_reserve += u64::from(quantity));
    }

    fn merged(&self) -> HashMap<(usize, usize), TierLedger> {
        let mut all: HashMap<(usize, usize), TierLedger> = HashMap::new();
        for shard in &self.shards {
            for (key, t) in shard.lock().expect("ledger lock").drain() {
                let into = all.entry(key).or_default();
                into.confirmed += t.confirmed;
                into.unknown_confirm += t.unknown_confirm;
                into.unknown_reserve += t.unknown_reserve;
                for (k, v) in t.open {
                    *into.open.entry(k).or_default() += v;
                }
                into.confirmed_seats.extend(t.confirmed_seats);
            }
        }
        all
    }

    /// The latest moment any open hold may expire, in wall-clock ms.
    pub fn latest_expiry_ms(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .expect("ledger lock")
                    .values()
                    .flat_map(|t| t.open.keys().map(|(_, hi)| hi * 1_000))
                    .max()
            })
            .max()
            .unwrap_or(0)
    }

    /// Compares the clients' account with the target's. `read_from_ms..read_until_ms` is when the
    /// target's counts were read; `grace_ms` is how late the target may release an expired hold.
    pub fn audit(
        &self,
        events: &[EventRef],
        counts: &[EventCounts],
        read_from_ms: u64,
        read_until_ms: u64,
        grace_ms: u64,
    ) -> (Vec<Check>, u64) {
        // The target's clock is this machine's; half a second covers rounding to whole seconds.
        const SKEW_MS: u64 = 500;
        let ledger = self.merged();
        let mut sums_ok = Vec::new();
        let mut sold_ok = Vec::new();
        let mut held_ok = Vec::new();
        let mut seats_once = Vec::new();
        let mut seats_match = Vec::new();
        let (mut capacity, mut sold, mut held, mut confirmed, mut recycled) = (0, 0, 0, 0, 0);
        for (e, (event, reported)) in events.iter().zip(counts).enumerate() {
            for (t, tier) in event.tiers.iter().enumerate() {
                let empty = TierLedger::default();
                let l = ledger.get(&(e, t)).unwrap_or(&empty);
                let name = format!("event {} tier {}", event.id, tier.code);
                let Some(r) = reported.tiers.iter().find(|c| c.code == tier.code) else {
                    sums_ok.push(format!("{name}: the target does not report this tier"));
                    continue;
                };
                capacity += r.capacity;
                sold += r.sold;
                held += r.held;
                confirmed += l.confirmed;
                if r.available + r.held + r.sold != r.capacity || r.capacity != tier.capacity {
                    sums_ok.push(format!(
                        "{name}: available {} + held {} + sold {} vs capacity {} (planned {})",
                        r.available, r.held, r.sold, r.capacity, tier.capacity
                    ));
                }
                if r.sold < l.confirmed || r.sold > l.confirmed + l.unknown_confirm {
                    sold_ok.push(format!(
                        "{name}: the target sold {} but clients were told {} (plus {} unknown)",
                        r.sold, l.confirmed, l.unknown_confirm
                    ));
                }
                let surely_held: u64 = l
                    .open
                    .iter()
                    .filter(|((lo, _), _)| lo * 1_000 > read_until_ms + SKEW_MS)
                    .map(|(_, q)| q)
                    .sum();
                let maybe_held: u64 = l
                    .open
                    .iter()
                    .filter(|((_, hi), _)| hi * 1_000 + grace_ms + SKEW_MS > read_from_ms)
                    .map(|(_, q)| q)
                    .sum();
                recycled += l.open.values().sum::<u64>() - maybe_held;
                let most = maybe_held + l.unknown_confirm + l.unknown_reserve;
                if r.held < surely_held || r.held > most {
                    held_ok.push(format!(
                        "{name}: the target holds {} but clients hold between {surely_held} and {most}",
                        r.held
                    ));
                }
                if tier.seat_map.is_some() {
                    let mut seen = std::collections::HashSet::new();
                    for seat in &l.confirmed_seats {
                        if !seen.insert(seat) {
                            seats_once.push(format!("{name}: seat {seat:?} bought twice"));
                        }
                    }
                    if l.unknown_confirm == 0 {
                        let sold_seats: std::collections::HashSet<_> =
                            reported.sold_seats.iter().collect();
                        if sold_seats != seen {
                            seats_match.push(format!(
                                "{name}: the target sold {} seats, clients bought {}",
                                sold_seats.len(),
                                seen.len()
                            ));
                        }
                    }
                }
            }
        }
        let check = |name: &str, failures: Vec<String>, detail: String| Check {
            name: name.into(),
            passed: failures.is_empty(),
            detail: if failures.is_empty() {
                detail
            } else {
                let shown: Vec<_> = failures.iter().take(5).cloned().collect();
                format!("{} failure(s): {}", failures.len(), shown.join("; "))
            },
        };
        let mut checks = vec![
            check(
                "available + held + sold == capacity",
                sums_ok,
                format!("{} tickets in all", capacity),
            ),
            check(
                "sold == confirmed to clients",
                sold_ok,
                format!("{sold} sold, {confirmed} confirmed to clients"),
            ),
            check(
                "held == holds not bought and not expired",
                held_ok,
                format!("{held} held at the target"),
            ),
        ];
        if events
            .iter()
            .any(|e| e.tiers.iter().any(|t| t.seat_map.is_some()))
        {
            checks.push(check(
                "no seat sold twice",
                seats_once,
                "every bought seat once".into(),
            ));
            checks.push(check(
                "sold seats == seats confirmed to clients",
                seats_match,
                "the same seats".into(),
            ));
        }
        (checks, recycled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::SeatPlan;
    use crate::target::{TierCounts, TierRef};

    fn event(seat_map: bool) -> Vec<EventRef> {
        vec![EventRef {
            id: "e".into(),
            tiers: vec![TierRef {
                code: "T".into(),
                capacity: 100,
                seat_map: seat_map.then_some(SeatPlan {
                    sections: 1,
                    rows: 10,
                    seats_per_row: 10,
                }),
            }],
        }]
    }

    fn counts(
        available: u64,
        held: u64,
        sold: u64,
        sold_seats: Vec<(String, String, String)>,
    ) -> Vec<EventCounts> {
        vec![EventCounts {
            tiers: vec![TierCounts {
                code: "T".into(),
                capacity: 100,
                available,
                held,
                sold,
            }],
            sold_seats,
        }]
    }

    fn seat(n: u32) -> (String, String, String) {
        ("S1".into(), "R1".into(), n.to_string())
    }

    /// 10 tickets bought; 5 held until a minute from `now`; 3 held until ten seconds ago.
    fn ledger(now: u64) -> Ledger {
        let ledger = Ledger::default();
        ledger.confirmed(0, (0, 0), 10, vec![]);
        let future = ExpiryWindow {
            earliest_ms: now + 60_000,
            latest_ms: now + 60_050,
        };
        ledger.open(1, (0, 0), 5, future);
        let past = ExpiryWindow {
            earliest_ms: now - 10_050,
            latest_ms: now - 10_000,
        };
        ledger.open(2, (0, 0), 3, past);
        ledger
    }

    fn failed(checks: &[Check]) -> Vec<&str> {
        checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect()
    }

    #[test]
    fn agreeing_accounts_pass_and_count_the_recycled_holds() {
        let now = wall_ms();
        let (checks, recycled) =
            ledger(now).audit(&event(false), &counts(85, 5, 10, vec![]), now, now, 1_000);
        assert_eq!(failed(&checks), Vec::<&str>::new());
        assert_eq!(recycled, 3);
    }

    #[test]
    fn each_disagreement_fails_its_check() {
        let now = wall_ms();
        let audit = |c: Vec<EventCounts>| ledger(now).audit(&event(false), &c, now, now, 1_000).0;
        // A ticket sold that no client was told about.
        assert_eq!(
            failed(&audit(counts(84, 5, 11, vec![]))),
            ["sold == confirmed to clients"]
        );
        // An acknowledged hold lost.
        assert_eq!(
            failed(&audit(counts(86, 4, 10, vec![]))),
            ["held == holds not bought and not expired"]
        );
        // An expired hold whose tickets never came back on sale.
        assert_eq!(
            failed(&audit(counts(82, 8, 10, vec![]))),
            ["held == holds not bought and not expired"]
        );
        // Counts that do not add up.
        assert_eq!(
            failed(&audit(counts(90, 5, 10, vec![]))),
            ["available + held + sold == capacity"]
        );
    }

    #[test]
    fn a_seat_bought_twice_fails_the_audit() {
        let now = wall_ms();
        let ledger = Ledger::default();
        ledger.confirmed(0, (0, 0), 2, vec![seat(1), seat(2)]);
        ledger.confirmed(1, (0, 0), 1, vec![seat(2)]);
        let (checks, _) = ledger.audit(
            &event(true),
            &counts(97, 0, 3, vec![seat(1), seat(2)]),
            now,
            now,
            1_000,
        );
        assert_eq!(failed(&checks), ["no seat sold twice"]);
        let ledger = Ledger::default();
        ledger.confirmed(0, (0, 0), 2, vec![seat(1), seat(2)]);
        let (checks, _) = ledger.audit(
            &event(true),
            &counts(98, 0, 2, vec![seat(1), seat(2)]),
            now,
            now,
            1_000,
        );
        assert_eq!(failed(&checks), Vec::<&str>::new());
    }
}
