//! The inventory of one event as a pure state machine: it decides requests and applies log records.
//! It does no I/O, reads no clock and draws no random numbers: time and ids are arguments, so the
//! same records always rebuild the same state.
//!
//! Every change goes through two steps. A command (`reserve`, `confirm`, ...) checks the request
//! against the state and, if it is allowed, produces a [`Record`]; `apply` then performs that
//! record. Recovery calls the same `apply` on the records read back from the log. After every
//! applied record the per-tier invariant `available + held + sold == capacity` is asserted, in
//! release builds too, and seat ownership is checked before each seat changes hands.

mod ended;
mod footprint;
pub mod model;
pub mod rejection;
mod seating;
mod sharded;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Maps keyed by ids and customer strings: foldhash is several times faster than SipHash here and
/// still randomly seeded per process, so customers cannot pick colliding keys ahead of time.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

use ended::EndedNotes;
pub use model::*;
pub use rejection::Rejection;
use seating::RowIndex;
use sharded::ShardedMap;

/// The limits that shape decisions. Not part of the state: changing them between restarts changes
/// what new requests may do, never how recorded ones replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_items_per_request: u32,
    pub max_tickets_per_request: u32,
    pub max_open_holds_per_event: u32,
    pub max_open_holds_per_customer: u32,
    pub max_tiers_per_event: u32,
    pub max_seats_per_event: u32,
    pub max_capacity_per_tier: u32,
    pub max_sale_windows_per_tier: u32,
    pub max_string_bytes: u32,
    pub min_hold_ttl_ms: u64,
    pub max_hold_ttl_ms: u64,
    pub idempotency_retention_ms: u64,
    pub max_keys_per_event: usize,
    pub ended_hold_retention_ms: u64,
    pub max_ended_hold_notes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&config::Config::default())
    }
}

impl From<&config::Config> for Limits {
    fn from(c: &config::Config) -> Self {
        let l = &c.limits;
        Limits {
            max_items_per_request: l.max_items_per_request,
            max_tickets_per_request: l.max_tickets_per_request,
            max_open_holds_per_event: l.max_open_holds_per_event,
            max_open_holds_per_customer: l.max_open_holds_per_customer,
            max_tiers_per_event: l.max_tiers_per_event,
            max_seats_per_event: l.max_seats_per_event,
            max_capacity_per_tier: l.max_capacity_per_tier,
            max_sale_windows_per_tier: l.max_sale_windows_per_tier,
            max_string_bytes: l.max_string_bytes,
            min_hold_ttl_ms: c.holds.min_hold_ttl_ms,
            max_hold_ttl_ms: c.holds.max_hold_ttl_ms,
            idempotency_retention_ms: c.idempotency.retention_ms,
            max_keys_per_event: c.idempotency.max_keys_per_event as usize,
            ended_hold_retention_ms: c.holds.ended_hold_retention_ms,
            max_ended_hold_notes: c.holds.max_ended_hold_notes as usize,
        }
    }
}

/// One tier's share of a hold or order, by index: tier index into the spec, seat indices into the
/// event's seat table.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LineRecord {
    pub tier: u16,
    pub quantity: u32,
    pub seats: Vec<u32>,
    pub unit_price_minor: u64,
    pub unit_fee_minor: u64,
}

/// What one reserve item asks for, once its tier and seats are resolved.
enum Ask {
    Count(u32),
    Named(Vec<u32>),
    Best(u32),
}

/// A client key and the fingerprint of the request it came with.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    pub key: String,
    pub fingerprint: u64,
}

/// A change to an event, as written to the log. Records are facts: applying one cannot fail.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Record {
    Created {
        spec: EventSpec,
    },
    StatusChanged {
        status: EventStatus,
        at_ms: u64,
    },
    HoldPlaced {
        hold_id: HoldId,
        customer: Arc<str>,
        lines: Vec<LineRecord>,
        created_at_ms: u64,
        expires_at_ms: u64,
        key: Option<KeyRecord>,
    },
    HoldReleased {
        hold_id: HoldId,
        at_ms: u64,
        key: Option<KeyRecord>,
    },
    HoldsExpired {
        hold_ids: Vec<HoldId>,
        at_ms: u64,
    },
    HoldConfirmed {
        hold_id: HoldId,
        order_id: OrderId,
        payment_ref: String,
        lines: Vec<LineRecord>,
        at_ms: u64,
        key: Option<KeyRecord>,
    },
    OrderCancelled {
        order_id: OrderId,
        reason: String,
        at_ms: u64,
        key: Option<KeyRecord>,
    },
}

