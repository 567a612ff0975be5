//! The whole life of an event through a real client: create, reserve in all three ways, confirm,
//! release, cancel, availability, a watcher that sees each change, metrics, and a restart.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proto::v1;
use proto::v1::reserve_item::Selection;

use crate::support::*;

/// Reads the watch stream until it shows `expected` counts for `tier` (newer messages replace
/// older ones, so intermediate states may be skipped, never the last one).
async fn watch_until(
    watch: &mut tonic::Streaming<v1::WatchAvailabilityResponse>,
    tier: &str,
    expected: (u32, u32, u32),
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(remaining, watch.next())
            .await
            .unwrap_or_else(|_| panic!("the watcher never saw {tier} at {expected:?}"))
            .expect("the watch stream ended")
            .expect("watch message");
        if counts(&message.tiers, tier) == expected {
            return message.version;
        }
    }
}

#[tokio::test]
async fn an_event_from_creation_to_cancelled_order_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.clients().await;

    let event = c.create(event_request(100, 10)).await;
    let id = event.event_id.clone();
    assert_eq!(event.status, v1::EventStatus::OnSale as i32);
    assert_eq!(event.tiers.len(), 2);

    let req = c.req(v1::WatchAvailabilityRequest {
        event_id: id.clone(),
    });
    let mut watch = c
        .availability
        .watch_availability(req)
        .await
        .expect("watch")
        .into_inner();
    let v0 = watch_until(&mut watch, "GA", (100, 0, 0)).await;

    // General admission.
    let hold_ga = c
        .reserve(ga(&id, "alice", 3, "k-ga"))
        .await
        .expect("reserve GA");
    assert_eq!(hold_ga.lines[0].quantity, 3);
    assert_eq!(hold_ga.lines[0].unit_price_minor, 5_000);
    assert_eq!(hold_ga.subtotal_minor, 15_000);
    assert_eq!(hold_ga.fees_minor, 750);
    assert_eq!(hold_ga.total_minor, 15_750);
    let created = hold_ga.created_at.unwrap().seconds;
    let expires = hold_ga.expires_at.unwrap().seconds;
    assert!(
        (599..=601).contains(&(expires - created)),
        "{created} {expires}"
    );
    let v1_ = watch_until(&mut watch, "GA", (97, 3, 0)).await;
    assert!(v1_ > v0);

    // Named seats.
    let named = v1::ReserveRequest {
        event_id: id.clone(),
        customer_id: "bob".into(),
        items: vec![v1::ReserveItem {
            tier_code: "SEAT".into(),
            selection: Some(Selection::Seats(v1::SeatList {
                seats: vec![seat("A", "4"), seat("A", "5")],
            })),
        }],
        hold_ttl_seconds: Some(120),
        idempotency_key: "k-named".into(),
    };
    let hold_named = c.reserve(named).await.expect("reserve named seats");
    assert_eq!(
        hold_named.lines[0].seats,
        vec![seat("A", "4"), seat("A", "5")]
    );
    let ttl = hold_named.expires_at.unwrap().seconds - hold_named.created_at.unwrap().seconds;
    assert!((119..=121).contains(&ttl), "{ttl}");

    // Best available: row A has 4 and 5 taken, so 4 together are 6..9 or 1..3 is too short;
    // they must be side by side in one row and none of them taken.
    let best = v1::ReserveRequest {
        event_id: id.clone(),
        customer_id: "carol".into(),
        items: vec![v1::ReserveItem {
            tier_code: "SEAT".into(),
            selection: Some(Selection::BestAvailable(4)),
        }],
        hold_ttl_seconds: None,
        idempotency_key: String::new(),
    };
    let hold_best = c.reserve(best).await.expect("reserve best available");
    let seats = &hold_best.lines[0].seats;
    assert_eq!(seats.len(), 4);
    assert!(seats.iter().all(|s| s.row == seats[0].row));
    let mut numbers: Vec<u32> = seats.iter().map(|s| s.number.parse().unwrap()).collect();
    numbers.sort();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    assert!(!seats.contains(&seat("A", "4")) && !seats.contains(&seat("A", "5")));
    watch_until(&mut watch, "SEAT", (14, 6, 0)).await;

    // Seat states on request.
    let req = c.req(v1::GetAvailabilityRequest {
        event_id: id.clone(),
        include_seats: true,
        seats_tier_code: "SEAT".into(),
    });
    let full = c
        .availability
        .get_availability(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.seats.len(), 20);
    let a4 = full
        .seats
        .iter()
        .find(|s| s.seat.as_ref() == Some(&seat("A", "4")))
        .unwrap();
    assert_eq!(a4.state, v1::SeatState::Held as i32);

    // Confirm the GA hold into an order.
    let req = c.req(v1::ConfirmRequest {
        event_id: id.clone(),
        hold_id: hold_ga.hold_id.clone(),
        payment: Some(v1::Payment {
            reference: "pay-123".into(),
        }),
        idempotency_key: "k-confirm".into(),
        contact: Some(v1::Contact {
            email: "joana@example.com".into(),
            name: "Joana Gonçalves".into(),
            language: "pt-BR".into(),
        }),
    });
    let order = c
        .reservations
        .confirm(req)
        .await
        .expect("confirm")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.status, v1::OrderStatus::PendingPayment as i32);
    assert_eq!(order.hold_id, hold_ga.hold_id);
    assert_eq!(order.total_minor, 15_750);
    assert_eq!(order.payment_reference, "pay-123");
    let contact = order
        .contact
        .as_ref()
        .expect("the contact is carried to the order");
    assert_eq!(
        (
            contact.email.as_str(),
            contact.name.as_str(),
            contact.language.as_str()
        ),
        ("joana@example.com", "Joana Gonçalves", "pt-BR")
    );
    watch_until(&mut watch, "GA", (97, 0, 3)).await;

    // Release the named seats.
    let req = c.req(v1::ReleaseRequest {
        event_id: id.clone(),
        hold_id: hold_named.hold_id.clone(),
        idempotency_key: String::new(),
    });
    c.reservations.release(req).await.expect("release");
    watch_until(&mut watch, "SEAT", (16, 4, 0)).await;
    let req = c.req(v1::GetHoldRequest {
        event_id: id.clone(),
        hold_id: hold_named.hold_id.clone(),
    });
    assert_refused(
        c.reservations.get_hold(req).await,
        tonic::Code::FailedPrecondition,
        "HOLD_RELEASED",
    );

    // Cancel the order: its tickets go back on sale.
    let req = c.req(v1::CancelOrderRequest {
        event_id: id.clone(),
        order_id: order.order_id.clone(),
        reason: "customer asked".into(),
        idempotency_key: String::new(),
    });
    let cancelled = c
        .reservations
        .cancel_order(req)
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(
        cancelled.order.unwrap().status,
        v1::OrderStatus::Cancelled as i32
    );
    watch_until(&mut watch, "GA", (100, 0, 0)).await;

    // The best-available hold is still live, and readable.
    let req = c.req(v1::GetHoldRequest {
        event_id: id.clone(),
        hold_id: hold_best.hold_id.clone(),
    });
    let again = c
        .reservations
        .get_hold(req)
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();
    assert_eq!(again, hold_best);

    // Admin views.
    let req = c.req(v1::GetEventRequest {
        event_id: id.clone(),
    });
    let got = c.admin.get_event(req).await.unwrap().into_inner();
    assert_eq!(got.event.as_ref().unwrap().tiers, event.tiers);
    assert_eq!(got.event.as_ref().unwrap().time_zone, "Europe/Lisbon");
    assert_eq!(got.summary.as_ref().unwrap().orders, 1);
    assert_eq!(got.summary.as_ref().unwrap().open_holds, 1);
    let req = c.req(v1::ListEventsRequest::default());
    let listed = c.admin.list_events(req).await.unwrap().into_inner();
    assert_eq!(listed.events.len(), 1);
    assert!(listed.next_page_token.is_empty());

    // Metrics saw the calls and the counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = server.metrics_text().await;
        let reserve_ok =
            text.contains(r#"boxoffice_rpc_requests_total{rpc="Reserve",outcome="OK"} 3"#);
        let seats_held = text.contains(&format!(
            r#"boxoffice_tier_tickets{{event_id="{id}",tier="SEAT",state="held"}} 4"#
        ));
        if reserve_ok && seats_held && text.contains("boxoffice_log_flush_duration_seconds_bucket")
        {
            assert!(text.contains("boxoffice_rpc_duration_seconds_bucket"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the calls:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A graceful stop ends the watch stream; a new process has everything.
    server.stop(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(_))) => assert!(Instant::now() < deadline),
            Err(_) => panic!("the watch stream did not end at shutdown"),
        }
    }
    server.restart();
    let mut c = server.clients().await;
    let tiers = c.tiers(&id).await;
    assert_eq!(counts(&tiers, "GA"), (100, 0, 0));
    assert_eq!(counts(&tiers, "SEAT"), (16, 4, 0));
    let req = c.req(v1::GetOrderRequest {
        event_id: id.clone(),
        order_id: order.order_id.clone(),
    });
    let order_after = c
        .reservations
        .get_order(req)
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order_after.status, v1::OrderStatus::Cancelled as i32);
    assert_eq!(order_after.total_minor, 15_750);
    let req = c.req(v1::GetHoldRequest {
        event_id: id.clone(),
        hold_id: hold_best.hold_id.clone(),
    });
    assert_eq!(
        c.reservations
            .get_hold(req)
            .await
            .unwrap()
            .into_inner()
            .hold
            .unwrap(),
        hold_best
    );
    server.stop(Duration::from_secs(30)).await;
}
