//! Bad input, table-driven: each request gets its precise rejection and the event is unchanged.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engine::Error;
use engine::inventory::{
    CancelOrderRequest, ConfirmRequest, HoldId, OrderId, Rejection, ReleaseRequest, ReserveItem,
    ReserveRequest, SaleWindow,
};
use tests::{event, ga_tier, now_ms, reserve_ga, reserve_seats, seat_in, seated_tier};
use uuid::Uuid;

use crate::{create, fresh_engine};

enum Call {
    Reserve(ReserveRequest),
    Confirm(ConfirmRequest),
    Release(ReleaseRequest),
    Cancel(CancelOrderRequest),
}

async fn call(handle: &engine::EventHandle, c: &Call) -> Result<(), Error> {
    match c {
        Call::Reserve(r) => handle.reserve(r.clone()).await.map(drop),
        Call::Confirm(r) => handle.confirm(r.clone()).await.map(drop),
        Call::Release(r) => handle.release(r.clone()).await.map(drop),
        Call::Cancel(r) => handle.cancel_order(r.clone()).await.map(drop),
    }
}

fn confirm(hold_id: HoldId) -> Call {
    Call::Confirm(ConfirmRequest {
        hold_id,
        payment_ref: "card".into(),
        idempotency_key: None,
        contact: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_request_gets_its_rejection_and_changes_nothing() {
    let (engine, _dir, _) = fresh_engine(|_| {}).await;
    let mut spec = event(vec![
        ga_tier("GA", 100, 4),
        seated_tier("S", 2, 10, 4),
        seated_tier("BOX", 1, 4, 2),
        ga_tier("LATER", 50, 4),
    ]);
    spec.customer_limit = Some(6);
    spec.tiers[3].sale_windows = vec![SaleWindow {
        opens_at_ms: now_ms() + 3_600_000,
        closes_at_ms: now_ms() + 7_200_000,
    }];
    let handle = create(&engine, spec).await;

    // State to refuse against: a confirmed hold, a customer near the limit, an expired hold.
    let confirmed = handle.reserve(reserve_ga("bob", "GA", 1)).await.unwrap();
    let order = handle
        .confirm(ConfirmRequest {
            hold_id: confirmed.id,
            payment_ref: "card".into(),
            idempotency_key: None,
            contact: None,
        })
        .await
        .unwrap();
    handle.reserve(reserve_ga("carol", "GA", 4)).await.unwrap();
    let mut short = reserve_ga("dave", "GA", 1);
    short.hold_ttl_ms = Some(1_000);
    let expired = handle.reserve(short).await.unwrap();
    let give_up = Instant::now() + Duration::from_secs(20);
    while engine.stats().holds_expired.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < give_up, "hold never expired");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cancel = CancelOrderRequest {
        order_id: order.id,
        reason: "refund".into(),
        idempotency_key: None,
    };
    handle.cancel_order(cancel.clone()).await.unwrap();

    let unknown_hold = HoldId(Uuid::from_u128(404));
    let unknown_order = OrderId(Uuid::from_u128(405));
    let item = |tier: &str, quantity| ReserveItem::General {
        tier: tier.into(),
        quantity,
    };
    let with_items = |items| ReserveRequest {
        customer: "eve".into(),
        items,
        hold_ttl_ms: None,
        idempotency_key: None,
    };
    let cases: Vec<(&str, Call, Rejection)> = vec![
        (
            "zero quantity",
            Call::Reserve(reserve_ga("eve", "GA", 0)),
            Rejection::Invalid("item for tier `GA` asks for no tickets".into()),
        ),
        (
            "no items",
            Call::Reserve(with_items(vec![])),
            Rejection::Invalid("a reservation needs at least one item".into()),
        ),
        (
            "unknown tier",
            Call::Reserve(reserve_ga("eve", "VIP", 1)),
            Rejection::UnknownTier("VIP".into()),
        ),
        (
            "unknown seat",
            Call::Reserve(reserve_seats("eve", "S", vec![seat_in("S", 9, 1)])),
            Rejection::UnknownSeat(seat_in("S", 9, 1)),
        ),
        (
            "seat of another tier",
            Call::Reserve(reserve_seats("eve", "S", vec![seat_in("BOX", 1, 1)])),
            Rejection::SeatNotInTier {
                seat: seat_in("BOX", 1, 1),
                requested: "S".into(),
                actual: "BOX".into(),
            },
        ),
        (
            "duplicate seats",
            Call::Reserve(reserve_seats(
                "eve",
                "S",
                vec![seat_in("S", 1, 1), seat_in("S", 1, 1)],
            )),
            Rejection::DuplicateSeat(seat_in("S", 1, 1)),
        ),
        (
            "above max per order",
            Call::Reserve(reserve_seats(
                "eve",
                "BOX",
                vec![
                    seat_in("BOX", 1, 1),
                    seat_in("BOX", 1, 2),
                    seat_in("BOX", 1, 3),
                ],
            )),
            Rejection::MaxPerOrder {
                tier: "BOX".into(),
                requested: 3,
                max: 2,
            },
        ),
        (
            "above max per order over two items",
            Call::Reserve(with_items(vec![item("GA", 3), item("GA", 3)])),
            Rejection::MaxPerOrder {
                tier: "GA".into(),
                requested: 6,
                max: 4,
            },
        ),
        (
            "over the customer limit",
            Call::Reserve(reserve_ga("carol", "GA", 3)),
            Rejection::CustomerLimit {
                limit: 6,
                would_have: 7,
            },
        ),
        (
            "outside the sale window",
            Call::Reserve(reserve_ga("eve", "LATER", 1)),
            Rejection::OutsideSaleWindow("LATER".into()),
        ),
        (
            "unknown hold",
            confirm(unknown_hold),
            Rejection::HoldNotFound(unknown_hold),
        ),
        (
            "expired hold",
            confirm(expired.id),
            Rejection::HoldExpired(expired.id),
        ),
        (
            "confirm twice",
            confirm(confirmed.id),
            Rejection::HoldAlreadyConfirmed {
                hold: confirmed.id,
                order: order.id,
            },
        ),
        (
            "release an unknown hold",
            Call::Release(ReleaseRequest {
                hold_id: unknown_hold,
                idempotency_key: None,
            }),
            Rejection::HoldNotFound(unknown_hold),
        ),
        (
            "cancel an unknown order",
            Call::Cancel(CancelOrderRequest {
                order_id: unknown_order,
                reason: "x".into(),
                idempotency_key: None,
            }),
            Rejection::OrderNotFound(unknown_order),
        ),
        (
            "cancel twice",
            Call::Cancel(cancel),
            Rejection::OrderNotCancellable {
                order: order.id,
                status: engine::inventory::OrderStatus::Cancelled,
            },
        ),
    ];
    let before = handle.audit().await.unwrap();
    for (name, request, expected) in cases {
        match call(&handle, &request).await {
            Err(Error::Rejected(got)) => assert_eq!(got, expected, "{name}"),
            other => panic!("{name}: expected {expected}, got {other:?}"),
        }
        let after = handle.audit().await.unwrap();
        assert_eq!(after.summary, before.summary, "{name} changed the event");
        assert_eq!(
            after.applied_records, before.applied_records,
            "{name} wrote a record"
        );
    }
    engine.shutdown().await;
}