/// The outcome of an allowed command: the record to log (none when a retried key repeats the first
/// answer) and the answer for the caller, to be sent once the record is durable.
#[derive(Debug)]
pub struct Decision<T> {
    pub record: Option<Record>,
    pub answer: T,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct TierState {
    capacity: u32,
    available: u32,
    held: u32,
    sold: u32,
    /// Rows of a seated tier, front first; empty for general admission.
    rows: Vec<RowIndex>,
}

/// Where a seat is, fixed at creation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SeatSlot {
    tier: u16,
    /// Index into the tier's `rows`.
    row: u32,
    label: SeatRef,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum Owner {
    Free,
    Held(HoldId),
    Sold(OrderId),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HoldState {
    customer: Arc<str>,
    lines: Vec<LineRecord>,
    tickets: u32,
    created_at_ms: u64,
    expires_at_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OrderState {
    hold_id: HoldId,
    customer: Arc<str>,
    lines: Vec<LineRecord>,
    tickets: u32,
    payment_ref: String,
    status: OrderStatus,
    created_at_ms: u64,
    updated_at_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum HoldEnd {
    Released,
    Expired,
    Confirmed(OrderId),
}

#[derive(Clone, Copy, Default, Debug, Serialize, Deserialize)]
struct Tally {
    /// Tickets in live holds and in orders that are not cancelled or refunded.
    tickets: u32,
    open_holds: u32,
}

/// Which command a client key belongs to; keys of different commands never collide.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
enum KeyScope {
    Reserve,
    Confirm,
    Release,
    Cancel,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
struct KeyId {
    scope: KeyScope,
    /// The customer, for reserve keys; empty otherwise.
    owner: String,
    key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Answer {
    Hold(Hold),
    Order(Order),
    Released(Hold),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeyEntry {
    fingerprint: u64,
    at_ms: u64,
    answer: Answer,
}

/// The state of one event. Serializable as a whole: that is the snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Inventory {
    spec: EventSpec,
    status: EventStatus,
    tiers: Vec<TierState>,
    seats: Vec<SeatSlot>,
    owners: Vec<Owner>,
    holds: ShardedMap<HoldId, HoldState>,
    /// Holds by deadline (ms), earliest first. Confirmed and released holds leave their entry
    /// behind; it is dropped when its deadline comes first (`drop_stale_deadlines`), so stale
    /// entries are bounded by the longest TTL. Holds sharing a millisecond share a list: a push
    /// is mostly onto the last list, and no single array grows to millions (a binary heap
    /// doubling at 2M entries stalled the event 130 ms).
    expiry: BTreeMap<u64, Vec<HoldId>>,
    orders: ShardedMap<OrderId, OrderState>,
    customers: ShardedMap<Arc<str>, Tally>,
    /// How recently ended holds ended, for precise answers to late confirms.
    ended: EndedNotes,
    /// The order each confirmed hold became; derived from `orders`, rebuilt on restore.
    #[serde(skip)]
    order_of_hold: ShardedMap<HoldId, OrderId>,
    keys: HashMap<KeyId, KeyEntry>,
    key_queue: VecDeque<(u64, KeyId)>,
    /// Records applied so far; the log sequence number of the next record.
    applied: u64,
    #[serde(skip)]
    lookup: Lookup,
    /// What the spec and the seat tables take in memory; derived, rebuilt on restore.
    #[serde(skip)]
    fixed_bytes: u64,
}

/// Indexes rebuilt from the spec; never serialized.
#[derive(Clone, Debug, Default)]
struct Lookup {
    tier_by_code: HashMap<String, u16>,
    /// Tier codes shared by every answer that names them.
    tier_codes: Vec<Arc<str>>,
    seat_by_ref: HashMap<SeatRef, u32>,
}

impl Lookup {
    fn build(spec: &EventSpec, seats: &[SeatSlot]) -> Lookup {
        Lookup {
            tier_codes: spec
                .tiers
                .iter()
                .map(|t| Arc::from(t.code.as_str()))
                .collect(),
            tier_by_code: spec
                .tiers
                .iter()
                .enumerate()
                .map(|(i, t)| (t.code.clone(), i as u16))
                .collect(),
            seat_by_ref: seats
                .iter()
                .enumerate()
                .map(|(i, s)| (s.label.clone(), i as u32))
                .collect(),
        }
    }
}

/// Largest number of holds and customers an event's tables are sized for at creation.
const PRESIZE_MAX: usize = 1 << 21;

/// Fingerprint of a request for idempotency: FNV-1a over its `Hash` feed. FNV has fixed constants,
/// so a fingerprint stored in a snapshot matches the same request after a restart.
fn fingerprint<T: Hash>(value: &T) -> u64 {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 ^= u64::from(*b);
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    value.hash(&mut h);
    h.finish()
}

fn check_string(what: &str, value: &str, limits: &Limits) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > limits.max_string_bytes as usize {
        return Err(Rejection::Invalid(format!(
            "{what} is {} bytes, over the limit of {}",
            value.len(),
            limits.max_string_bytes
        )));
    }
    Ok(())
}

/// A request's client key: where its first answer is kept, and what goes into the record.
struct Keyed {
    id: KeyId,
    record: KeyRecord,
}

/// Checks a request's optional client key and, if there is one, fingerprints the request (only
/// then: the hash is not free on the hot path).
fn keyed<T: Hash>(
    scope: KeyScope,
    owner: &str,
    key: &Option<String>,
    request: &T,
    limits: &Limits,
) -> Result<Option<Keyed>, Rejection> {
    let Some(key) = key else {
        return Ok(None);
    };
    check_string("idempotency key", key, limits)?;
    Ok(Some(Keyed {
        id: KeyId {
            scope,
            owner: owner.to_string(),
            key: key.clone(),
        },
        record: KeyRecord {
            key: key.clone(),
            fingerprint: fingerprint(request),
        },
    }))
}

/// Checks an event spec against the limits; an `Err` names the first problem.
pub fn validate_spec(spec: &EventSpec, limits: &Limits) -> Result<(), Rejection> {
    let invalid = |m: String| Err(Rejection::Invalid(m));
    check_string("event name", &spec.name, limits)?;
    check_string("venue", &spec.venue, limits)?;
    if spec.status == EventStatus::Closed {
        return invalid("a new event cannot start closed".into());
    }
    if spec.tiers.is_empty() {
        return invalid("an event needs at least one tier".into());
    }
    if spec.tiers.len() > limits.max_tiers_per_event as usize {
        return invalid(format!(
            "{} tiers, over the limit of {}",
            spec.tiers.len(),
            limits.max_tiers_per_event
        ));
    }
    if !(limits.min_hold_ttl_ms..=limits.max_hold_ttl_ms).contains(&spec.hold_ttl_ms) {
        return Err(Rejection::HoldTtlOutOfRange {
            requested_ms: spec.hold_ttl_ms,
            min_ms: limits.min_hold_ttl_ms,
            max_ms: limits.max_hold_ttl_ms,
        });
    }
    if spec.customer_limit == Some(0) {
        return invalid("customer limit must be at least 1 (or absent for no limit)".into());
    }
    if Currency::parse(spec.currency.as_str()).is_none() {
        return invalid("currency must be three upper-case letters".into());
    }
    let mut codes = HashSet::default();
    let mut seats = HashSet::default();
    for tier in &spec.tiers {
        check_string("tier code", &tier.code, limits)?;
        check_string("tier name", &tier.name, limits)?;
        if !codes.insert(tier.code.as_str()) {
            return invalid(format!("tier code `{}` is used twice", tier.code));
        }
        if tier.max_per_order == 0 {
            return invalid(format!(
                "tier `{}` max per order must be at least 1",
                tier.code
            ));
        }
        if tier.price_minor.checked_add(tier.fee_minor).is_none()
            || tier.price_minor > u64::MAX / u64::from(limits.max_tickets_per_request) / 2
        {
            return invalid(format!("tier `{}` price is too large", tier.code));
        }
        if tier.sale_windows.len() > limits.max_sale_windows_per_tier as usize {
            return invalid(format!(
                "tier `{}` has {} sale windows, over the limit of {}",
                tier.code,
                tier.sale_windows.len(),
                limits.max_sale_windows_per_tier
            ));
        }
        if let Some(w) = tier
            .sale_windows
            .iter()
            .find(|w| w.opens_at_ms >= w.closes_at_ms)
        {
            return invalid(format!(
                "tier `{}` sale window opens at {} but closes at {}",
                tier.code, w.opens_at_ms, w.closes_at_ms
            ));
        }
        match &tier.stock {
            Stock::General { capacity } => {
                if *capacity == 0 || *capacity > limits.max_capacity_per_tier {
                    return invalid(format!(
                        "tier `{}` capacity {capacity} is outside 1..={}",
                        tier.code, limits.max_capacity_per_tier
                    ));
                }
            }
            Stock::Seated { sections } => {
                let mut count = 0usize;
                for section in sections {
                    check_string("section name", &section.name, limits)?;
                    for row in &section.rows {
                        check_string("row name", &row.name, limits)?;
                        for number in &row.seats {
                            check_string("seat number", number, limits)?;
                            let seat = SeatRef {
                                section: section.name.clone(),
                                row: row.name.clone(),
                                number: number.clone(),
                            };
                            if !seats.insert(seat.clone()) {
                                return invalid(format!("seat {seat} is listed twice"));
                            }
                            count += 1;
                        }
                    }
                }
                if count == 0 {
                    return invalid(format!("seated tier `{}` has no seats", tier.code));
                }
            }
        }
    }
    if seats.len() > limits.max_seats_per_event as usize {
        return invalid(format!(
            "{} seats, over the limit of {}",
            seats.len(),
            limits.max_seats_per_event
        ));
    }
    Ok(())
}

impl Inventory {
    /// Decides a new event: the spec is validated and becomes the event's first record.
    pub fn create(spec: EventSpec, limits: &Limits) -> Result<(Inventory, Record), Rejection> {
        validate_spec(&spec, limits)?;
        let record = Record::Created { spec };
        let inventory = Inventory::from_created(&record);
        Ok((inventory, record))
    }

    /// Builds the state a `Created` record describes; the start of every replay.
    ///
    /// Panics if `record` is not `Created`: a log whose first record is anything else is corrupt.
    pub fn from_created(record: &Record) -> Inventory {
        let Record::Created { spec } = record else {
            panic!("the first record of an event must be Created, found {record:?}");
        };
        let mut tiers = Vec::with_capacity(spec.tiers.len());
        let mut seats = Vec::new();
        for (ti, tier) in spec.tiers.iter().enumerate() {
            match &tier.stock {
                Stock::General { capacity } => tiers.push(TierState {
                    capacity: *capacity,
                    available: *capacity,
                    held: 0,
                    sold: 0,
                    rows: Vec::new(),
                }),
                Stock::Seated { sections } => {
                    // Front first across sections: every section's row 0, then every row 1, ...
                    let mut ranked: Vec<(usize, usize, &SectionSpec, &RowSpec)> = sections
                        .iter()
                        .enumerate()
                        .flat_map(|(si, s)| {
                            s.rows.iter().enumerate().map(move |(ri, r)| (ri, si, s, r))
                        })
                        .collect();
                    ranked.sort_by_key(|(ri, si, _, _)| (*ri, *si));
                    let mut rows = Vec::with_capacity(ranked.len());
                    for (_, _, section, row) in ranked {
                        let row_index = rows.len() as u32;
                        let mut ids = Vec::with_capacity(row.seats.len());
                        for number in &row.seats {
                            ids.push(seats.len() as u32);
                            seats.push(SeatSlot {
                                tier: ti as u16,
                                row: row_index,
                                label: SeatRef {
                                    section: section.name.clone(),
                                    row: row.name.clone(),
                                    number: number.clone(),
                                },
                            });
                        }
                        rows.push(RowIndex {
                            free: ids.len() as u32,
                            seats: ids,
                        });
                    }
                    let capacity = rows.iter().map(|r| r.free).sum();
                    tiers.push(TierState {
                        capacity,
                        available: capacity,
                        held: 0,
                        sold: 0,
                        rows,
                    });
                }
            }
        }
        let lookup = Lookup::build(spec, &seats);
        let fixed_bytes = Inventory::fixed_bytes(spec, &seats);
        // Room for the whole event up front, up to a cap: a drop then fills its tables instead
        // of growing them (measured: a 1M-ticket drop sold out in ~1.0 s sized, ~1.5-2.2 s not).
        let expected: usize = tiers
            .iter()
            .map(|t| t.capacity as usize)
            .sum::<usize>()
            .min(PRESIZE_MAX);
        let inventory = Inventory {
            status: spec.status,
            spec: spec.clone(),
            owners: vec![Owner::Free; seats.len()],
            tiers,
            seats,
            holds: ShardedMap::with_capacity(expected),
            expiry: BTreeMap::new(),
            orders: ShardedMap::default(),
            customers: ShardedMap::with_capacity(expected),
            ended: EndedNotes::default(),
            order_of_hold: ShardedMap::default(),
            keys: HashMap::default(),
            key_queue: VecDeque::new(),
            applied: 1,
            lookup,
            fixed_bytes,
        };
        inventory.audit();
        inventory
    }

    /// Rebuilds the indexes a deserialized snapshot lacks. It does not audit: recovery audits
    /// once, after the records past the snapshot are applied too.
    pub fn restored(mut self) -> Inventory {
        self.lookup = Lookup::build(&self.spec, &self.seats);
        self.fixed_bytes = Inventory::fixed_bytes(&self.spec, &self.seats);
        self.order_of_hold = self.orders.iter().map(|(id, o)| (o.hold_id, *id)).collect();
        self
    }

    /// The event as created; its status is `summary().status`.
    pub fn spec(&self) -> &EventSpec {
        &self.spec
    }

    pub fn id(&self) -> EventId {
        self.spec.id
    }

    /// Records applied so far, `Created` included.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn open_holds(&self) -> usize {
        self.holds.len()
    }

    /// How many holds, orders, client keys and ended-hold notes the state carries: what a
    /// snapshot costs to write, roughly.
    pub fn state_size(&self) -> usize {
        self.holds.len() + self.orders.len() + self.keys.len() + self.ended.len()
    }

    /// The earliest deadline among live holds.
    pub fn next_expiry_ms(&mut self) -> Option<u64> {
        self.drop_stale_deadlines();
        self.expiry.first_key_value().map(|(at, _)| *at)
    }

    /// Drops ended holds from the top of the earliest deadline's list, and the list once empty,
    /// until a live hold is on top. Every entry is looked at once here, so this is cheap however
    /// many holds were confirmed or released before their deadline.
    fn drop_stale_deadlines(&mut self) {
        while let Some(mut first) = self.expiry.first_entry() {
            let at = *first.key();
            let ids = first.get_mut();
            while let Some(id) = ids.last() {
                if self.holds.get(id).is_some_and(|h| h.expires_at_ms == at) {
                    return;
                }
                ids.pop();
            }
            first.remove();
        }
    }

    // ------------------------------------------------------------------------------------------
    // Commands: decide, then apply the record they produce.
    // ------------------------------------------------------------------------------------------

    /// Decides a reservation. `hold_id` is the id the new hold gets; `now_ms` is the decision time.
    pub fn reserve(
        &mut self,
        req: &ReserveRequest,
        hold_id: HoldId,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Hold>, Rejection> {
        let (keyed, repeated) = self.reserve_key(req, now_ms, limits)?;
        if let Some(hold) = repeated {
            return Ok(Decision {
                record: None,
                answer: hold,
            });
        }
        if req.items.is_empty() {
            return Err(Rejection::Invalid(
                "a reservation needs at least one item".into(),
            ));
        }
        if req.items.len() > limits.max_items_per_request as usize {
            return Err(Rejection::Invalid(format!(
                "{} items, over the limit of {} per request",
                req.items.len(),
                limits.max_items_per_request
            )));
        }
        let ttl_ms = req.hold_ttl_ms.unwrap_or(self.spec.hold_ttl_ms);
        if !(limits.min_hold_ttl_ms..=limits.max_hold_ttl_ms).contains(&ttl_ms) {
            return Err(Rejection::HoldTtlOutOfRange {
                requested_ms: ttl_ms,
                min_ms: limits.min_hold_ttl_ms,
                max_ms: limits.max_hold_ttl_ms,
            });
        }

        // Shape of the request: tiers, kinds, quantities, named seats. Nothing here reads owners.
        let mut per_tier: Vec<(u16, u32)> = Vec::new();
        let mut named: HashSet<u32> = HashSet::default();
        let mut total: u64 = 0;
        // Each item resolved once: tier index, and seat indices for named seats.
        let mut plan: Vec<(u16, Ask)> = Vec::with_capacity(req.items.len());
        for item in &req.items {
            let (code, quantity) = match item {
                ReserveItem::General { tier, quantity }
                | ReserveItem::BestAvailable { tier, quantity } => (tier, *quantity),
                ReserveItem::Seats { tier, seats } => (tier, seats.len() as u32),
            };
            let ti = self.tier_index(code)?;
            let seated = !self.tiers[ti as usize].rows.is_empty();
            match (item, seated) {
                (ReserveItem::General { .. }, true) => {
                    return Err(Rejection::WrongItemKind {
                        tier: code.clone(),
                        kind: "seated",
                        expected: "named-seats or best-available",
                    });
                }
                (ReserveItem::Seats { .. } | ReserveItem::BestAvailable { .. }, false) => {
                    return Err(Rejection::WrongItemKind {
                        tier: code.clone(),
                        kind: "general admission",
                        expected: "quantity",
                    });
                }
                _ => {}
            }
            if quantity == 0 {
                return Err(Rejection::Invalid(format!(
                    "item for tier `{code}` asks for no tickets"
                )));
            }
            let mut seat_ids = Vec::new();
            if let ReserveItem::Seats { seats, .. } = item {
                for seat in seats {
                    let si = *self
                        .lookup
                        .seat_by_ref
                        .get(seat)
                        .ok_or_else(|| Rejection::UnknownSeat(seat.quoted()))?;
                    let actual = self.seats[si as usize].tier;
                    if actual != ti {
                        return Err(Rejection::SeatNotInTier {
                            seat: seat.clone(),
                            requested: code.clone(),
                            actual: self.spec.tiers[actual as usize].code.clone(),
                        });
                    }
                    if !named.insert(si) {
                        return Err(Rejection::DuplicateSeat(seat.clone()));
                    }
                    seat_ids.push(si);
                }
            }
            plan.push((
                ti,
                match item {
                    ReserveItem::General { .. } => Ask::Count(quantity),
                    ReserveItem::Seats { .. } => Ask::Named(seat_ids),
                    ReserveItem::BestAvailable { .. } => Ask::Best(quantity),
                },
            ));
            total += u64::from(quantity);
            match per_tier.iter_mut().find(|(t, _)| *t == ti) {
                Some((_, q)) => *q = q.saturating_add(quantity),
                None => per_tier.push((ti, quantity)),
            }
        }
        if total > u64::from(limits.max_tickets_per_request) {
            return Err(Rejection::Invalid(format!(
                "{total} tickets, over the limit of {} per request",
                limits.max_tickets_per_request
            )));
        }
        for &(ti, quantity) in &per_tier {
            let tier = &self.spec.tiers[ti as usize];
            if quantity > tier.max_per_order {
                return Err(Rejection::MaxPerOrder {
                    tier: tier.code.clone(),
                    requested: quantity,
                    max: tier.max_per_order,
                });
            }
        }

        // The event and the calendar.
        if self.status != EventStatus::OnSale {
            return Err(Rejection::NotOnSale(self.status));
        }
        for &(ti, _) in &per_tier {
            let tier = &self.spec.tiers[ti as usize];
            if !tier.sale_windows.is_empty()
                && !tier.sale_windows.iter().any(|w| w.contains(now_ms))
            {
                return Err(Rejection::OutsideSaleWindow(tier.code.clone()));
            }
        }

        // Limits of the event and of the customer.
        if self.holds.len() >= limits.max_open_holds_per_event as usize {
            return Err(Rejection::EventHoldLimit {
                limit: limits.max_open_holds_per_event,
            });
        }
        let tally = self
            .customers
            .get(req.customer.as_str())
            .copied()
            .unwrap_or_default();
        if tally.open_holds >= limits.max_open_holds_per_customer {
            return Err(Rejection::CustomerHoldLimit {
                limit: limits.max_open_holds_per_customer,
            });
        }
        if let Some(limit) = self.spec.customer_limit {
            let would_have = u64::from(tally.tickets) + total;
            if would_have > u64::from(limit) {
                return Err(Rejection::CustomerLimit {
                    limit,
                    would_have: would_have.min(u64::from(u32::MAX)) as u32,
                });
            }
        }

        // Availability: named seats must be free; general admission needs the count; best
        // available picks seats around those already taken by this request.
        for &si in &named {
            if self.owners[si as usize] != Owner::Free {
                return Err(Rejection::SeatTaken(self.seats[si as usize].label.clone()));
            }
        }
        for &(ti, quantity) in &per_tier {
            let tier = &self.tiers[ti as usize];
            if quantity > tier.available {
                return Err(Rejection::SoldOut {
                    tier: self.spec.tiers[ti as usize].code.clone(),
                    requested: quantity,
                    available: tier.available,
                });
            }
        }
        let mut taken = named;
        let mut lines: Vec<LineRecord> = Vec::with_capacity(req.items.len());
        for (ti, ask) in plan {
            let (quantity, seats) = match ask {
                Ask::Count(quantity) => (quantity, Vec::new()),
                Ask::Named(seats) => (seats.len() as u32, seats),
                Ask::Best(quantity) => {
                    let owners = &self.owners;
                    let chosen = seating::best_available(
                        &self.tiers[ti as usize].rows,
                        quantity,
                        &taken,
                        |s| owners[s as usize] == Owner::Free,
                    )
                    .ok_or_else(|| Rejection::NoSeatsTogether {
                        tier: self.spec.tiers[ti as usize].code.clone(),
                        quantity,
                    })?;
                    taken.extend(chosen.iter().copied());
                    (quantity, chosen)
                }
            };
            let spec = &self.spec.tiers[ti as usize];
            match lines.iter_mut().find(|l| l.tier == ti) {
                Some(line) => {
                    line.quantity += quantity;
                    line.seats.extend(seats);
                }
                None => lines.push(LineRecord {
                    tier: ti,
                    quantity,
                    seats,
                    unit_price_minor: spec.price_minor,
                    unit_fee_minor: spec.fee_minor,
                }),
            }
        }

        let customer: Arc<str> = Arc::from(req.customer.as_str());
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        // Built from what is at hand rather than looked up after `apply`: one random access into
        // a table of millions of holds fewer per reservation.
        let answer = Hold {
            id: hold_id,
            event_id: self.spec.id,
            customer: customer.clone(),
            lines: self.lines_view(&lines),
            currency: self.spec.currency,
            created_at_ms: now_ms,
            expires_at_ms,
        };
        let record = Record::HoldPlaced {
            hold_id,
            customer,
            lines,
            created_at_ms: now_ms,
            expires_at_ms,
            key: keyed.map(|k| k.record),
        };
        self.apply(&record);
        Ok(Decision {
            record: Some(record),
            answer,
        })
    }

    /// The first answer to a reservation whose client key was seen before, if it was. Changes
    /// nothing: for a caller that may not make new holds now but must still repeat old answers.
    pub fn repeated_reserve(
        &self,
        req: &ReserveRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Option<Hold>, Rejection> {
        Ok(self.reserve_key(req, now_ms, limits)?.1)
    }

    /// A reservation's checked client key, and the first answer if the key repeats.
    fn reserve_key(
        &self,
        req: &ReserveRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<(Option<Keyed>, Option<Hold>), Rejection> {
        check_string("customer id", &req.customer, limits)?;
        let keyed = keyed(
            KeyScope::Reserve,
            &req.customer,
            &req.idempotency_key,
            req,
            limits,
        )?;
        match self.repeat(keyed.as_ref(), now_ms, limits)? {
            Some(Answer::Hold(hold)) => Ok((keyed, Some(hold))),
            _ => Ok((keyed, None)),
        }
    }

    /// Decides turning a live hold into an order pending payment, at today's prices.
    pub fn confirm(
        &mut self,
        req: &ConfirmRequest,
        order_id: OrderId,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Order>, Rejection> {
        check_string("payment reference", &req.payment_ref, limits)?;
        let keyed = keyed(KeyScope::Confirm, "", &req.idempotency_key, req, limits)?;
        if let Some(Answer::Order(order)) = self.repeat(keyed.as_ref(), now_ms, limits)? {
            return Ok(Decision {
                record: None,
                answer: order,
            });
        }
        let hold = self.live_hold(req.hold_id, now_ms)?;
        if self.status == EventStatus::Closed {
            return Err(Rejection::NotOnSale(self.status));
        }
        let lines = hold
            .lines
            .iter()
            .map(|l| {
                let tier = &self.spec.tiers[l.tier as usize];
                LineRecord {
                    unit_price_minor: tier.price_minor,
                    unit_fee_minor: tier.fee_minor,
                    ..l.clone()
                }
            })
            .collect();
        let record = Record::HoldConfirmed {
            hold_id: req.hold_id,
            order_id,
            payment_ref: req.payment_ref.clone(),
            lines,
            at_ms: now_ms,
            key: keyed.map(|k| k.record),
        };
        self.apply(&record);
        let answer = self.order_view(order_id).expect("the order was just made");
        Ok(Decision {
            record: Some(record),
            answer,
        })
    }

    /// Decides giving a live hold's tickets back. The answer is the hold as it was.
    pub fn release(
        &mut self,
        req: &ReleaseRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Hold>, Rejection> {
        let keyed = keyed(KeyScope::Release, "", &req.idempotency_key, req, limits)?;
        if let Some(Answer::Released(hold)) = self.repeat(keyed.as_ref(), now_ms, limits)? {
            return Ok(Decision {
                record: None,
                answer: hold,
            });
        }
        self.live_hold(req.hold_id, now_ms)?;
        let answer = self.hold_view(req.hold_id).expect("the hold is live");
        let record = Record::HoldReleased {
            hold_id: req.hold_id,
            at_ms: now_ms,
            key: keyed.map(|k| k.record),
        };
        self.apply(&record);
        Ok(Decision {
            record: Some(record),
            answer,
        })
    }

    /// Decides cancelling an order pending payment; its tickets go back on sale.
    pub fn cancel_order(
        &mut self,
        req: &CancelOrderRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Order>, Rejection> {
        check_string("cancel reason", &req.reason, limits)?;
        let keyed = keyed(KeyScope::Cancel, "", &req.idempotency_key, req, limits)?;
        if let Some(Answer::Order(order)) = self.repeat(keyed.as_ref(), now_ms, limits)? {
            return Ok(Decision {
                record: None,
                answer: order,
            });
        }
        let order = self
            .orders
            .get(&req.order_id)
            .ok_or(Rejection::OrderNotFound(req.order_id))?;
        if order.status != OrderStatus::PendingPayment {
            return Err(Rejection::OrderNotCancellable {
                order: req.order_id,
                status: order.status,
            });
        }
        let record = Record::OrderCancelled {
            order_id: req.order_id,
            reason: req.reason.clone(),
            at_ms: now_ms,
            key: keyed.map(|k| k.record),
        };
        self.apply(&record);
        let answer = self.order_view(req.order_id).expect("the order exists");
        Ok(Decision {
            record: Some(record),
            answer,
        })
    }

    /// Decides a status change. Draft opens or closes; on sale and paused switch or close; closed
    /// is final. Asking for the current status changes nothing and is not an error.
    pub fn set_status(
        &mut self,
        to: EventStatus,
        now_ms: u64,
    ) -> Result<Decision<EventStatus>, Rejection> {
        use EventStatus::*;
        let from = self.status;
        if from == to {
            return Ok(Decision {
                record: None,
                answer: to,
            });
        }
        let allowed = matches!(
            (from, to),
            (Draft, OnSale)
                | (Draft, Closed)
                | (OnSale, Paused)
                | (OnSale, Closed)
                | (Paused, OnSale)
                | (Paused, Closed)
        );
        if !allowed {
            return Err(Rejection::StatusChange { from, to });
        }
        let record = Record::StatusChanged {
            status: to,
            at_ms: now_ms,
        };
        self.apply(&record);
        Ok(Decision {
            record: Some(record),
            answer: to,
        })
    }

    /// Releases up to `max` holds whose deadline is at or before `now_ms`, as one record.
    pub fn expire_due(&mut self, now_ms: u64, max: usize) -> Option<Record> {
        let mut hold_ids = Vec::new();
        while hold_ids.len() < max {
            self.drop_stale_deadlines();
            let Some(mut first) = self.expiry.first_entry() else {
                break;
            };
            if *first.key() > now_ms {
                break;
            }
            let id = first.get_mut().pop().expect("a live hold is on top");
            hold_ids.push(id);
            if first.get().is_empty() {
                first.remove();
            }
        }
        if hold_ids.is_empty() {
            return None;
        }
        let record = Record::HoldsExpired {
            hold_ids,
            at_ms: now_ms,
        };
        self.apply(&record);
        Some(record)
    }

    /// Forgets the key at the front of the queue, unless the queue's entry is stale (the key was
    /// remembered again later).
    fn forget_oldest_key(&mut self) {
        let (at, id) = self.key_queue.pop_front().expect("front exists");
        if self.keys.get(&id).is_some_and(|e| e.at_ms == at) {
            self.keys.remove(&id);
        }
    }

    /// Forgets client keys older than their retention (and the oldest past
    /// `limits.max_keys_per_event`) and ended-hold notes older than theirs. Not logged: it runs
    /// before every decision, so a forgotten key is gone whether a restart replays it or not.
    pub fn prune(&mut self, now_ms: u64, limits: &Limits) {
        let horizon = now_ms.saturating_sub(limits.idempotency_retention_ms);
        while let Some((at, _)) = self.key_queue.front() {
            if *at >= horizon {
                break;
            }
            self.forget_oldest_key();
        }
        while self.keys.len() > limits.max_keys_per_event {
            self.forget_oldest_key();
        }
        self.ended.prune(
            now_ms,
            limits.ended_hold_retention_ms,
            limits.max_ended_hold_notes,
        );
    }

    // ------------------------------------------------------------------------------------------
    // Applying records. Used live, right after a decision, and by recovery.
    // ------------------------------------------------------------------------------------------

    /// Performs a record. Panics if the record contradicts the state: a log that does is corrupt,
    /// and stopping is better than selling a seat twice.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Created { .. } => panic!("Created can only start an event's log"),
            Record::StatusChanged { status, .. } => self.status = *status,
            Record::HoldPlaced {
                hold_id,
                customer,
                lines,
                created_at_ms,
                expires_at_ms,
                key,
            } => {
                let mut tickets = 0;
                for line in lines {
                    let tier = &mut self.tiers[line.tier as usize];
                    assert!(
                        tier.available >= line.quantity,
                        "hold {hold_id} takes {} of tier {} with {} available",
                        line.quantity,
                        line.tier,
                        tier.available
                    );
                    tier.available -= line.quantity;
                    tier.held += line.quantity;
                    tickets += line.quantity;
                    for &s in &line.seats {
                        let slot = &self.seats[s as usize];
                        assert_eq!(
                            slot.tier, line.tier,
                            "seat {s} is not in tier {}",
                            line.tier
                        );
                        assert_eq!(
                            self.owners[s as usize],
                            Owner::Free,
                            "seat {} would get a second owner (hold {hold_id})",
                            slot.label
                        );
                        self.owners[s as usize] = Owner::Held(*hold_id);
                        tier.rows[slot.row as usize].free -= 1;
                    }
                    if !tier.rows.is_empty() {
                        assert_eq!(
                            line.seats.len(),
                            line.quantity as usize,
                            "seated line without seats"
                        );
                    }
                }
                let previous = self.holds.insert(
                    *hold_id,
                    HoldState {
                        customer: customer.clone(),
                        lines: lines.clone(),
                        tickets,
                        created_at_ms: *created_at_ms,
                        expires_at_ms: *expires_at_ms,
                    },
                );
                assert!(previous.is_none(), "hold {hold_id} placed twice");
                // Deadlines mostly arrive in order, so the last list is usually the one.
                match self.expiry.last_entry() {
                    Some(mut last) if last.key() == expires_at_ms => last.get_mut().push(*hold_id),
                    _ => self
                        .expiry
                        .entry(*expires_at_ms)
                        .or_default()
                        .push(*hold_id),
                }
                let tally = self
                    .customers
                    .get_or_insert_with(customer.clone(), Tally::default);
                tally.tickets += tickets;
                tally.open_holds += 1;
                if let Some(k) = key {
                    let hold = self.hold_view(*hold_id).expect("just inserted");
                    self.remember(
                        KeyScope::Reserve,
                        customer,
                        k,
                        *created_at_ms,
                        Answer::Hold(hold),
                    );
                }
                self.check_lines(lines);
            }
            Record::HoldReleased {
                hold_id,
                at_ms,
                key,
            } => {
                let view = key
                    .as_ref()
                    .map(|_| self.hold_view(*hold_id).expect("released hold is live"));
                self.end_hold(*hold_id, HoldEnd::Released, *at_ms);
                if let (Some(k), Some(hold)) = (key, view) {
                    self.remember(KeyScope::Release, "", k, *at_ms, Answer::Released(hold));
                }
            }
            Record::HoldsExpired { hold_ids, at_ms } => {
                for id in hold_ids {
                    self.end_hold(*id, HoldEnd::Expired, *at_ms);
                }
            }
            Record::HoldConfirmed {
                hold_id,
                order_id,
                payment_ref,
                lines,
                at_ms,
                key,
            } => {
                let hold = self
                    .holds
                    .remove(hold_id)
                    .unwrap_or_else(|| panic!("confirmed hold {hold_id} is not live"));
                assert_eq!(
                    lines.len(),
                    hold.lines.len(),
                    "order lines differ from hold {hold_id}"
                );
                for (line, held) in lines.iter().zip(&hold.lines) {
                    assert!(
                        line.tier == held.tier
                            && line.quantity == held.quantity
                            && line.seats == held.seats
                    );
                    let tier = &mut self.tiers[line.tier as usize];
                    assert!(tier.held >= line.quantity);
                    tier.held -= line.quantity;
                    tier.sold += line.quantity;
                    for &s in &line.seats {
                        assert_eq!(
                            self.owners[s as usize],
                            Owner::Held(*hold_id),
                            "seat {s} not held by {hold_id}"
                        );
                        self.owners[s as usize] = Owner::Sold(*order_id);
                    }
                }
                let tally = self
                    .customers
                    .get_mut(&hold.customer)
                    .expect("holder has a tally");
                tally.open_holds -= 1;
                let previous = self.orders.insert(
                    *order_id,
                    OrderState {
                        hold_id: *hold_id,
                        customer: hold.customer,
                        lines: lines.clone(),
                        tickets: hold.tickets,
                        payment_ref: payment_ref.clone(),
                        status: OrderStatus::PendingPayment,
                        created_at_ms: *at_ms,
                        updated_at_ms: *at_ms,
                    },
                );
                assert!(previous.is_none(), "order {order_id} made twice");
                self.note_end(*hold_id, HoldEnd::Confirmed(*order_id), *at_ms);
                if let Some(k) = key {
                    let order = self.order_view(*order_id).expect("just inserted");
                    self.remember(KeyScope::Confirm, "", k, *at_ms, Answer::Order(order));
                }
                self.check_lines(lines);
            }
            Record::OrderCancelled {
                order_id,
                at_ms,
                key,
                ..
            } => {
                let order = self
                    .orders
                    .get_mut(order_id)
                    .unwrap_or_else(|| panic!("cancelled order {order_id} does not exist"));
                assert_eq!(order.status, OrderStatus::PendingPayment);
                order.status = OrderStatus::Cancelled;
                order.updated_at_ms = *at_ms;
                let customer = order.customer.clone();
                let tickets = order.tickets;
                let lines = order.lines.clone();
                for line in &lines {
                    let tier = &mut self.tiers[line.tier as usize];
                    assert!(tier.sold >= line.quantity);
                    tier.sold -= line.quantity;
                    tier.available += line.quantity;
                    for &s in &line.seats {
                        assert_eq!(self.owners[s as usize], Owner::Sold(*order_id));
                        self.owners[s as usize] = Owner::Free;
                        tier.rows[self.seats[s as usize].row as usize].free += 1;
                    }
                }
                self.untally(&customer, tickets, 0);
                if let Some(k) = key {
                    let order = self.order_view(*order_id).expect("exists");
                    self.remember(KeyScope::Cancel, "", k, *at_ms, Answer::Order(order));
                }
                self.check_lines(&lines);
            }
        }
        self.applied += 1;
    }

    fn end_hold(&mut self, hold_id: HoldId, end: HoldEnd, at_ms: u64) {
        let hold = self
            .holds
            .remove(&hold_id)
            .unwrap_or_else(|| panic!("ended hold {hold_id} is not live"));
        for line in &hold.lines {
            let tier = &mut self.tiers[line.tier as usize];
            assert!(tier.held >= line.quantity);
            tier.held -= line.quantity;
            tier.available += line.quantity;
            for &s in &line.seats {
                assert_eq!(
                    self.owners[s as usize],
                    Owner::Held(hold_id),
                    "seat {s} not held by {hold_id}"
                );
                self.owners[s as usize] = Owner::Free;
                tier.rows[self.seats[s as usize].row as usize].free += 1;
            }
        }
        self.untally(&hold.customer, hold.tickets, 1);
        self.note_end(hold_id, end, at_ms);
        self.check_lines(&hold.lines);
    }

    fn untally(&mut self, customer: &str, tickets: u32, holds: u32) {
        let tally = self
            .customers
            .get_mut(customer)
            .expect("customer has a tally");
        assert!(tally.tickets >= tickets && tally.open_holds >= holds);
        tally.tickets -= tickets;
        tally.open_holds -= holds;
        if tally.tickets == 0 && tally.open_holds == 0 {
            self.customers.remove(customer);
        }
    }

    fn note_end(&mut self, hold_id: HoldId, end: HoldEnd, at_ms: u64) {
        if let HoldEnd::Confirmed(order) = end {
            self.order_of_hold.insert(hold_id, order);
        } else {
            self.ended.note(hold_id, end, at_ms);
        }
    }

    fn remember(
        &mut self,
        scope: KeyScope,
        owner: &str,
        key: &KeyRecord,
        at_ms: u64,
        answer: Answer,
    ) {
        let id = KeyId {
            scope,
            owner: owner.to_string(),
            key: key.key.clone(),
        };
        self.key_queue.push_back((at_ms, id.clone()));
        self.keys.insert(
            id,
            KeyEntry {
                fingerprint: key.fingerprint,
                at_ms,
                answer,
            },
        );
    }

    /// The stored first answer for a retried key, `Err` if the key came with another request,
    /// `None` for a new key (or none).
    fn repeat(
        &self,
        keyed: Option<&Keyed>,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Option<Answer>, Rejection> {
        let Some((keyed, entry)) = keyed.and_then(|k| Some((k, self.keys.get(&k.id)?))) else {
            return Ok(None);
        };
        // Pruning may lag; a key past its retention reads as unknown all the same.
        if entry.at_ms.saturating_add(limits.idempotency_retention_ms) < now_ms {
            return Ok(None);
        }
        if entry.fingerprint != keyed.record.fingerprint {
            return Err(Rejection::IdempotencyKeyReused);
        }
        Ok(Some(entry.answer.clone()))
    }

    /// The invariant, for every tier a record touched. In release builds too.
    fn check_lines(&self, lines: &[LineRecord]) {
        for line in lines {
            let t = &self.tiers[line.tier as usize];
            assert_eq!(
                u64::from(t.available) + u64::from(t.held) + u64::from(t.sold),
                u64::from(t.capacity),
                "tier {} breaks available + held + sold == capacity",
                self.spec.tiers[line.tier as usize].code
            );
        }
    }

    /// Recomputes every count from the holds, the orders and the seat owners and asserts that they
    /// agree with the maintained ones, that every seat has at most one owner and that owners point
    /// at live holds or orders. O(state); run after recovery and by the tests.
    pub fn audit(&self) {
        let mut held = vec![0u32; self.tiers.len()];
        let mut sold = vec![0u32; self.tiers.len()];
        let mut owner_of = vec![Owner::Free; self.seats.len()];
        let mut claim = |s: u32, owner: Owner| {
            assert_eq!(owner_of[s as usize], Owner::Free, "seat {s} has two owners");
            owner_of[s as usize] = owner;
        };
        let mut tallies: HashMap<&str, Tally> = HashMap::default();
        let deadlines: HashSet<(u64, HoldId)> = self
            .expiry
            .iter()
            .flat_map(|(at, ids)| ids.iter().map(move |id| (*at, *id)))
            .collect();
        for (id, hold) in self.holds.iter() {
            assert!(
                deadlines.contains(&(hold.expires_at_ms, *id)),
                "live hold {id} has no deadline"
            );
            for line in &hold.lines {
                held[line.tier as usize] += line.quantity;
                line.seats.iter().for_each(|&s| claim(s, Owner::Held(*id)));
            }
            let t = tallies.entry(&hold.customer).or_default();
            t.tickets += hold.tickets;
            t.open_holds += 1;
        }
        for (id, order) in self.orders.iter() {
            if matches!(
                order.status,
                OrderStatus::PendingPayment | OrderStatus::Paid
            ) {
                for line in &order.lines {
                    sold[line.tier as usize] += line.quantity;
                    line.seats.iter().for_each(|&s| claim(s, Owner::Sold(*id)));
                }
                tallies.entry(&order.customer).or_default().tickets += order.tickets;
            }
        }
        assert_eq!(
            owner_of, self.owners,
            "seat owners disagree with holds and orders"
        );
        for (i, t) in self.tiers.iter().enumerate() {
            assert_eq!(
                (t.held, t.sold),
                (held[i], sold[i]),
                "tier {i} counts disagree"
            );
            assert_eq!(
                t.available + t.held + t.sold,
                t.capacity,
                "tier {i} invariant"
            );
            for row in &t.rows {
                let free = row
                    .seats
                    .iter()
                    .filter(|&&s| self.owners[s as usize] == Owner::Free)
                    .count();
                assert_eq!(row.free as usize, free, "row free count");
            }
        }
        assert_eq!(tallies.len(), self.customers.len(), "customer tallies");
        assert_eq!(self.order_of_hold.len(), self.orders.len(), "order index");
        for (id, order) in self.orders.iter() {
            assert_eq!(
                self.order_of_hold.get(&order.hold_id),
                Some(id),
                "order index of {id}"
            );
        }
        for (c, t) in tallies {
            let kept = self.customers[c];
            assert_eq!(
                (kept.tickets, kept.open_holds),
                (t.tickets, t.open_holds),
                "tally of {c}"
            );
        }
    }

    // ------------------------------------------------------------------------------------------
    // Queries.
    // ------------------------------------------------------------------------------------------

    fn tier_index(&self, code: &str) -> Result<u16, Rejection> {
        self.lookup
            .tier_by_code
            .get(code)
            .copied()
            .ok_or_else(|| Rejection::UnknownTier(rejection::quote(code)))
    }

    fn live_hold(&self, id: HoldId, now_ms: u64) -> Result<&HoldState, Rejection> {
        match self.holds.get(&id) {
            Some(h) if h.expires_at_ms > now_ms => Ok(h),
            Some(_) => Err(Rejection::HoldExpired(id)),
            None => Err(
                match self
                    .ended
                    .get(&id)
                    .or_else(|| self.order_of_hold.get(&id).map(|o| HoldEnd::Confirmed(*o)))
                {
                    Some(HoldEnd::Released) => Rejection::HoldReleased(id),
                    Some(HoldEnd::Expired) => Rejection::HoldExpired(id),
                    Some(HoldEnd::Confirmed(order)) => {
                        Rejection::HoldAlreadyConfirmed { hold: id, order }
                    }
                    None => Rejection::HoldNotFound(id),
                },
            ),
        }
    }

    fn lines_view(&self, lines: &[LineRecord]) -> Vec<Line> {
        lines
            .iter()
            .map(|l| Line {
                tier: self.lookup.tier_codes[l.tier as usize].clone(),
                quantity: l.quantity,
                seats: l
                    .seats
                    .iter()
                    .map(|&s| self.seats[s as usize].label.clone())
                    .collect(),
                unit_price_minor: l.unit_price_minor,
                unit_fee_minor: l.unit_fee_minor,
            })
            .collect()
    }

    fn hold_view(&self, id: HoldId) -> Option<Hold> {
        let h = self.holds.get(&id)?;
        Some(Hold {
            id,
            event_id: self.spec.id,
            customer: h.customer.clone(),
            lines: self.lines_view(&h.lines),
            currency: self.spec.currency,
            created_at_ms: h.created_at_ms,
            expires_at_ms: h.expires_at_ms,
        })
    }

    fn order_view(&self, id: OrderId) -> Option<Order> {
        let o = self.orders.get(&id)?;
        let subtotal_minor = o
            .lines
            .iter()
            .map(|l| l.unit_price_minor * u64::from(l.quantity))
            .sum();
        let fees_minor = o
            .lines
            .iter()
            .map(|l| l.unit_fee_minor * u64::from(l.quantity))
            .sum();
        Some(Order {
            id,
            event_id: self.spec.id,
            hold_id: o.hold_id,
            customer: o.customer.clone(),
            lines: self.lines_view(&o.lines),
            currency: self.spec.currency,
            subtotal_minor,
            fees_minor,
            total_minor: subtotal_minor + fees_minor,
            payment_ref: o.payment_ref.clone(),
            status: o.status,
            created_at_ms: o.created_at_ms,
            updated_at_ms: o.updated_at_ms,
        })
    }

    /// A live hold, or why there is none.
    pub fn hold(&self, id: HoldId, now_ms: u64) -> Result<Hold, Rejection> {
        self.live_hold(id, now_ms)?;
        Ok(self.hold_view(id).expect("live"))
    }

    pub fn order(&self, id: OrderId) -> Result<Order, Rejection> {
        self.order_view(id).ok_or(Rejection::OrderNotFound(id))
    }

    pub fn availability(&self) -> Vec<TierAvailability> {
        self.tiers
            .iter()
            .zip(&self.spec.tiers)
            .map(|(t, s)| TierAvailability {
                code: s.code.clone(),
                capacity: t.capacity,
                available: t.available,
                held: t.held,
                sold: t.sold,
            })
            .collect()
    }

    /// Every seat of one seated tier (or of all, with `None`) and its state.
    pub fn seat_availability(
        &self,
        tier: Option<&str>,
    ) -> Result<Vec<SeatAvailability>, Rejection> {
        let only = tier.map(|code| self.tier_index(code)).transpose()?;
        Ok(self
            .seats
            .iter()
            .zip(&self.owners)
            .filter(|(slot, _)| only.is_none_or(|t| slot.tier == t))
            .map(|(slot, owner)| SeatAvailability {
                seat: slot.label.clone(),
                tier: self.spec.tiers[slot.tier as usize].code.clone(),
                state: match owner {
                    Owner::Free => SeatState::Free,
                    Owner::Held(_) => SeatState::Held,
                    Owner::Sold(_) => SeatState::Sold,
                },
            })
            .collect())
    }

    pub fn summary(&self) -> EventSummary {
        EventSummary {
            id: self.spec.id,
            name: self.spec.name.clone(),
            venue: self.spec.venue.clone(),
            starts_at_ms: self.spec.starts_at_ms,
            status: self.status,
            tiers: self.availability(),
            open_holds: self.holds.len() as u32,
            orders: self.orders.len() as u32,
        }
    }

    /// Ids of every live hold, for audits.
    pub fn hold_ids(&self) -> Vec<HoldId> {
        self.holds.keys().copied().collect()
    }

    /// Every order with its hold and status, for audits.
    pub fn order_list(&self) -> Vec<(OrderId, HoldId, OrderStatus)> {
        self.orders
            .iter()
            .map(|(id, o)| (*id, o.hold_id, o.status))
            .collect()
    }
}
