//! Tests of the pure inventory: plain `#[test]`s for each rule and a property test against a model.
//! No runtime, no disk, no clock.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

pub(super) const T0: u64 = 1_800_000_000_000;

pub(super) fn hid(n: u128) -> HoldId {
    HoldId(Uuid::from_u128(n))
}

pub(super) fn oid(n: u128) -> OrderId {
    OrderId(Uuid::from_u128(n))
}

pub(super) fn seat(section: &str, row: &str, number: &str) -> SeatRef {
    SeatRef {
        section: section.into(),
        row: row.into(),
        number: number.into(),
    }
}

/// An event with a GA tier (`GA`, 10 tickets, max 4 per order) and a seated tier (`SEAT`, section
/// `A`, rows `1` and `2` front first, seats 1..=6 each, max 6 per order).
pub(super) fn spec() -> EventSpec {
    EventSpec {
        id: EventId(Uuid::from_u128(7)),
        name: "Night show".into(),
        venue: "Hall".into(),
        starts_at_ms: T0 + 86_400_000,
        status: EventStatus::OnSale,
        currency: Currency::parse("EUR").unwrap(),
        customer_limit: Some(8),
        hold_ttl_ms: 60_000,
        payment_ttl_ms: 900_000,
        time_zone: "UTC".into(),
        allow_reentry: false,
        tiers: vec![
            TierSpec {
                code: "GA".into(),
                name: "Standing".into(),
                price_minor: 2_500,
                fee_minor: 150,
                max_per_order: 4,
                sale_windows: vec![],
                stock: Stock::General { capacity: 10 },
            },
            TierSpec {
                code: "SEAT".into(),
                name: "Seated".into(),
                price_minor: 4_000,
                fee_minor: 200,
                max_per_order: 6,
                sale_windows: vec![],
                stock: Stock::Seated {
                    sections: vec![SectionSpec {
                        name: "A".into(),
                        rows: ["1", "2"]
                            .iter()
                            .map(|r| RowSpec {
                                name: (*r).into(),
                                seats: (1..=6).map(|n| n.to_string()).collect(),
                            })
                            .collect(),
                    }],
                },
            },
        ],
    }
}

pub(super) fn limits() -> Limits {
    Limits {
        max_open_holds_per_customer: 3,
        ..Limits::default()
    }
}

pub(super) fn event() -> Inventory {
    Inventory::create(spec(), &limits()).unwrap().0
}

pub(super) fn ga(customer: &str, quantity: u32) -> ReserveRequest {
    ReserveRequest {
        customer: customer.into(),
        items: vec![ReserveItem::General {
            tier: "GA".into(),
            quantity,
        }],
        hold_ttl_ms: None,
        idempotency_key: None,
    }
}

pub(super) fn seats_req(customer: &str, seats: Vec<SeatRef>) -> ReserveRequest {
    ReserveRequest {
        customer: customer.into(),
        items: vec![ReserveItem::Seats {
            tier: "SEAT".into(),
            seats,
        }],
        hold_ttl_ms: None,
        idempotency_key: None,
    }
}

pub(super) fn confirm(hold: HoldId) -> ConfirmRequest {
    ConfirmRequest {
        hold_id: hold,
        payment_ref: "card-1".into(),
        idempotency_key: None,
        contact: None,
    }
}

pub(super) fn counts(inv: &Inventory, tier: usize) -> (u32, u32, u32) {
    let t = &inv.availability()[tier];
    (t.available, t.held, t.sold)
}

/// Asserts that `req` is rejected with `expected` and that the event did not change.
fn check_rejected(inv: &mut Inventory, req: &ReserveRequest, now: u64, expected: Rejection) {
    let before = (inv.availability(), inv.open_holds(), inv.applied());
    let got = inv.reserve(req, hid(999_999), now, &limits()).unwrap_err();
    assert_eq!(got, expected);
    assert_eq!(
        before,
        (inv.availability(), inv.open_holds(), inv.applied())
    );
    inv.audit();
}

#[test]
fn reserve_confirm_cancel_general_admission() {
    let mut inv = event();
    let hold = inv
        .reserve(&ga("c1", 3), hid(1), T0, &limits())
        .unwrap()
        .answer;
    assert_eq!(hold.tickets(), 3);
    assert_eq!(hold.expires_at_ms, T0 + 60_000);
    assert_eq!(counts(&inv, 0), (7, 3, 0));
    let order = inv
        .confirm(&confirm(hid(1)), oid(1), T0 + 1, &limits())
        .unwrap()
        .answer;
    assert_eq!(order.status, OrderStatus::PendingPayment);
    assert_eq!(
        (order.subtotal_minor, order.fees_minor, order.total_minor),
        (7_500, 450, 7_950)
    );
    assert_eq!(counts(&inv, 0), (7, 0, 3));
    let cancel = CancelOrderRequest {
        order_id: oid(1),
        reason: "payment failed".into(),
        idempotency_key: None,
    };
    let cancelled = inv.cancel_order(&cancel, T0 + 2, &limits()).unwrap().answer;
    assert_eq!(cancelled.status, OrderStatus::Cancelled);
    assert_eq!(counts(&inv, 0), (10, 0, 0));
    assert_eq!(
        inv.cancel_order(&cancel, T0 + 3, &limits()).unwrap_err(),
        Rejection::OrderNotCancellable {
            order: oid(1),
            status: OrderStatus::Cancelled
        }
    );
    inv.audit();
}

