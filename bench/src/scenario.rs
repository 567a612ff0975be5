//! What a run asks of a target: the events on sale, the shoppers and pollers, and the load's shape
//! (closed or open loop). Built-in scenarios cover the usual ticket drops; a team's own mix comes
//! from a TOML file with the same fields (`bench/scenarios/*.toml` are examples). Validated once,
//! before anything starts; nothing here does I/O beyond reading the file.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// The longest run a scenario may ask for: the timeline and the audit's bookkeeping are sized by
/// it.
const MAX_DURATION_SECONDS: f64 = 3_600.0;
/// Concurrency and rates are bounded so a typo cannot exhaust the machine's memory or ports.
const MAX_CONCURRENCY: u32 = 100_000;
const MAX_EVENTS: u32 = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds every random choice (quantities, abandons, seats, events), so two runs of one scenario
    /// send the same mix.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Measured time, after the warm-up.
    #[serde(default = "default_duration")]
    pub duration_seconds: f64,
    /// Load before measuring starts; its answers count in the audit, not in the figures.
    #[serde(default = "default_warmup")]
    pub warmup_seconds: f64,
    /// Stop after this many measured shopper visits, if sooner than `duration_seconds`.
    #[serde(default)]
    pub requests: Option<u64>,
    pub load: Load,
    pub events: Events,
    #[serde(default)]
    pub shoppers: Shoppers,
    #[serde(default)]
    pub pollers: Pollers,
    #[serde(default)]
    pub audit: AuditPlan,
}

/// How shoppers arrive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Load {
    /// A fixed number of shoppers, each starting a new visit when the last one ends.
    Closed { concurrency: u32 },
    /// Visits start at a fixed rate whatever the answers' speed; latency is measured from each
    /// request's intended send time, so a stall shows in the figures (no coordinated omission).
    /// At most `max_in_flight` visits run at once; later ones wait, and that wait is counted.
    Open {
        rate_per_second: f64,
        #[serde(default = "default_max_in_flight")]
        max_in_flight: u32,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// Events on sale at once; each has the tiers below.
    #[serde(default = "one")]
    pub count: u32,
    pub tiers: Vec<TierPlan>,
    /// The TTL asked for on every hold; abandoned holds come back on sale after it.
    #[serde(default = "default_ttl")]
    pub hold_ttl_seconds: u32,
    #[serde(default)]
    pub customer_limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierPlan {
    pub code: String,
    #[serde(default = "default_price")]
    pub price_minor: u64,
    #[serde(default = "default_max_per_order")]
    pub max_per_order: u32,
    /// General admission: this many tickets. Exactly one of `capacity` and `seat_map`.
    #[serde(default)]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub seat_map: Option<SeatPlan>,
}

/// A regular seat map: sections of rows of numbered seats.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatPlan {
    pub sections: u32,
    pub rows: u32,
    pub seats_per_row: u32,
}

impl SeatPlan {
    pub fn capacity(&self) -> u64 {
        u64::from(self.sections) * u64::from(self.rows) * u64::from(self.seats_per_row)
    }
}

