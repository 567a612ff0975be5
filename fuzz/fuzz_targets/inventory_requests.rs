//! A sequence of requests, each decoded from arbitrary bytes, converted by `server::convert` and
//! decided by one event's inventory as its actor would (due holds and unpaid orders first), with
//! the clock moving between them. After every request the state must pass `check_state`; at the
//! end the records it made, framed and recovered by `wal::recover`, must rebuild the same event.
//! Ids are predictable so that requests can name what earlier ones made: the n-th hold is
//! `00000000-0000-0000-0000-00000000000n` (hex), the n-th order the same plus 0x1000.
//!
//! Input: chunks of `kind: u8, advance: u8` (the clock moves `advance` × 1 s), `len: u16 LE` and
//! that many bytes of the message `kind` picks (see `decide`).

#![no_main]

use std::sync::OnceLock;

use engine::inventory::{
    Currency, EventId, EventSpec, EventStatus, HoldId, Inventory, Limits, OrderId, Record, RowSpec,
    SectionSpec, Stock, TicketClaims, TicketId, TicketIssuer, TierSpec,
};
use engine::tickets::TicketKeys;
use engine::wal;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::v1;
use uuid::Uuid;

/// The event every seed's requests name (`seeds` writes them for it).
const EVENT: EventId = EventId(Uuid::from_u128(0xb0c5_0ff1_ce00_0000_0000_0000_0000_0001));
const T0: u64 = 1_780_000_000_000;

/// The secret of the fuzz targets' one ticket key (`ticket-key-1.ed25519`), fixed so that the
/// seeds can carry the tokens this target's paid orders get: a key for fuzzing, nothing else.
pub const TICKET_KEY_HEX: &str = "f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022";

/// The ticket keys, made once per process in a directory of its own from `TICKET_KEY_HEX`.
fn keys() -> &'static TicketKeys {
    static KEYS: OnceLock<TicketKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("boxoffice-fuzz-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a key directory");
        std::fs::write(
            dir.join("ticket-key-1.ed25519"),
            format!("{TICKET_KEY_HEX}\n"),
        )
        .expect("the key written");
        TicketKeys::open(&dir).expect("ticket keys")
    })
}

struct Issuer {
    next: u128,
}

impl TicketIssuer for Issuer {
    fn ticket_id(&mut self) -> TicketId {
        self.next += 1;
        TicketId(Uuid::from_u128(0x2000 + self.next))
    }

    fn sign(&self, claims: &TicketClaims) -> String {
        keys().sign(claims)
    }
}

/// The seeds' event (`seeds/src/main.rs`, `spec`): GA of 10 and two rows of four seats, with
/// re-entry.
fn spec() -> EventSpec {
    let tier = |code: &str, name: &str, (price_minor, fee_minor, max_per_order), stock| TierSpec {
        code: code.into(),
        name: name.into(),
        price_minor,
        fee_minor,
        max_per_order,
        sale_windows: vec![],
        stock,
    };
    let row = |name: &str| RowSpec {
        name: name.into(),
        seats: (1..=4).map(|n| n.to_string()).collect(),
    };
    EventSpec {
        id: EVENT,
        name: "Night show".into(),
        venue: "Hall".into(),
        starts_at_ms: T0 + 86_400_000,
        status: EventStatus::OnSale,
        currency: Currency::parse("EUR").expect("a currency"),
        customer_limit: Some(8),
        hold_ttl_ms: 60_000,
        payment_ttl_ms: 900_000,
        tiers: vec![
            tier(
                "GA",
                "Standing",
                (2_500, 150, 4),
                Stock::General { capacity: 10 },
            ),
            tier(
                "SEAT",
                "Seated",
                (4_000, 200, 6),
                Stock::Seated {
                    sections: vec![SectionSpec {
                        name: "A".into(),
                        rows: vec![row("1"), row("2")],
                    }],
                },
            ),
        ],
        time_zone: "Europe/Lisbon".into(),
        allow_reentry: true,
    }
}

struct Event {
    inventory: Inventory,
    records: Vec<Record>,
    limits: Limits,
    issuer: Issuer,
    holds: u128,
    orders: u128,
}

impl Event {
    fn keep(&mut self, record: Option<Record>) {
        self.records.extend(record);
    }

    /// What the actor does before every command: due holds released, unpaid orders cancelled.
    fn begin(&mut self, now: u64) {
        self.inventory.prune(now, &self.limits);
        while let Some(r) = self.inventory.expire_due(now, 64) {
            self.keep(Some(r));
        }
        while let Some(r) = self.inventory.expire_unpaid(now) {
            self.keep(Some(r));
        }
    }