#[test]
fn confirm_twice_and_unknown_or_released_holds_are_precise() {
    let mut inv = event();
    inv.reserve(&ga("c1", 1), hid(1), T0, &limits()).unwrap();
    inv.confirm(&confirm(hid(1)), oid(1), T0, &limits())
        .unwrap();
    assert_eq!(
        inv.confirm(&confirm(hid(1)), oid(2), T0, &limits())
            .unwrap_err(),
        Rejection::HoldAlreadyConfirmed {
            hold: hid(1),
            order: oid(1)
        }
    );
    assert_eq!(
        inv.confirm(&confirm(hid(5)), oid(3), T0, &limits())
            .unwrap_err(),
        Rejection::HoldNotFound(hid(5))
    );
    inv.reserve(&ga("c2", 1), hid(2), T0, &limits()).unwrap();
    let release = ReleaseRequest {
        hold_id: hid(2),
        idempotency_key: None,
    };
    inv.release(&release, T0, &limits()).unwrap();
    assert_eq!(
        inv.release(&release, T0, &limits()).unwrap_err(),
        Rejection::HoldReleased(hid(2))
    );
    assert_eq!(
        inv.confirm(&confirm(hid(2)), oid(4), T0, &limits())
            .unwrap_err(),
        Rejection::HoldReleased(hid(2))
    );
    assert_eq!(counts(&inv, 0), (9, 0, 1));
}

#[test]
fn holds_expire_at_their_deadline_and_not_before() {
    let mut inv = event();
    let mut req = ga("c1", 2);
    req.hold_ttl_ms = Some(1_000);
    inv.reserve(&req, hid(1), T0, &limits()).unwrap();
    assert_eq!(inv.next_expiry_ms(), Some(T0 + 1_000));
    assert!(inv.expire_due(T0 + 999, 100).is_none());
    // Past the deadline but before the sweep, the hold cannot be confirmed.
    assert_eq!(
        inv.confirm(&confirm(hid(1)), oid(1), T0 + 1_000, &limits())
            .unwrap_err(),
        Rejection::HoldExpired(hid(1))
    );
    let record = inv.expire_due(T0 + 1_000, 100).unwrap();
    assert_eq!(
        record,
        Record::HoldsExpired {
            hold_ids: vec![hid(1)],
            at_ms: T0 + 1_000
        }
    );
    assert_eq!(counts(&inv, 0), (10, 0, 0));
    assert_eq!(inv.next_expiry_ms(), None);
    assert_eq!(
        inv.hold(hid(1), T0 + 1_001).unwrap_err(),
        Rejection::HoldExpired(hid(1))
    );
}

#[test]
fn expiry_records_are_bounded() {
    let mut inv = Inventory::create(
        EventSpec {
            customer_limit: None,
            ..spec()
        },
        &limits(),
    )
    .unwrap()
    .0;
    for i in 0..5u32 {
        inv.reserve(&ga(&format!("c{i}"), 1), hid(u128::from(i)), T0, &limits())
            .unwrap();
    }
    let Some(Record::HoldsExpired { hold_ids, .. }) = inv.expire_due(T0 + 60_000, 2) else {
        panic!("expected an expiry")
    };
    assert_eq!(hold_ids.len(), 2);
    assert_eq!(inv.open_holds(), 3);
}

#[test]
fn named_seats_and_best_available() {
    let mut inv = event();
    let hold = inv
        .reserve(
            &seats_req("c1", vec![seat("A", "1", "3"), seat("A", "1", "4")]),
            hid(1),
            T0,
            &limits(),
        )
        .unwrap()
        .answer;
    assert_eq!(hold.lines[0].seats.len(), 2);
    check_rejected(
        &mut inv,
        &seats_req("c2", vec![seat("A", "1", "4")]),
        T0,
        Rejection::SeatTaken(seat("A", "1", "4")),
    );
    // Row 1 has 1-2 and 5-6 free: 3 together must come from row 2, centred.
    let best = ReserveRequest {
        customer: "c2".into(),
        items: vec![ReserveItem::BestAvailable {
            tier: "SEAT".into(),
            quantity: 3,
        }],
        hold_ttl_ms: None,
        idempotency_key: None,
    };
    let hold = inv.reserve(&best, hid(2), T0, &limits()).unwrap().answer;
    let numbers: Vec<&str> = hold.lines[0]
        .seats
        .iter()
        .map(|s| s.number.as_str())
        .collect();
    assert!(hold.lines[0].seats.iter().all(|s| s.row == "2"));
    // Two windows are equally near the centre of a 6-seat row; the one nearer the row start wins.
    assert_eq!(numbers, ["2", "3", "4"]);
    // 2 together fit in row 1 (5-6 is nearer the centre than 1-2? both are equally far; the
    // first found wins), so they stay in the front row.
    let mut two = best.clone();
    two.customer = "c3".into();
    two.items = vec![ReserveItem::BestAvailable {
        tier: "SEAT".into(),
        quantity: 2,
    }];
    let hold = inv.reserve(&two, hid(3), T0, &limits()).unwrap().answer;
    assert!(hold.lines[0].seats.iter().all(|s| s.row == "1"));
    assert_eq!(counts(&inv, 1), (5, 7, 0));
    inv.audit();
}

#[test]
fn best_available_avoids_seats_named_in_the_same_request() {
    let mut inv = event();
    let req = ReserveRequest {
        customer: "c1".into(),
        items: vec![
            ReserveItem::Seats {
                tier: "SEAT".into(),
                seats: vec![seat("A", "1", "3")],
            },
            ReserveItem::BestAvailable {
                tier: "SEAT".into(),
                quantity: 2,
            },
        ],
        hold_ttl_ms: None,
        idempotency_key: None,
    };
    let hold = inv.reserve(&req, hid(1), T0, &limits()).unwrap().answer;
    assert_eq!(hold.lines.len(), 1, "one line per tier");
    assert_eq!(hold.lines[0].quantity, 3);
    let unique: BTreeSet<_> = hold.lines[0].seats.iter().collect();
    assert_eq!(unique.len(), 3);
    inv.audit();
}

