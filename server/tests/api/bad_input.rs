//! Every malformed or forbidden request gets its documented code and reason, and changes nothing.

use std::time::{Duration, Instant};

use proto::v1;
use proto::v1::reserve_item::Selection;
use tonic::Code;

use crate::support::*;

const ADMIN_KEY: &str = "admin-key-for-tests";
const SHOP_KEY: &str = "storefront-key-for-tests";

fn item(tier: &str, selection: Option<Selection>) -> v1::ReserveItem {
    v1::ReserveItem {
        tier_code: tier.into(),
        selection,
    }
}

fn reserve(event: &str, customer: &str, items: Vec<v1::ReserveItem>) -> v1::ReserveRequest {
    v1::ReserveRequest {
        event_id: event.into(),
        customer_id: customer.into(),
        items,
        hold_ttl_seconds: None,
        idempotency_key: String::new(),
    }
}

/// What a refused request must leave alone: counts, open holds, orders of every event.
async fn state(c: &mut Clients) -> Vec<v1::EventSummary> {
    let req = c.req(v1::ListEventsRequest::default());
    c.admin.list_events(req).await.unwrap().into_inner().events
}

#[tokio::test]
async fn bad_requests_get_their_code_and_reason_and_change_nothing() {
    let keys = format!(
        r#"[{{ name = "ops", sha256 = "{}", roles = ["admin"] }}, {{ name = "shop", sha256 = "{}", roles = ["storefront"] }}]"#,
        server::auth::hash_key(ADMIN_KEY),
        server::auth::hash_key(SHOP_KEY),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[("BOXOFFICE_AUTH__KEYS", &keys)]);
    let channel = server.channel().await;
    let mut admin = Clients::new(channel.clone(), ADMIN_KEY);
    let mut c = Clients::new(channel.clone(), SHOP_KEY);

    let mut spec = event_request(100, 10);
    spec.customer_limit = Some(12);
    let event = admin.create(spec).await.event_id;
    let mut tiny = event_request(1, 1);
    tiny.tiers[0].max_per_order = 1;
    let tiny = admin.create(tiny).await.event_id;
    let mut draft = event_request(10, 1);
    draft.status = v1::EventStatus::Draft as i32;
    let draft = admin.create(draft).await.event_id;

    // Holds and an order for the refusals that need them.
    let live = c.reserve(ga(&event, "alice", 2, "")).await.unwrap();
    c.reserve(ga(&tiny, "zoe", 1, "")).await.unwrap();
    let seat_a1 = reserve(
        &event,
        "bob",
        vec![item(
            "SEAT",
            Some(Selection::Seats(v1::SeatList {
                seats: vec![seat("A", "1")],
            })),
        )],
    );
    c.reserve(seat_a1.clone()).await.unwrap();
    let mut short = ga(&event, "carol", 1, "");
    short.hold_ttl_seconds = Some(1);
    let expiring = c.reserve(short).await.unwrap();
    let confirmed = c.reserve(ga(&event, "dave", 1, "")).await.unwrap();
    let req = c.req(v1::ConfirmRequest {
        event_id: event.clone(),
        hold_id: confirmed.hold_id.clone(),
        payment: Some(v1::Payment {
            reference: "p".into(),
        }),
        idempotency_key: String::new(),
        contact: None,
    });
    let order = c
        .reservations
        .confirm(req)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    let req = c.req(v1::CancelOrderRequest {
        event_id: event.clone(),
        order_id: order.order_id.clone(),
        reason: "test".into(),
        idempotency_key: String::new(),
    });
    c.reservations.cancel_order(req).await.unwrap();
    let keyed = ga(&event, "erin", 1, "erin-key");
    c.reserve(keyed.clone()).await.unwrap();
    // Wait until the 1 s hold has expired, as the server reports it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = c.req(v1::GetHoldRequest {
            event_id: event.clone(),
            hold_id: expiring.hold_id.clone(),
        });
        match c.reservations.get_hold(req).await {
            Err(s) if reason(&s) == "HOLD_EXPIRED" => break,
            _ => assert!(Instant::now() < deadline, "the 1 s hold never expired"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let before = state(&mut admin).await;
    let unknown = uuid::Uuid::now_v7().to_string();
    let qty = |n| Some(Selection::Quantity(n));
    let mut too_many_items = reserve(&event, "x", vec![item("GA", qty(1)); 17]);
    too_many_items.idempotency_key = String::new();
    let mut long_customer = ga(&event, &"c".repeat(129), 1, "");
    long_customer.idempotency_key = String::new();
    let mut ttl_too_long = ga(&event, "x", 1, "");
    ttl_too_long.hold_ttl_seconds = Some(7 * 24 * 3600);
    let mut reused = keyed.clone();
    reused.items[0].selection = qty(2);

    let reserve_cases: Vec<(&str, v1::ReserveRequest, Code, &str)> = vec![
        (
            "no event id",
            ga("", "x", 1, ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "event id not a uuid",
            ga("nope", "x", 1, ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown event",
            ga(&unknown, "x", 1, ""),
            Code::NotFound,
            "EVENT_NOT_FOUND",
        ),
        (
            "no customer",
            ga(&event, "", 1, ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "customer id too long",
            long_customer,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "no items",
            reserve(&event, "x", vec![]),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "item without selection",
            reserve(&event, "x", vec![item("GA", None)]),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "zero quantity",
            ga(&event, "x", 0, ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown tier",
            reserve(&event, "x", vec![item("VIP", qty(1))]),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "quantity for a seated tier",
            reserve(&event, "x", vec![item("SEAT", qty(1))]),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown seat",
            reserve(
                &event,
                "x",
                vec![item(
                    "SEAT",
                    Some(Selection::Seats(v1::SeatList {
                        seats: vec![seat("Z", "9")],
                    })),
                )],
            ),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "seat named twice",
            reserve(
                &event,
                "x",
                vec![item(
                    "SEAT",
                    Some(Selection::Seats(v1::SeatList {
                        seats: vec![seat("B", "1"), seat("B", "1")],
                    })),
                )],
            ),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "too many items",
            too_many_items,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "ttl over the maximum",
            ttl_too_long,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "over max per order",
            ga(&event, "x", 11, ""),
            Code::InvalidArgument,
            "MAX_PER_ORDER",
        ),
        (
            "over the customer limit",
            reserve(
                &event,
                "alice",
                vec![
                    item("GA", qty(10)),
                    item("SEAT", Some(Selection::BestAvailable(1))),
                ],
            ),
            Code::FailedPrecondition,
            "CUSTOMER_LIMIT",
        ),
        (
            "sold out",
            ga(&tiny, "y", 1, ""),
            Code::FailedPrecondition,
            "SOLD_OUT",
        ),
        (
            "seat taken",
            seat_a1.clone(),
            Code::FailedPrecondition,
            "SEAT_TAKEN",
        ),
        (
            "not on sale",
            ga(&draft, "x", 1, ""),
            Code::FailedPrecondition,
            "NOT_ON_SALE",
        ),
        (
            "no seats together",
            reserve(
                &tiny,
                "x",
                vec![item("SEAT", Some(Selection::BestAvailable(2)))],
            ),
            Code::FailedPrecondition,
            "NO_SEATS_TOGETHER",
        ),
        (
            "key reused for another request",
            reused,
            Code::InvalidArgument,
            "IDEMPOTENCY_KEY_REUSED",
        ),
    ];
    for (name, request, code, why) in reserve_cases {
        assert_case(name, c.reserve(request).await, code, why);
    }

    let confirm = |hold: &str, reference: &str| v1::ConfirmRequest {
        event_id: event.clone(),
        hold_id: hold.to_string(),
        payment: Some(v1::Payment {
            reference: reference.into(),
        }),
        idempotency_key: String::new(),
        contact: None,
    };
    let confirm_cases: Vec<(&str, v1::ConfirmRequest, Code, &str)> = vec![
        (
            "hold id not a uuid",
            confirm("42", "p"),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "no payment reference",
            confirm(&live.hold_id, ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown hold",
            confirm(&unknown, "p"),
            Code::NotFound,
            "HOLD_NOT_FOUND",
        ),
        (
            "contact email without a domain",
            v1::ConfirmRequest {
                contact: Some(v1::Contact {
                    email: "ana@".into(),
                    name: "Ana".into(),
                    language: "pt".into(),
                }),
                ..confirm(&live.hold_id, "p")
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "contact language not a tag",
            v1::ConfirmRequest {
                contact: Some(v1::Contact {
                    email: "ana@example.com".into(),
                    name: String::new(),
                    language: "pt BR".into(),
                }),
                ..confirm(&live.hold_id, "p")
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "expired hold",
            confirm(&expiring.hold_id, "p"),
            Code::FailedPrecondition,
            "HOLD_EXPIRED",
        ),
        (
            "confirmed twice",
            confirm(&confirmed.hold_id, "p"),
            Code::FailedPrecondition,
            "HOLD_ALREADY_CONFIRMED",
        ),
    ];
    for (name, request, code, why) in confirm_cases {
        let req = c.req(request);
        assert_case(name, c.reservations.confirm(req).await, code, why);
    }

    let req = c.req(v1::ReleaseRequest {
        event_id: event.clone(),
        hold_id: unknown.clone(),
        idempotency_key: String::new(),
    });
    assert_refused(
        c.reservations.release(req).await,
        Code::NotFound,
        "HOLD_NOT_FOUND",
    );
    let req = c.req(v1::GetOrderRequest {
        event_id: event.clone(),
        order_id: unknown.clone(),
    });
    assert_refused(
        c.reservations.get_order(req).await,
        Code::NotFound,
        "ORDER_NOT_FOUND",
    );
    let req = c.req(v1::CancelOrderRequest {
        event_id: event.clone(),
        order_id: order.order_id.clone(),
        reason: "again".into(),
        idempotency_key: String::new(),
    });
    assert_refused(
        c.reservations.cancel_order(req).await,
        Code::FailedPrecondition,
        "ORDER_NOT_CANCELLABLE",
    );
    let req = c.req(v1::GetAvailabilityRequest {
        event_id: unknown.clone(),
        ..Default::default()
    });
    assert_refused(
        c.availability.get_availability(req).await,
        Code::NotFound,
        "EVENT_NOT_FOUND",
    );

    // Admin refusals.
    let mut bad_currency = event_request(10, 1);
    bad_currency.currency = "euro".into();
    let mut no_tiers = event_request(10, 1);
    no_tiers.tiers.clear();
    let mut no_stock = event_request(10, 1);
    no_stock.tiers[0].stock = None;
    let mut zero_capacity = event_request(0, 1);
    zero_capacity.name = "zero".into();
    let mut exists = event_request(10, 1);
    exists.event_id = event.clone();
    for (name, request, code, why) in [
        (
            "bad currency",
            bad_currency,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "no tiers",
            no_tiers,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "tier without stock",
            no_stock,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "zero capacity",
            zero_capacity,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        ("event exists", exists, Code::AlreadyExists, "EVENT_EXISTS"),
        (
            "payment ttl over the maximum",
            v1::CreateEventRequest {
                payment_ttl_seconds: 31 * 86_400,
                ..event_request(10, 1)
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown time zone",
            v1::CreateEventRequest {
                time_zone: "Europe/Atlantis".into(),
                ..event_request(10, 1)
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ] {
        let req = admin.req(request);
        assert_case(name, admin.admin.create_event(req).await, code, why);
    }
    let refund = |order_id: &str, reason: &str| v1::RefundOrderRequest {
        event_id: event.clone(),
        order_id: order_id.to_string(),
        reason: reason.to_string(),
        idempotency_key: String::new(),
    };
    for (name, request, code, why) in [
        (
            "refund: bad order id",
            refund("not-a-uuid", "r"),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "refund: unknown order",
            refund(&unknown, "r"),
            Code::NotFound,
            "ORDER_NOT_FOUND",
        ),
        (
            "refund: a cancelled order",
            refund(&order.order_id, "r"),
            Code::FailedPrecondition,
            "ORDER_NOT_REFUNDABLE",
        ),
        (
            "refund: no reason",
            refund(&order.order_id, ""),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ] {
        let req = admin.req(request);
        assert_case(name, admin.admin.refund_order(req).await, code, why);
    }
    let req = c.req(refund(&order.order_id, "r"));
    assert_refused(
        proto::v1::event_admin_client::EventAdminClient::new(channel.clone())
            .refund_order(req)
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let req = admin.req(v1::GetEventKeysRequest {
        event_id: event.clone(),
    });
    assert_refused(
        proto::v1::check_in_client::CheckInClient::new(channel.clone())
            .get_event_keys(req)
            .await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let req = admin.req(v1::SetEventStatusRequest {
        event_id: event.clone(),
        status: v1::EventStatus::Unspecified as i32,
    });
    assert_refused(
        admin.admin.set_event_status(req).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    let req = admin.req(v1::ListEventsRequest {
        page_size: 5_000,
        page_token: String::new(),
    });
    assert_refused(
        admin.admin.list_events(req).await,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );

    // Authentication and roles: nothing gets through, nothing changes.
    let anonymous = Clients::new(channel.clone(), SHOP_KEY).without_key();
    let mut anonymous_r = anonymous.clone();
    let req = anonymous.req(ga(&event, "x", 1, ""));
    assert_refused(
        anonymous_r.reservations.reserve(req).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let mut wrong = Clients::new(channel.clone(), "not-a-key");
    assert_refused(
        wrong.reserve(ga(&event, "x", 1, "")).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let mut dev = Clients::new(channel.clone(), DEV_KEY);
    assert_refused(
        dev.reserve(ga(&event, "x", 1, "")).await,
        Code::Unauthenticated,
        "UNAUTHENTICATED",
    );
    let req = c.req(event_request(10, 1));
    assert_refused(
        c.admin.create_event(req).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let req = c.req(v1::SetEventStatusRequest {
        event_id: event.clone(),
        status: v1::EventStatus::Closed as i32,
    });
    assert_refused(
        c.admin.set_event_status(req).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let mut admin_as_shop = admin.clone();
    assert_refused(
        admin_as_shop.reserve(ga(&event, "x", 1, "")).await,
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // A request over api.max_request_bytes is refused before it is decoded.
    let mut huge = ga(&event, "x", 1, "");
    huge.customer_id = "x".repeat(5 << 20);
    let status = c.reserve(huge).await.expect_err("a 5 MiB request");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );

    assert_eq!(
        state(&mut admin).await,
        before,
        "a refused request changed something"
    );
}

/// Values of 20 KB or more in every field that a refusal could name: the refusal arrives whole,
/// with its ErrorInfo, and quotes at most a short prefix of the value.
#[tokio::test]
async fn refusals_of_huge_values_quote_a_short_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.clients().await;
    let event = c.create(event_request(10, 2)).await.event_id;
    let huge = "Z".repeat(20 << 10);

    let mut cases: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
    let mut with_id = event_request(10, 1);
    with_id.event_id = huge.clone();
    let mut with_currency = event_request(10, 1);
    with_currency.currency = huge.clone();
    let mut with_tier = event_request(10, 1);
    with_tier.tiers[0].code = huge.clone();
    for (name, spec) in [
        ("event id", with_id),
        ("currency", with_currency),
        ("tier code", with_tier),
    ] {
        let req = c.req(spec);
        cases.push((name, c.admin.create_event(req).await.map(drop)));
    }
    cases.push((
        "reserve event id",
        c.reserve(ga(&huge, "x", 1, "")).await.map(drop),
    ));
    let mut tier = ga(&event, "x", 1, "");
    tier.items[0].tier_code = huge.clone();
    cases.push(("reserve tier code", c.reserve(tier).await.map(drop)));
    let mut named = ga(&event, "x", 1, "");
    named.items[0] = v1::ReserveItem {
        tier_code: "SEAT".into(),
        selection: Some(Selection::Seats(v1::SeatList {
            seats: vec![seat("A", &huge)],
        })),
    };
    cases.push(("reserve seat", c.reserve(named).await.map(drop)));
    let req = c.req(v1::GetAvailabilityRequest {
        event_id: event.clone(),
        include_seats: true,
        seats_tier_code: huge.clone(),
    });
    cases.push((
        "availability tier",
        c.availability.get_availability(req).await.map(drop),
    ));

    for (name, result) in cases {
        let status = result.expect_err(name);
        assert_ne!(status.code(), Code::Internal, "{name}: {status:?}");
        assert!(!reason(&status).is_empty(), "{name}");
        assert!(
            status.message().len() <= 512,
            "{name}: a message of {} bytes",
            status.message().len()
        );
        assert!(
            status.details().len() <= 2048,
            "{name}: details of {} bytes",
            status.details().len()
        );
        assert!(!status.message().contains(&huge[..600]), "{name}");
    }
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (10, 0, 0));
}