    fn decide(&mut self, kind: u8, bytes: &[u8], now: u64) {
        let inv = &mut self.inventory;
        let limits = &self.limits;
        let record = match kind % 9 {
            0 => {
                let Ok(r) = v1::ReserveRequest::decode(bytes) else {
                    return;
                };
                let Ok((_, req)) = server::convert::reserve_request(r) else {
                    return;
                };
                self.holds += 1;
                let id = HoldId(Uuid::from_u128(self.holds));
                inv.reserve(&req, id, now, limits)
                    .ok()
                    .and_then(|d| d.record)
            }
            1 => {
                let Ok(r) = v1::ConfirmRequest::decode(bytes) else {
                    return;
                };
                let Ok((_, req)) = server::convert::confirm_request(r) else {
                    return;
                };
                self.orders += 1;
                let id = OrderId(Uuid::from_u128(0x1000 + self.orders));
                inv.confirm(&req, id, now, limits)
                    .ok()
                    .and_then(|d| d.record)
            }
            2 => {
                let Ok(r) = v1::ReleaseRequest::decode(bytes) else {
                    return;
                };
                let Ok((_, req)) = server::convert::release_request(r) else {
                    return;
                };
                inv.release(&req, now, limits).ok().and_then(|d| d.record)
            }
            3 => {
                let Ok(r) = v1::CancelOrderRequest::decode(bytes) else {
                    return;
                };
                let Ok((_, req)) = server::convert::cancel_order_request(r) else {
                    return;
                };
                inv.cancel_order(&req, now, limits)
                    .ok()
                    .and_then(|d| d.record)
            }
            4 => {
                let Ok(r) = v1::RefundOrderRequest::decode(bytes) else {
                    return;
                };
                let Ok((_, req)) = server::convert::refund_order_request(r) else {
                    return;
                };
                inv.refund_order(&req, now, limits)
                    .ok()
                    .and_then(|d| d.record)
            }
            5 => {
                let Ok(r) = v1::SetEventStatusRequest::decode(bytes) else {
                    return;
                };
                let Ok(status) = server::convert::event_status("status", r.status) else {
                    return;
                };
                inv.set_status(status, now).ok().and_then(|d| d.record)
            }
            6 => {
                let Ok(r) = v1::PaymentResult::decode(bytes) else {
                    return;
                };
                let Ok((_, result)) = server::convert::payment_result(r) else {
                    return;
                };
                inv.settle_payment(&result, now, limits, &mut self.issuer)
                    .ok()
                    .and_then(|d| d.record)
            }
            7 => {
                let Ok(r) = v1::CheckInRequest::decode(bytes) else {
                    return;
                };
                let Ok(scan) = server::convert::scan(EVENT, r.token, r.gate_id, r.scan_id) else {
                    return;
                };
                inv.check_in(&scan, now).ok().and_then(|d| d.record)
            }
            _ => {
                let Ok(r) = v1::CheckOutRequest::decode(bytes) else {
                    return;
                };
                let Ok(scan) = server::convert::scan(EVENT, r.token, r.gate_id, r.scan_id) else {
                    return;
                };
                inv.check_out(&scan, now).ok().and_then(|d| d.record)
            }
        };
        self.keep(record);
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let (inventory, created) = Inventory::create(spec(), &limits).expect("a valid spec");
    let mut event = Event {
        inventory,
        records: vec![created],
        limits,
        issuer: Issuer { next: 0 },
        holds: 0,
        orders: 0,
    };
    let mut now = T0;
    let mut rest = data;
    while rest.len() >= 4 {
        let (kind, advance) = (rest[0], rest[1]);
        let len = usize::from(u16::from_le_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let bytes = &rest[4..4 + len];
        rest = &rest[4 + len..];
        now += u64::from(advance) * 1_000;
        event.begin(now);
        event.decide(kind, bytes, now);
        if let Err(why) = event.inventory.check_state() {
            panic!("after a request of kind {kind}: {why}");
        }
    }
    let mut frames = Vec::new();
    wal::encode_records(&event.records, &mut frames);
    let segment = wal::finish_segment(event.records.len() as u32, &frames);
    let recovered = wal::recover(EVENT, None, vec![(0, segment)], |_, _| Ok(()))
        .expect("the log of decided requests recovers");
    assert_eq!(recovered.applied(), event.inventory.applied());
    assert_eq!(
        format!("{:?}", recovered.summary()),
        format!("{:?}", event.inventory.summary())
    );
    let orders = |inv: &Inventory| {
        let mut list = inv.order_list();
        list.sort_by_key(|(order, _, _)| *order);
        list
    };
    assert_eq!(orders(&recovered), orders(&event.inventory));
});