#[test]
fn bad_input_is_rejected_precisely_and_changes_nothing() {
    let mut inv = event();
    inv.reserve(&ga("c1", 2), hid(1), T0, &limits()).unwrap();
    let item = |tier: &str, quantity| ReserveItem::General {
        tier: tier.into(),
        quantity,
    };
    let with_items = |items: Vec<ReserveItem>| ReserveRequest {
        customer: "c9".into(),
        items,
        hold_ttl_ms: None,
        idempotency_key: None,
    };
    let cases: Vec<(ReserveRequest, Rejection)> = vec![
        (
            with_items(vec![item("GA", 0)]),
            Rejection::Invalid("item for tier `GA` asks for no tickets".into()),
        ),
        (
            with_items(vec![]),
            Rejection::Invalid("a reservation needs at least one item".into()),
        ),
        (
            with_items(vec![item("VIP", 1)]),
            Rejection::UnknownTier("VIP".into()),
        ),
        (
            seats_req("c9", vec![seat("A", "9", "1")]),
            Rejection::UnknownSeat(seat("A", "9", "1")),
        ),
        (
            seats_req("c9", vec![seat("A", "1", "1"), seat("A", "1", "1")]),
            Rejection::DuplicateSeat(seat("A", "1", "1")),
        ),
        (
            with_items(vec![item("GA", 5)]),
            Rejection::MaxPerOrder {
                tier: "GA".into(),
                requested: 5,
                max: 4,
            },
        ),
        (
            with_items(vec![item("GA", 3), item("GA", 2)]),
            Rejection::MaxPerOrder {
                tier: "GA".into(),
                requested: 5,
                max: 4,
            },
        ),
        (
            with_items(vec![item("SEAT", 1)]),
            Rejection::WrongItemKind {
                tier: "SEAT".into(),
                kind: "seated",
                expected: "named-seats or best-available",
            },
        ),
        (
            ReserveRequest {
                hold_ttl_ms: Some(10),
                ..with_items(vec![item("GA", 1)])
            },
            Rejection::HoldTtlOutOfRange {
                requested_ms: 10,
                min_ms: 1_000,
                max_ms: 3_600_000,
            },
        ),
        (
            ReserveRequest {
                customer: String::new(),
                ..with_items(vec![item("GA", 1)])
            },
            Rejection::Invalid("customer id must not be empty".into()),
        ),
        (
            ReserveRequest {
                customer: "x".repeat(129),
                ..with_items(vec![item("GA", 1)])
            },
            Rejection::Invalid("customer id is 129 bytes, over the limit of 128".into()),
        ),
        (
            with_items((0..17).map(|_| item("GA", 1)).collect()),
            Rejection::Invalid("17 items, over the limit of 16 per request".into()),
        ),
    ];
    for (req, expected) in cases {
        check_rejected(&mut inv, &req, T0, expected);
    }
}

#[test]
fn a_seat_of_another_tier_is_refused() {
    let mut s = spec();
    s.tiers.push(TierSpec {
        code: "BOX".into(),
        name: "Box".into(),
        price_minor: 9_000,
        fee_minor: 0,
        max_per_order: 2,
        sale_windows: vec![],
        stock: Stock::Seated {
            sections: vec![SectionSpec {
                name: "BOX".into(),
                rows: vec![RowSpec {
                    name: "1".into(),
                    seats: vec!["1".into(), "2".into()],
                }],
            }],
        },
    });
    let mut inv = Inventory::create(s, &limits()).unwrap().0;
    check_rejected(
        &mut inv,
        &seats_req("c1", vec![seat("BOX", "1", "1")]),
        T0,
        Rejection::SeatNotInTier {
            seat: seat("BOX", "1", "1"),
            requested: "SEAT".into(),
            actual: "BOX".into(),
        },
    );
}

#[test]
fn sold_out_customer_limits_and_status() {
    let mut inv = event();
    for (i, c) in ["a", "b"].iter().enumerate() {
        inv.reserve(&ga(c, 4), hid(i as u128), T0, &limits())
            .unwrap();
    }
    check_rejected(
        &mut inv,
        &ga("c", 3),
        T0,
        Rejection::SoldOut {
            tier: "GA".into(),
            requested: 3,
            available: 2,
        },
    );
    // Customer `a` holds 4; the limit is 8 tickets and 3 open holds.
    inv.reserve(&ga("a", 2), hid(10), T0, &limits()).unwrap();
    check_rejected(
        &mut inv,
        &seats_req(
            "a",
            vec![
                seat("A", "1", "1"),
                seat("A", "1", "2"),
                seat("A", "1", "3"),
            ],
        ),
        T0,
        Rejection::CustomerLimit {
            limit: 8,
            would_have: 9,
        },
    );
    inv.reserve(
        &seats_req("a", vec![seat("A", "1", "1")]),
        hid(11),
        T0,
        &limits(),
    )
    .unwrap();
    check_rejected(
        &mut inv,
        &seats_req("a", vec![seat("A", "1", "2")]),
        T0,
        Rejection::CustomerHoldLimit { limit: 3 },
    );
    inv.set_status(EventStatus::Paused, T0).unwrap();
    check_rejected(
        &mut inv,
        &ga("z", 1),
        T0,
        Rejection::NotOnSale(EventStatus::Paused),
    );
    // A paused event still confirms holds made before the pause.
    inv.confirm(&confirm(hid(0)), oid(1), T0, &limits())
        .unwrap();
    inv.set_status(EventStatus::Closed, T0).unwrap();
    assert_eq!(
        inv.set_status(EventStatus::OnSale, T0).unwrap_err(),
        Rejection::StatusChange {
            from: EventStatus::Closed,
            to: EventStatus::OnSale
        }
    );
    assert_eq!(
        inv.confirm(&confirm(hid(1)), oid(2), T0, &limits())
            .unwrap_err(),
        Rejection::NotOnSale(EventStatus::Closed)
    );
}

#[test]
fn sale_windows_bound_reservations() {
    let mut s = spec();
    s.tiers[0].sale_windows = vec![SaleWindow {
        opens_at_ms: T0 + 1_000,
        closes_at_ms: T0 + 2_000,
    }];
    let mut inv = Inventory::create(s, &limits()).unwrap().0;
    check_rejected(
        &mut inv,
        &ga("c", 1),
        T0,
        Rejection::OutsideSaleWindow("GA".into()),
    );
    check_rejected(
        &mut inv,
        &ga("c", 1),
        T0 + 2_000,
        Rejection::OutsideSaleWindow("GA".into()),
    );
    inv.reserve(&ga("c", 1), hid(1), T0 + 1_000, &limits())
        .unwrap();
}