impl TierPlan {
    pub fn capacity(&self) -> u64 {
        match (&self.capacity, &self.seat_map) {
            (Some(c), _) => u64::from(*c),
            (None, Some(map)) => map.capacity(),
            (None, None) => 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shoppers {
    /// Tickets per reservation and their weights: `[[1, 50], [2, 30], [4, 20]]`.
    #[serde(default = "default_quantities")]
    pub quantity: Vec<(u32, u32)>,
    /// Share of shoppers who walk away from their hold, which then expires.
    #[serde(default)]
    pub abandon_share: f64,
    /// Time between the hold and the confirm for shoppers who buy.
    #[serde(default)]
    pub think_time_ms: u64,
    /// Distinct customer ids the shoppers use (per-customer limits count by it).
    #[serde(default = "default_customers")]
    pub customers: u32,
    /// On seat maps: the share of reservations that name their seats (the rest ask for the best
    /// available), picked side by side among the first `hot_rows` rows, where contention is.
    #[serde(default)]
    pub named_seat_share: f64,
    #[serde(default = "default_hot_rows")]
    pub hot_rows: u32,
}

impl Default for Shoppers {
    fn default() -> Self {
        Shoppers {
            quantity: default_quantities(),
            abandon_share: 0.0,
            think_time_ms: 0,
            customers: default_customers(),
            named_seat_share: 0.0,
            hot_rows: default_hot_rows(),
        }
    }
}

/// Readers: pollers ask for availability in a closed loop, watchers hold a watch stream open.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pollers {
    #[serde(default)]
    pub concurrency: u32,
    /// Pause between a poller's requests (0: back to back).
    #[serde(default)]
    pub interval_ms: u64,
    /// Ask for every seat's state, not just the tier counts.
    #[serde(default)]
    pub include_seats: bool,
    /// Open WatchAvailability streams, spread over the events (gRPC targets only).
    #[serde(default)]
    pub watchers: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPlan {
    /// After the run, wait at most this long for abandoned holds to expire so the audit can
    /// require that none is still held. Longer TTLs are audited with expiry windows instead.
    #[serde(default = "default_audit_wait")]
    pub max_wait_seconds: f64,
}

impl Default for AuditPlan {
    fn default() -> Self {
        AuditPlan {
            max_wait_seconds: default_audit_wait(),
        }
    }
}

fn default_seed() -> u64 {
    42
}
fn default_duration() -> f64 {
    10.0
}
fn default_warmup() -> f64 {
    1.0
}
fn default_max_in_flight() -> u32 {
    10_000
}
fn one() -> u32 {
    1
}
fn default_ttl() -> u32 {
    600
}
fn default_price() -> u64 {
    5_000
}
fn default_max_per_order() -> u32 {
    8
}
fn default_quantities() -> Vec<(u32, u32)> {
    vec![(1, 1)]
}
fn default_customers() -> u32 {
    1_000_000
}
fn default_hot_rows() -> u32 {
    3
}
fn default_audit_wait() -> f64 {
    30.0
}

/// The built-in scenarios, by name, with what they model.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "hot-drop",
        "one event, 50,000 GA tickets, 1,000 shoppers taking 1-4 tickets; 20% abandon their hold (5 s TTL), the rest confirm after 50 ms",
    ),
    (
        "throughput",
        "one event with more tickets than a run can sell, one ticket per reservation, no confirms: the reservation path's ceiling",
    ),
    (
        "many-events",
        "200 events of 500 tickets each on sale at once, 1,000 shoppers spread over them",
    ),
    (
        "seat-map",
        "one 20,000-seat map; 70% ask for the best available 1-4 seats, 30% name seats in the front rows, where they collide",
    ),
    (
        "availability",
        "read-heavy: 200 pollers and 200 watchers on one event while 50 shoppers buy",
    ),
];

impl Scenario {
    pub fn built_in(name: &str) -> Result<Scenario> {
        let ga = |capacity| TierPlan {
            code: "GA".into(),
            price_minor: default_price(),
            max_per_order: default_max_per_order(),
            capacity: Some(capacity),
            seat_map: None,
        };
        let base = |name: &str, tiers, concurrency| Scenario {
            name: name.into(),
            description: BUILT_IN
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, d)| d.to_string())
                .unwrap_or_default(),
            seed: default_seed(),
            duration_seconds: default_duration(),
            warmup_seconds: default_warmup(),
            requests: None,
            load: Load::Closed { concurrency },
            events: Events {
                count: 1,
                tiers,
                hold_ttl_seconds: default_ttl(),
                customer_limit: None,
            },
            shoppers: Shoppers::default(),
            pollers: Pollers::default(),
            audit: AuditPlan::default(),
        };
        let scenario = match name {
            "hot-drop" => {
                let mut s = base(name, vec![ga(50_000)], 1_000);
                s.events.hold_ttl_seconds = 5;
                s.shoppers.quantity = vec![(1, 40), (2, 40), (3, 10), (4, 10)];
                s.shoppers.abandon_share = 0.2;
                s.shoppers.think_time_ms = 50;
                s
            }
            "throughput" => {
                let mut s = base(name, vec![ga(1_000_000_000)], 1_000);
                s.shoppers.abandon_share = 1.0;
                s.warmup_seconds = 1.0;
                s
            }
            "many-events" => {
                let mut s = base(name, vec![ga(500)], 1_000);
                s.events.count = 200;
                s.events.hold_ttl_seconds = 5;
                s.shoppers.quantity = vec![(1, 50), (2, 50)];
                s.shoppers.abandon_share = 0.1;
                s
            }
            "seat-map" => {
                let map = TierPlan {
                    code: "STALLS".into(),
                    price_minor: 8_000,
                    max_per_order: 8,
                    capacity: None,
                    seat_map: Some(SeatPlan {
                        sections: 4,
                        rows: 50,
                        seats_per_row: 100,
                    }),
                };
                let mut s = base(name, vec![map], 500);
                s.events.hold_ttl_seconds = 5;
                s.shoppers.quantity = vec![(1, 20), (2, 50), (3, 10), (4, 20)];
                s.shoppers.abandon_share = 0.2;
                s.shoppers.named_seat_share = 0.3;
                s
            }
            "availability" => {
                let mut s = base(name, vec![ga(1_000_000)], 50);
                s.shoppers.quantity = vec![(1, 50), (2, 50)];
                s.pollers.concurrency = 200;
                s.pollers.interval_ms = 10;
                s.pollers.watchers = 200;
                s
            }
            other => bail!(
                "no built-in scenario `{other}`; built in: {}; or give a TOML file",
                BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        scenario.validate()?;
        Ok(scenario)
    }

    /// A built-in name, or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Scenario> {
        let path = Path::new(name_or_path);
        if name_or_path.ends_with(".toml") || path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read scenario file {}", path.display()))?;
            Scenario::from_toml(&text).with_context(|| format!("scenario file {}", path.display()))
        } else {
            Scenario::built_in(name_or_path)
        }
    }

    /// A scenario file's text, parsed and validated; no I/O (the fuzz target `bench_scenario`
    /// drives it).
    pub fn from_toml(text: &str) -> Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(!self.name.is_empty(), "name: must not be empty");
        ensure!(
            self.duration_seconds > 0.0 && self.duration_seconds <= MAX_DURATION_SECONDS,
            "duration_seconds: must be in (0, {MAX_DURATION_SECONDS}]"
        );
        ensure!(
            (0.0..=MAX_DURATION_SECONDS).contains(&self.warmup_seconds),
            "warmup_seconds: must be in [0, {MAX_DURATION_SECONDS}]"
        );
        if let Some(requests) = self.requests {
            ensure!(requests > 0, "requests: must be at least 1 when set");
        }
        match &self.load {
            Load::Closed { concurrency } => ensure!(
                (1..=MAX_CONCURRENCY).contains(concurrency),
                "load.concurrency: must be in 1..={MAX_CONCURRENCY}"
            ),
            Load::Open {
                rate_per_second,
                max_in_flight,
            } => {
                ensure!(
                    *rate_per_second > 0.0 && *rate_per_second <= 10_000_000.0,
                    "load.rate_per_second: must be in (0, 10000000]"
                );
                ensure!(
                    (1..=MAX_CONCURRENCY).contains(max_in_flight),
                    "load.max_in_flight: must be in 1..={MAX_CONCURRENCY}"
                );
            }
        }
        ensure!(
            (1..=MAX_EVENTS).contains(&self.events.count),
            "events.count: must be in 1..={MAX_EVENTS}"
        );
        ensure!(
            !self.events.tiers.is_empty(),
            "events.tiers: at least one tier"
        );
        ensure!(
            self.events.hold_ttl_seconds >= 1,
            "events.hold_ttl_seconds: at least 1"
        );
        for (i, tier) in self.events.tiers.iter().enumerate() {
            ensure!(!tier.code.is_empty(), "events.tiers[{i}].code: empty");
            ensure!(
                tier.max_per_order >= 1,
                "events.tiers[{i}].max_per_order: at least 1"
            );
            match (&tier.capacity, &tier.seat_map) {
                (Some(c), None) => ensure!(*c >= 1, "events.tiers[{i}].capacity: at least 1"),
                (None, Some(map)) => ensure!(
                    map.sections >= 1 && map.rows >= 1 && map.seats_per_row >= 1,
                    "events.tiers[{i}].seat_map: sections, rows and seats_per_row at least 1"
                ),
                _ => bail!("events.tiers[{i}]: exactly one of capacity and seat_map"),
            }
        }
        let shoppers = &self.shoppers;
        ensure!(
            !shoppers.quantity.is_empty()
                && shoppers.quantity.iter().all(|(q, _)| *q >= 1)
                && shoppers.quantity.iter().any(|(_, w)| *w > 0),
            "shoppers.quantity: [tickets, weight] pairs, tickets at least 1, some weight above 0"
        );
        let most = shoppers.quantity.iter().map(|(q, _)| *q).max().unwrap_or(1);
        for tier in &self.events.tiers {
            ensure!(
                most <= tier.max_per_order,
                "shoppers.quantity: {most} tickets is over tier {}'s max_per_order {}",
                tier.code,
                tier.max_per_order
            );
            if let Some(map) = &tier.seat_map {
                ensure!(
                    most <= map.seats_per_row,
                    "shoppers.quantity: {most} seats side by side do not fit in a row of {}",
                    map.seats_per_row
                );
            }
        }
        for (name, share) in [
            ("abandon_share", shoppers.abandon_share),
            ("named_seat_share", shoppers.named_seat_share),
        ] {
            ensure!(
                (0.0..=1.0).contains(&share),
                "shoppers.{name}: must be in [0, 1]"
            );
        }
        ensure!(shoppers.customers >= 1, "shoppers.customers: at least 1");
        ensure!(shoppers.hot_rows >= 1, "shoppers.hot_rows: at least 1");
        ensure!(
            self.pollers.concurrency <= MAX_CONCURRENCY && self.pollers.watchers <= MAX_CONCURRENCY,
            "pollers: concurrency and watchers at most {MAX_CONCURRENCY}"
        );
        ensure!(
            (0.0..=600.0).contains(&self.audit.max_wait_seconds),
            "audit.max_wait_seconds: must be in [0, 600]"
        );
        Ok(())
    }

    pub fn has_seat_maps(&self) -> bool {
        self.events.tiers.iter().any(|t| t.seat_map.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_is_valid() {
        for (name, _) in BUILT_IN {
            Scenario::built_in(name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn example_files_parse_and_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("bench/scenarios") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Scenario::load(path.to_str().expect("utf-8"))
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no example scenario in {}", dir.display());
    }

    #[test]
    fn bad_files_name_the_field() {
        let check = |text: &str, expected: &str| {
            let error = toml::from_str::<Scenario>(text)
                .map_err(anyhow::Error::from)
                .and_then(|s| s.validate().map(|()| s))
                .expect_err(text);
            let message = format!("{error:#}");
            assert!(message.contains(expected), "{message} lacks {expected}");
        };
        let tiers = "[[events.tiers]]\ncode = \"GA\"\ncapacity = 10\n";
        check(
            &format!(
                "name = \"x\"\nload = {{ kind = \"closed\", concurrency = 0 }}\n[events]\n{tiers}"
            ),
            "load.concurrency",
        );
        check(
            &format!(
                "name = \"x\"\nspeed = 3\nload = {{ kind = \"closed\", concurrency = 1 }}\n[events]\n{tiers}"
            ),
            "speed",
        );
        check(
            "name = \"x\"\nload = { kind = \"closed\", concurrency = 1 }\n[events]\n[[events.tiers]]\ncode = \"GA\"\n",
            "exactly one of capacity and seat_map",
        );
        check(
            &format!(
                "name = \"x\"\nload = {{ kind = \"open\", rate_per_second = -1 }}\n[events]\n{tiers}"
            ),
            "load.rate_per_second",
        );
        check(
            &format!(
                "name = \"x\"\nload = {{ kind = \"closed\", concurrency = 1 }}\n[shoppers]\nquantity = [[9, 1]]\n[events]\n{tiers}"
            ),
            "max_per_order",
        );
    }
}