#[test]
fn idempotency_keys_repeat_the_first_answer() {
    let mut inv = event();
    let mut req = ga("c1", 2);
    req.idempotency_key = Some("k1".into());
    let first = inv.reserve(&req, hid(1), T0, &limits()).unwrap();
    assert!(first.record.is_some());
    let again = inv.reserve(&req, hid(2), T0 + 5, &limits()).unwrap();
    assert!(again.record.is_none());
    assert_eq!(again.answer, first.answer);
    assert_eq!(counts(&inv, 0), (8, 2, 0));
    // Same key, other request: refused.
    let mut other = ga("c1", 1);
    other.idempotency_key = Some("k1".into());
    check_rejected(&mut inv, &other, T0, Rejection::IdempotencyKeyReused);
    // Same key, other customer: a different key.
    let mut theirs = req.clone();
    theirs.customer = "c2".into();
    assert!(
        inv.reserve(&theirs, hid(3), T0, &limits())
            .unwrap()
            .record
            .is_some()
    );
    // After the retention the key is forgotten and the request is decided afresh.
    let later = T0 + limits().idempotency_retention_ms + 1;
    inv.prune(later, &limits());
    let fresh = inv.reserve(&req, hid(4), later, &limits()).unwrap();
    assert!(fresh.record.is_some());
    assert_eq!(fresh.answer.id, hid(4));
}

#[test]
fn invalid_specs_are_refused() {
    let check = |change: &dyn Fn(&mut EventSpec), needle: &str| {
        let mut s = spec();
        change(&mut s);
        let err = Inventory::create(s, &limits()).unwrap_err().to_string();
        assert!(err.contains(needle), "{err} should mention {needle}");
    };
    check(&|s| s.tiers.clear(), "at least one tier");
    check(&|s| s.tiers[1].code = "GA".into(), "used twice");
    check(
        &|s| s.tiers[0].stock = Stock::General { capacity: 0 },
        "capacity 0",
    );
    check(&|s| s.tiers[0].max_per_order = 0, "max per order");
    check(
        &|s| {
            s.tiers[0].sale_windows = vec![SaleWindow {
                opens_at_ms: 5,
                closes_at_ms: 5,
            }]
        },
        "sale window",
    );
    check(&|s| s.hold_ttl_ms = 1, "hold ttl");
    check(&|s| s.customer_limit = Some(0), "customer limit");
    check(
        &|s| {
            if let Stock::Seated { sections } = &mut s.tiers[1].stock {
                sections[0].rows[1].name = "1".into();
            }
        },
        "listed twice",
    );
    check(
        &|s| s.time_zone = "Mars/Olympus_Mons".into(),
        "not an IANA time zone",
    );
    check(&|s| s.time_zone = String::new(), "time zone must be");
}

#[test]
fn a_contact_is_checked_and_carried_to_the_order_and_its_replay() {
    let contact = |email: &str, name: &str, language: &str| Contact {
        email: email.into(),
        name: name.into(),
        language: language.into(),
    };
    let mut inv = event();
    let placed = inv.reserve(&ga("c1", 2), hid(1), T0, &limits()).unwrap();
    for (bad, needle) in [
        (contact("ana", "", ""), "local@domain"),
        (contact("@example.com", "", ""), "local@domain"),
        (contact("ana@example..com", "", ""), "local@domain"),
        (contact("ana maria@example.com", "", ""), "local@domain"),
        (contact("a@b@example.com", "", ""), "local@domain"),
        (contact("a,b@example.com", "", ""), "local@domain"),
        (contact("ana@localhost", "", ""), "local@domain"),
        (contact("joão@example.pt", "", ""), "local@domain"),
        (contact("ana@-example.com", "", ""), "local@domain"),
        (contact("ana@example.com", "A\nB", ""), "control"),
        (contact("ana@example.com", "", "pt_BR"), "language tag"),
        (
            contact(&format!("{}@example.com", "a".repeat(250)), "", ""),
            "254 bytes",
        ),
    ] {
        let req = ConfirmRequest {
            contact: Some(bad),
            ..confirm(hid(1))
        };
        let err = inv.confirm(&req, oid(1), T0, &limits()).unwrap_err();
        assert!(
            err.to_string().contains(needle),
            "{err} should mention {needle}"
        );
    }
    let good = contact("joana@example.pt", "Joana Gonçalves", "pt-BR");
    let req = ConfirmRequest {
        contact: Some(good.clone()),
        ..confirm(hid(1))
    };
    let confirmed = inv.confirm(&req, oid(1), T0, &limits()).unwrap();
    assert_eq!(confirmed.answer.contact.as_deref(), Some(&good));

    // The log replays to the same order; a snapshot restores it.
    let mut replayed = Inventory::from_created(&Record::Created { spec: spec() });
    replayed.apply(&placed.record.unwrap());
    replayed.apply(&confirmed.record.unwrap());
    assert_eq!(
        replayed.order_view(oid(1)).unwrap().contact.as_deref(),
        Some(&good)
    );
    let snapshot = postcard::to_stdvec(&inv).unwrap();
    let restored = postcard::from_bytes::<Inventory>(&snapshot)
        .unwrap()
        .restored();
    assert_eq!(
        restored.order_view(oid(1)).unwrap().contact.as_deref(),
        Some(&good)
    );
    assert_eq!(
        restored.text_bytes, inv.text_bytes,
        "the contact counted alike"
    );
    // Changed after: its bytes leave and come back in step.
    let cancel = CancelOrderRequest {
        order_id: oid(1),
        reason: "changed plans".into(),
        idempotency_key: None,
    };
    inv.cancel_order(&cancel, T0 + 1, &limits()).unwrap();
    assert_eq!(
        inv.text_bytes,
        postcard::from_bytes::<Inventory>(&postcard::to_stdvec(&inv).unwrap())
            .unwrap()
            .restored()
            .text_bytes
    );
}

#[test]
fn replay_and_snapshot_rebuild_the_same_state() {
    let mut inv = event();
    let mut log = vec![Record::Created { spec: spec() }];
    log.extend(
        inv.reserve(&ga("c1", 2), hid(1), T0, &limits())
            .unwrap()
            .record,
    );
    log.extend(
        inv.reserve(
            &seats_req("c2", vec![seat("A", "2", "2")]),
            hid(2),
            T0,
            &limits(),
        )
        .unwrap()
        .record,
    );
    log.extend(
        inv.confirm(&confirm(hid(2)), oid(1), T0, &limits())
            .unwrap()
            .record,
    );
    log.extend(inv.expire_due(T0 + 60_000, 10));
    let mut replayed = Inventory::from_created(&log[0]);
    for r in &log[1..] {
        replayed.apply(r);
    }
    assert_eq!(replayed.summary(), inv.summary());
    assert_eq!(
        replayed.seat_availability(None),
        inv.seat_availability(None)
    );
    let bytes = postcard::to_allocvec(&inv).unwrap();
    let restored = postcard::from_bytes::<Inventory>(&bytes)
        .unwrap()
        .restored();
    restored.audit();
    assert_eq!(restored.summary(), inv.summary());
    assert_eq!(restored.order(oid(1)), inv.order(oid(1)));
}

/// The actor's issuer, with ticket ids counted instead of drawn; tokens signed with real keys.
pub(super) struct TestIssuer {
    pub(super) keys: crate::tickets::TicketKeys,
    pub(super) next: u128,
}

impl TicketIssuer for TestIssuer {
    fn ticket_id(&mut self) -> TicketId {
        self.next += 1;
        TicketId(Uuid::from_u128(self.next))
    }

    fn sign(&self, claims: &TicketClaims) -> String {
        self.keys.sign(claims)
    }
}

// ---------------------------------------------------------------------------------------------
// Property test: random operations against a model that only counts.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Ga {
        customer: u8,
        quantity: u32,
    },
    KeyedGa {
        customer: u8,
        quantity: u32,
        key: u8,
    },
    Seats {
        customer: u8,
        seats: Vec<u8>,
    },
    Best {
        customer: u8,
        quantity: u32,
    },
    Confirm(usize),
    Release(usize),
    Cancel(usize),
    /// Approve order `.0`; with the order's total if `.1`, else one minor unit short.
    Pay(usize, bool),
    Decline(usize),
    Refund(usize),
    Advance(u64),
    Status(u8),
    /// Scan ticket `.0` of those issued at gate `.1`: in, or out if `.2`; with scan id `.3`
    /// (few ids, so that retries and taken ids happen).
    Scan(usize, u8, bool, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 0u32..6).prop_map(|(customer, quantity)| Op::Ga { customer, quantity }),
        2 => (0u8..3, 1u32..3, 0u8..3).prop_map(|(customer, quantity, key)| Op::KeyedGa { customer, quantity, key }),
        3 => (0u8..6, proptest::collection::vec(0u8..13, 0..4))
            .prop_map(|(customer, seats)| Op::Seats { customer, seats }),
        3 => (0u8..6, 0u32..8).prop_map(|(customer, quantity)| Op::Best { customer, quantity }),
        3 => (0usize..64).prop_map(Op::Confirm),
        2 => (0usize..64).prop_map(Op::Release),
        1 => (0usize..64).prop_map(Op::Cancel),
        3 => (0usize..64, proptest::bool::weighted(0.8)).prop_map(|(o, ok)| Op::Pay(o, ok)),
        1 => (0usize..64).prop_map(Op::Decline),
        4 => (0usize..64, 0u8..3, proptest::bool::weighted(0.4), 0u8..24)
            .prop_map(|(t, gate, out, scan)| Op::Scan(t, gate, out, scan)),
        1 => (0usize..64).prop_map(Op::Refund),
        2 => (0u64..40_000).prop_map(Op::Advance),
        1 => (0u64..400_000).prop_map(Op::Advance),
        1 => (0u8..4).prop_map(Op::Status),
    ]
}

/// A hold as the model sees it: deadline, (tier, quantity) lines, seat numbers.
type ModelHold = (u64, Vec<(usize, u32)>, Vec<u32>);
/// An order as the model sees it: whether it still counts as sold, lines, seat numbers.
type ModelOrder = (bool, Vec<(usize, u32)>, Vec<u32>);

/// What the model tracks: per hold and order, which tier and how many, and which seat numbers.
#[derive(Default, Debug)]
struct Model {
    holds: BTreeMap<HoldId, ModelHold>,
    orders: BTreeMap<OrderId, ModelOrder>,
    seat_owner: BTreeMap<u32, u128>,
}

fn seat_ref(n: u8) -> SeatRef {
    // 0..=11 are real seats (rows 1 and 2, numbers 1..=6); 12 does not exist.
    if n >= 12 {
        return seat("A", "2", "7");
    }
    seat(
        "A",
        if n < 6 { "1" } else { "2" },
        &((n % 6) + 1).to_string(),
    )
}

fn seat_no(s: &SeatRef) -> u32 {
    let row = if s.row == "1" { 0 } else { 6 };
    row + s.number.parse::<u32>().unwrap() - 1
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_invariants(
        ops in proptest::collection::vec(op(), 1..120),
        reentry in proptest::bool::ANY,
    ) {
        let lim = Limits { max_open_holds_per_customer: 4, ..limits() };
        let spec = EventSpec { allow_reentry: reentry, ..spec() };
        let (mut inv, created) = Inventory::create(spec, &lim).unwrap();
        let mut log = vec![created];
        let mut model = Model::default();
        let mut now = T0;
        let mut hold_ids: Vec<HoldId> = Vec::new();
        let mut order_ids: Vec<OrderId> = Vec::new();
        // (customer, key) -> (quantity, hold) of the first accepted keyed request.
        let mut keyed: BTreeMap<(u8, u8), (u32, HoldId)> = BTreeMap::new();
        let mut status: BTreeMap<OrderId, OrderStatus> = BTreeMap::new();
        // Tickets issued, with their order; per ticket whether it is in, and each scan recorded
        // (scan id, gate) -> out.
        let mut tickets: Vec<(Ticket, OrderId)> = Vec::new();
        let mut inside: BTreeMap<TicketId, bool> = BTreeMap::new();
        let mut scans: BTreeMap<(TicketId, String, String), bool> = BTreeMap::new();
        let keys_dir = tempfile::tempdir().unwrap();
        let mut issuer = TestIssuer { keys: crate::tickets::TicketKeys::open(keys_dir.path()).unwrap(), next: 0 };
        // Snapshots taken along the way, each with the state's bytes when it was taken.
        let mut snapshots = Vec::new();
        for (id, op) in (1u128..).zip(ops) {
            // ... and cancels orders unpaid at their deadline.
            while let Some(r) = inv.expire_unpaid(now) {
                let Record::OrderCancelled { order_id, cause: CancelCause::PaymentTimeout, .. } = &r else {
                    panic!("not a payment timeout: {r:?}");
                };
                prop_assert_eq!(status.insert(*order_id, OrderStatus::Cancelled), Some(OrderStatus::PendingPayment));
                let entry = model.orders.get_mut(order_id).unwrap();
                prop_assert!(entry.0 && inv.order(*order_id).unwrap().payment_due_at_ms <= now);
                entry.0 = false;
                for s in &entry.2 { model.seat_owner.remove(s); }
                log.push(r);
            }
            // The actor sweeps due holds before every command; so does this driver.
            while let Some(r) = inv.expire_due(now, 3) {
                if let Record::HoldsExpired { hold_ids, .. } = &r {
                    for h in hold_ids {
                        let (_, _, seats) = model.holds.remove(h).unwrap();
                        for s in seats { model.seat_owner.remove(&s); }
                    }
                }
                log.push(r);
            }
            match op {
                Op::Ga { customer, quantity } | Op::Best { customer, quantity } => {
                    let is_ga = matches!(op, Op::Ga { .. });
                    let req = ReserveRequest {
                        customer: format!("c{customer}"),
                        items: vec![if is_ga {
                            ReserveItem::General { tier: "GA".into(), quantity }
                        } else {
                            ReserveItem::BestAvailable { tier: "SEAT".into(), quantity }
                        }],
                        hold_ttl_ms: Some(30_000),
                        idempotency_key: None,
                    };
                    let tier = if is_ga { 0 } else { 1 };
                    let available_before = inv.availability()[tier].available;
                    match inv.reserve(&req, hid(id), now, &lim) {
                        Ok(d) => {
                            prop_assert!(quantity >= 1 && quantity <= available_before);
                            let seats: Vec<u32> = d.answer.lines[0].seats.iter().map(seat_no).collect();
                            if !is_ga {
                                prop_assert_eq!(seats.len() as u32, quantity);
                                let rows: BTreeSet<_> = d.answer.lines[0].seats.iter().map(|s| s.row.clone()).collect();
                                prop_assert_eq!(rows.len(), 1, "best available stays in one row");
                            }
                            for s in &seats {
                                prop_assert!(model.seat_owner.insert(*s, id).is_none(), "seat {} sold twice", s);
                            }
                            model.holds.insert(hid(id), (now + 30_000, vec![(tier, quantity)], seats));
                            hold_ids.push(hid(id));
                            log.extend(d.record);
                        }
                        Err(Rejection::SoldOut { available, .. }) => prop_assert!(available < quantity && available == available_before),
                        Err(Rejection::NoSeatsTogether { .. }) => prop_assert!(!is_ga),
                        Err(_) => {}
                    }
                }
                Op::KeyedGa { customer, quantity, key } => {
                    let mut req = ga(&format!("c{customer}"), quantity);
                    req.hold_ttl_ms = Some(30_000);
                    req.idempotency_key = Some(format!("k{key}"));
                    let before = inv.availability();
                    match (inv.reserve(&req, hid(id), now, &lim), keyed.get(&(customer, key))) {
                        (Ok(d), Some(&(q, first))) => {
                            prop_assert_eq!(q, quantity, "a different request under a used key was accepted");
                            prop_assert!(d.record.is_none(), "a repeated key changed state");
                            prop_assert_eq!(d.answer.id, first);
                            prop_assert_eq!(inv.availability(), before);
                        }
                        (Ok(d), None) => {
                            prop_assert!(d.record.is_some());
                            keyed.insert((customer, key), (quantity, hid(id)));
                            model.holds.insert(hid(id), (now + 30_000, vec![(0, quantity)], vec![]));
                            hold_ids.push(hid(id));
                            log.extend(d.record);
                        }
                        (Err(Rejection::IdempotencyKeyReused), entry) => {
                            prop_assert!(entry.is_some_and(|(q, _)| *q != quantity));
                        }
                        (Err(_), _) => prop_assert_eq!(inv.availability(), before),
                    }
                }
                Op::Seats { customer, seats } => {
                    let refs: Vec<SeatRef> = seats.iter().map(|&n| seat_ref(n)).collect();
                    let req = ReserveRequest {
                        customer: format!("c{customer}"),
                        items: vec![ReserveItem::Seats { tier: "SEAT".into(), seats: refs.clone() }],
                        hold_ttl_ms: Some(30_000),
                        idempotency_key: None,
                    };
                    match inv.reserve(&req, hid(id), now, &lim) {
                        Ok(d) => {
                            let nos: Vec<u32> = refs.iter().map(seat_no).collect();
                            for s in &nos {
                                prop_assert!(model.seat_owner.insert(*s, id).is_none(), "seat {} sold twice", s);
                            }
                            model.holds.insert(hid(id), (now + 30_000, vec![(1, nos.len() as u32)], nos));
                            hold_ids.push(hid(id));
                            log.extend(d.record);
                        }
                        Err(Rejection::SeatTaken(s)) => prop_assert!(model.seat_owner.contains_key(&seat_no(&s))),
                        Err(Rejection::UnknownSeat(_)) => prop_assert!(seats.contains(&12)),
                        Err(Rejection::DuplicateSeat(_)) => {
                            let unique: BTreeSet<_> = seats.iter().collect();
                            prop_assert!(unique.len() < seats.len());
                        }
                        Err(_) => {}
                    }
                }
                Op::Confirm(i) | Op::Release(i) if !hold_ids.is_empty() => {
                    let h = hold_ids[i % hold_ids.len()];
                    let live = model.holds.get(&h).is_some_and(|(exp, ..)| *exp > now);
                    let result = if matches!(op, Op::Confirm(_)) {
                        inv.confirm(&confirm(h), oid(id), now, &lim).map(|d| d.record)
                    } else {
                        inv.release(&ReleaseRequest { hold_id: h, idempotency_key: None }, now, &lim).map(|d| d.record)
                    };
                    match result {
                        Ok(record) => {
                            prop_assert!(live);
                            let (_, lines, seats) = model.holds.remove(&h).unwrap();
                            if matches!(op, Op::Confirm(_)) {
                                for s in &seats { model.seat_owner.insert(*s, id); }
                                model.orders.insert(oid(id), (true, lines, seats));
                                status.insert(oid(id), OrderStatus::PendingPayment);
                                order_ids.push(oid(id));
                            } else {
                                for s in &seats { model.seat_owner.remove(s); }
                            }
                            log.extend(record);
                        }
                        Err(Rejection::NotOnSale(EventStatus::Closed)) => {}
                        Err(e) => prop_assert!(!live, "live hold refused: {}", e),
                    }
                }
                Op::Cancel(i) if !order_ids.is_empty() => {
                    let o = order_ids[i % order_ids.len()];
                    let req = CancelOrderRequest { order_id: o, reason: "test".into(), idempotency_key: None };
                    match inv.cancel_order(&req, now, &lim) {
                        Ok(d) => {
                            prop_assert_eq!(status.insert(o, OrderStatus::Cancelled), Some(OrderStatus::PendingPayment));
                            let entry = model.orders.get_mut(&o).unwrap();
                            prop_assert!(entry.0);
                            entry.0 = false;
                            for s in &entry.2 { model.seat_owner.remove(s); }
                            log.extend(d.record);
                        }
                        Err(_) => prop_assert!(status[&o] != OrderStatus::PendingPayment),
                    }
                }
                Op::Pay(i, _) | Op::Decline(i) | Op::Refund(i) if !order_ids.is_empty() => {
                    let o = order_ids[i % order_ids.len()];
                    let before = status[&o];
                    let total = inv.order(o).unwrap().total_minor;
                    let (record, after) = match op {
                        Op::Pay(_, ok) => {
                            let amount = if ok { total } else { total - 1 };
                            let result = PaymentResult {
                                order_id: o,
                                provider: "test".into(),
                                outcome: PaymentOutcome::Approved {
                                    provider_ref: format!("p{id}"),
                                    amount_minor: amount,
                                    currency: Currency::parse("EUR").unwrap(),
                                },
                            };
                            let d = inv.settle_payment(&result, now, &lim, &mut issuer).unwrap();
                            let pays = ok && before == OrderStatus::PendingPayment;
                            prop_assert_eq!(d.answer.0, if pays { Settlement::Paid } else { Settlement::RefundRequested });
                            (d.record, if pays { OrderStatus::Paid } else { before })
                        }
                        Op::Decline(_) => {
                            let result = PaymentResult {
                                order_id: o,
                                provider: "test".into(),
                                outcome: PaymentOutcome::Declined { reason: "no".into() },
                            };
                            let d = inv.settle_payment(&result, now, &lim, &mut issuer).unwrap();
                            let cancels = before == OrderStatus::PendingPayment;
                            prop_assert_eq!(d.record.is_some(), cancels);
                            (d.record, if cancels { OrderStatus::Cancelled } else { before })
                        }
                        _ => {
                            let req = RefundOrderRequest { order_id: o, reason: "r".into(), idempotency_key: None };
                            match inv.refund_order(&req, now, &lim) {
                                Ok(d) => {
                                    prop_assert_eq!(before, OrderStatus::Paid);
                                    (d.record, OrderStatus::Refunded)
                                }
                                Err(Rejection::OrderNotRefundable { .. }) => {
                                    prop_assert!(before != OrderStatus::Paid);
                                    (None, before)
                                }
                                Err(e) => panic!("refund refused: {e}"),
                            }
                        }
                    };
                    if before != after && after != OrderStatus::Paid {
                        let entry = model.orders.get_mut(&o).unwrap();
                        entry.0 = false;
                        for s in &entry.2 { model.seat_owner.remove(s); }
                    }
                    status.insert(o, after);
                    let answer = inv.order(o).unwrap();
                    prop_assert_eq!(answer.status, after);
                    let issued = matches!(after, OrderStatus::Paid | OrderStatus::Refunded);
                    prop_assert_eq!(answer.tickets.len() as u32, if issued { answer.lines.iter().map(|l| l.quantity).sum() } else { 0 });
                    for t in &answer.tickets {
                        prop_assert_eq!(issuer.keys.verify(&t.token).unwrap().ticket_id, t.id);
                        if !tickets.iter().any(|(k, _)| k.id == t.id) {
                            tickets.push((t.clone(), o));
                        }
                    }
                    log.extend(record);
                }
                Op::Scan(i, gate, out, scan_id) if !tickets.is_empty() => {
                    let (ticket, order) = &tickets[i % tickets.len()];
                    let scan = Scan {
                        ticket_id: ticket.id,
                        token: ticket.token.clone(),
                        gate: format!("g{gate}"),
                        scan_id: format!("s{scan_id}"),
                    };
                    let key = (ticket.id, scan.gate.clone(), scan.scan_id.clone());
                    let was_in = inside.get(&ticket.id).copied().unwrap_or(false);
                    let seen = scans.get(&key).copied();
                    let count = scans.keys().filter(|(t, ..)| *t == ticket.id).count();
                    let before = inv.check_in_stats();
                    let result = if out {
                        inv.check_out(&scan, now).map(|d| (d.record, d.answer.1))
                    } else {
                        inv.check_in(&scan, now).map(|d| (d.record, d.answer.1))
                    };
                    match (result, seen) {
                        // A retry: the same kind of scan, nothing recorded.
                        (Ok((record, made)), Some(was_out)) => {
                            prop_assert!(record.is_none() && !made && was_out == out);
                        }
                        (Ok((record, made)), None) => {
                            // A ticket in may always leave; entries are bounded.
                            prop_assert!(made && (out || count < MAX_SCANS_PER_TICKET));
                            if out {
                                prop_assert!(reentry && was_in);
                            } else {
                                prop_assert!(!was_in && status[order] == OrderStatus::Paid);
                                prop_assert!(reentry || !scans.keys().any(|(t, ..)| *t == ticket.id));
                            }
                            inside.insert(ticket.id, !out);
                            scans.insert(key, out);
                            log.extend(record);
                        }
                        (Err(e), _) => {
                            prop_assert_eq!(inv.check_in_stats(), before);
                            let expected = match e {
                                Rejection::ScanIdTaken { .. } => seen == Some(!out),
                                Rejection::ReentryNotAllowed => out && !reentry,
                                Rejection::NotCheckedIn(_) => out && !was_in,
                                Rejection::AlreadyCheckedIn { .. } => !out && was_in,
                                Rejection::TicketVoid { .. } => !out && status[order] != OrderStatus::Paid,
                                Rejection::CheckInLimit(_) => count >= MAX_SCANS_PER_TICKET,
                                _ => false,
                            };
                            prop_assert!(expected, "{} (in: {}, seen: {:?})", e, was_in, seen);
                        }
                    }
                    let stats = inv.check_in_stats();
                    let in_now = inside.values().filter(|i| **i).count() as u64;
                    prop_assert_eq!(stats.inside, in_now);
                }
                Op::Advance(ms) => now += ms,
                Op::Status(s) => {
                    let to = [EventStatus::Draft, EventStatus::OnSale, EventStatus::Paused, EventStatus::Closed][s as usize];
                    if let Ok(d) = inv.set_status(to, now) { log.extend(d.record); }
                }
                _ => {}
            }
            // The model's counts equal the inventory's, tier by tier.
            for (tier, capacity) in [(0usize, 10u32), (1, 12)] {
                let held: u32 = model.holds.values().flat_map(|(_, l, ..)| l).filter(|(t, _)| *t == tier).map(|(_, q)| q).sum();
                let sold: u32 = model.orders.values().filter(|o| o.0).flat_map(|(_, l, _)| l).filter(|(t, _)| *t == tier).map(|(_, q)| q).sum();
                let a = &inv.availability()[tier];
                prop_assert_eq!((a.held, a.sold, a.available), (held, sold, capacity - held - sold));
            }
            inv.audit();
            if id % 4 == 0 {
                snapshots.push((inv.snapshot(), postcard::to_allocvec(&inv).unwrap()));
            }
            // Some are let go (checked first), so tables stop being shared and their changes
            // are folded in while the run goes on.
            if id % 12 == 0 {
                let (snapshot, bytes) = snapshots.remove(0);
                prop_assert_eq!(postcard::to_allocvec(&snapshot).unwrap(), bytes);
            }
        }
        // A snapshot shares the state's chunks, and the changes after it never show in it.
        for (snapshot, bytes) in &snapshots {
            prop_assert_eq!(&postcard::to_allocvec(snapshot).unwrap(), bytes, "lsn {}", snapshot.lsn());
        }
        // The log rebuilds the same state.
        let mut replayed = Inventory::from_created(&log[0]);
        for r in &log[1..] { replayed.apply(r); }
        replayed.audit();
        prop_assert_eq!(replayed.summary(), inv.summary());
        prop_assert_eq!(replayed.seat_availability(None), inv.seat_availability(None));
        prop_assert_eq!(replayed.applied(), inv.applied());
        for o in &order_ids {
            prop_assert_eq!(replayed.order(*o), inv.order(*o));
        }
        prop_assert_eq!(replayed.check_in_stats(), inv.check_in_stats());
    }
}

// ---------------------------------------------------------------------------------------------
// `check_state` on states a snapshot could decode to: what `prune` relies on is checked too.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_state_with_a_client_key_not_queued_to_be_forgotten_fails_the_check() {
    let mut inv = event();
    let keyed = ReserveRequest {
        idempotency_key: Some("k1".into()),
        ..ga("ana", 1)
    };
    inv.reserve(&keyed, hid(1), T0, &limits()).unwrap();
    inv.check_state().unwrap();
    // Decoded from a snapshot whose queue lost the key: `prune` would pop an empty queue
    // (`forget_oldest_key` expects a front) once the keys are over their limit.
    let mut lost = inv.clone();
    lost.key_queue.clear();
    let why = lost.check_state().unwrap_err();
    assert!(
        why.contains("key k1") && why.contains("not queued"),
        "{why}"
    );
}

#[test]
fn a_state_whose_ended_hold_count_disagrees_with_its_notes_fails_the_check() {
    let mut inv = event();
    inv.reserve(&ga("ana", 1), hid(1), T0, &limits()).unwrap();
    let release = ReleaseRequest {
        hold_id: hid(1),
        idempotency_key: None,
    };
    inv.release(&release, T0 + 1, &limits()).unwrap();
    inv.check_state().unwrap();
    // A count below its notes' would underflow when `prune` takes their chunk off it.
    let mut short = inv.clone();
    // The notes encode as their chunks, then the count: one varint byte for 1, made 0.
    let mut bytes = postcard::to_stdvec(&inv.ended).unwrap();
    assert_eq!(bytes.pop(), Some(1));
    bytes.push(0);
    short.ended = postcard::from_bytes(&bytes).unwrap();
    let why = short.check_state().unwrap_err();
    assert!(why.contains("ended-hold notes"), "{why}");
}
