//! Payment results on Kafka, end to end: a real tansu broker, a real `boxoffice serve` consuming
//! `boxoffice.payments.v1`, results produced by a real rdkafka producer, and the outcome read
//! back over gRPC and from the order events on `boxoffice.orders.v1`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use prost::Message as _;
use proto::v1;
use proto::v1::check_in_client::CheckInClient;
use proto::v1::order_event::Change;
use proto::v1::payment_result::Outcome;
use tonic::Code;

use crate::order_events::{Broker, dedup_in_order, reader, receive_until};
use crate::support::*;

pub(crate) const PAYMENTS: &str = "boxoffice.payments.v1";

pub(crate) async fn send(producer: &FutureProducer, event_id: &str, payload: Vec<u8>) {
    producer
        .send(
            FutureRecord::to(PAYMENTS).key(event_id).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .expect("the broker took the result");
}

pub(crate) fn approved(order: &v1::Order, reference: &str) -> Vec<u8> {
    v1::PaymentResult {
        event_id: order.event_id.clone(),
        order_id: order.order_id.clone(),
        provider: "test".into(),
        outcome: Some(Outcome::Approved(v1::PaymentApproved {
            provider_reference: reference.into(),
            amount_minor: order.total_minor,
            currency: order.currency.clone(),
        })),
    }
    .encode_to_vec()
}

fn declined(order: &v1::Order) -> Vec<u8> {
    v1::PaymentResult {
        event_id: order.event_id.clone(),
        order_id: order.order_id.clone(),
        provider: "test".into(),
        outcome: Some(Outcome::Declined(v1::PaymentDeclined {
            reason: "insufficient funds".into(),
        })),
    }
    .encode_to_vec()
}

async fn get_order(c: &mut Clients, order: &v1::Order) -> v1::Order {
    let req = c.req(v1::GetOrderRequest {
        event_id: order.event_id.clone(),
        order_id: order.order_id.clone(),
    });
    c.reservations
        .get_order(req)
        .await
        .expect("get order")
        .into_inner()
        .order
        .expect("an order")
}

/// The public ticket keys, as a scanner (the development key has every role) gets them.
async fn event_keys(server: &Server, event: &str) -> v1::GetEventKeysResponse {
    let c = server.clients().await;
    let req = c.req(v1::GetEventKeysRequest {
        event_id: event.to_string(),
    });
    CheckInClient::new(server.channel().await)
        .get_event_keys(req)
        .await
        .expect("the event's keys")
        .into_inner()
}

/// `count` orders of 2 GA tickets each, by customers buyer-0, buyer-1, ..., pending payment.
pub(crate) async fn confirmed_orders(c: &mut Clients, event: &str, count: usize) -> Vec<v1::Order> {
    let mut orders = Vec::with_capacity(count);
    for n in 0..count {
        let hold = c
            .reserve(ga(event, &format!("buyer-{n}"), 2, &format!("k{n}")))
            .await
            .unwrap();
        orders.push(
            c.confirm(event, hold.hold_id, format!("tok-{n}"))
                .await
                .unwrap(),
        );
    }
    orders
}

/// Polls the order until `done` holds, for at most 30 s.
pub(crate) async fn order_until(
    c: &mut Clients,
    order: &v1::Order,
    done: impl Fn(&v1::Order) -> bool,
) -> v1::Order {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = get_order(c, order).await;
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "order never got there: {now:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn payment_results_pay_cancel_and_refund_each_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let server = Server::start(
        &dir.path().join("data"),
        &[("BOXOFFICE_KAFKA__BROKERS", &broker.addr)],
    );
    let mut c = server.clients().await;
    let mut request = event_request(100, 4);
    request.payment_ttl_seconds = 3;
    let event = c.create(request).await.event_id;
    let orders = confirmed_orders(&mut c, &event, 3).await;
    let (paid, declined_one, unpaid) = (&orders[0], &orders[1], &orders[2]);
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (94, 0, 6));
    kafka::ensure_topic(&broker.addr, &BTreeMap::new(), PAYMENTS, 6, 1)
        .await
        .unwrap();
    let producer = kafka::producer(&broker.addr, &BTreeMap::new(), 1).unwrap();

    // A message that is no result first: it is skipped and the results behind it still apply.
    send(&producer, &event, b"\xff\xffnot a result".to_vec()).await;
    // The approval delivered five times, and a decline.
    for _ in 0..5 {
        send(&producer, &event, approved(paid, "ch_1")).await;
    }
    send(&producer, &event, declined(declined_one)).await;

    let is = |status: v1::OrderStatus| move |o: &v1::Order| o.status == status as i32;
    let paid_now = order_until(&mut c, paid, is(v1::OrderStatus::Paid)).await;
    let payment = paid_now.payment.clone().expect("a payment");
    assert_eq!(
        (
            payment.provider.as_str(),
            payment.provider_reference.as_str()
        ),
        ("test", "ch_1")
    );
    assert_eq!(payment.amount_minor, paid.total_minor);
    assert_eq!(paid_now.tickets.len(), 2, "one ticket per GA unit");
    // The tokens verify with the keys scanners are given, and bind the ticket.
    let keys: Vec<engine::tickets::PublicKey> = event_keys(&server, &event)
        .await
        .keys
        .iter()
        .map(|k| engine::tickets::PublicKey {
            key_id: k.key_id,
            key: k.public_key.as_slice().try_into().expect("32 bytes"),
        })
        .collect();
    for ticket in &paid_now.tickets {
        let claims = engine::tickets::verify_with_public_keys(&ticket.token, &keys).unwrap();
        assert_eq!(claims.ticket_id.to_string(), ticket.ticket_id);
        assert_eq!(claims.event_id.to_string(), event);
        assert_eq!(
            (claims.tier.as_str(), claims.holder.as_str()),
            ("GA", "buyer-0")
        );
        assert_eq!(claims.seat, None);
    }
    let cancelled = order_until(&mut c, declined_one, is(v1::OrderStatus::Cancelled)).await;
    assert_eq!(
        cancelled.cancel_cause,
        v1::CancelCause::PaymentDeclined as i32
    );
    assert_eq!(cancelled.cancel_reason, "insufficient funds");
    assert!(cancelled.tickets.is_empty());
    // No payment for the third: the engine's timer cancels it at its deadline.
    let timed_out = order_until(&mut c, unpaid, is(v1::OrderStatus::Cancelled)).await;
    assert_eq!(
        timed_out.cancel_cause,
        v1::CancelCause::PaymentTimeout as i32
    );
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (98, 0, 2));

    // A success arriving after the cancel never revives the order: a refund is requested.
    send(&producer, &event, approved(declined_one, "ch_late")).await;
    // An admin refunds the paid order: its tickets go back on sale (the event is in 2096).
    let refund = |key: &str| v1::RefundOrderRequest {
        event_id: event.clone(),
        order_id: paid.order_id.clone(),
        reason: "customer asked".into(),
        idempotency_key: key.into(),
    };
    let refunded = c
        .admin
        .refund_order(c.req(refund("r-1")))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(refunded.status, v1::OrderStatus::Refunded as i32);
    assert_eq!(refunded.refunded_minor, paid.total_minor);
    let again = c
        .admin
        .refund_order(c.req(refund("r-2")))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "ORDER_NOT_REFUNDABLE");
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (100, 0, 0));

    // On the order topic, after deduplication: per order exactly the changes made.
    let topic = reader(&broker, "boxoffice.orders.v1").await;
    let count_kinds = |received: &[crate::order_events::Received]| {
        let mut kinds: HashMap<(String, &'static str), u32> = HashMap::new();
        for events in dedup_in_order(received).values() {
            for e in events {
                let (order, kind) = match e.change.as_ref().unwrap() {
                    Change::OrderConfirmed(x) => (x.order.as_ref(), "confirmed"),
                    Change::OrderPaid(x) => (x.order.as_ref(), "paid"),
                    Change::OrderCancelled(x) => (x.order.as_ref(), "cancelled"),
                    Change::OrderRefunded(x) => (x.order.as_ref(), "refunded"),
                    Change::RefundRequested(x) => (x.order.as_ref(), "refund requested"),
                    _ => continue,
                };
                *kinds
                    .entry((order.unwrap().order_id.clone(), kind))
                    .or_default() += 1;
            }
        }
        kinds
    };
    let expected: HashMap<(String, &'static str), u32> = [
        (paid, "confirmed"),
        (paid, "paid"),
        (paid, "refunded"),
        (declined_one, "confirmed"),
        (declined_one, "cancelled"),
        (declined_one, "refund requested"),
        (unpaid, "confirmed"),
        (unpaid, "cancelled"),
    ]
    .into_iter()
    .map(|(o, k)| ((o.order_id.clone(), k), 1))
    .collect();
    // Every change once; a duplicate delivery of one would have been deduplicated by its id.
    let received = receive_until(&topic, Duration::from_secs(60), |got| {
        count_kinds(got) == expected
    })
    .await;
    let events = dedup_in_order(&received);
    let published_paid = events
        .values()
        .flatten()
        .find_map(|e| match e.change.as_ref().unwrap() {
            Change::OrderPaid(x) => x.order.clone(),
            _ => None,
        })
        .unwrap();
    assert_eq!(published_paid.tickets, paid_now.tickets);
    let text = server.metrics_text().await;
    for line in [
        "boxoffice_payment_results_total{outcome=\"paid\"} 1",
        "boxoffice_payment_results_total{outcome=\"unchanged\"} 4",
        "boxoffice_payment_results_total{outcome=\"cancelled\"} 1",
        "boxoffice_payment_results_total{outcome=\"refund_requested\"} 1",
        "boxoffice_payment_results_total{outcome=\"invalid\"} 1",
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
}

#[tokio::test]
async fn a_rotated_ticket_key_is_served_beside_the_old_one_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    let mut c = server.clients().await;
    let event = c.create(event_request(10, 1)).await.event_id;
    let before = event_keys(&server, &event).await;
    assert_eq!(before.active_key_id, 1);
    assert_eq!(before.keys.len(), 1);
    assert_eq!(before.keys[0].public_key.len(), 32);
    server.stop(Duration::from_secs(10)).await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .arg("rotate-ticket-key")
        .env("BOXOFFICE_CONFIG", data.with_extension("toml"))
        .env("BOXOFFICE_STORAGE__DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.starts_with("ticket key 2 written to "), "{said}");

    server.restart();
    let after = event_keys(&server, &event).await;
    assert_eq!(after.active_key_id, 2);
    assert_eq!(after.keys.len(), 2);
    assert_eq!(after.keys[0], before.keys[0], "the old key still verifies");
    assert_ne!(after.keys[1].public_key, before.keys[0].public_key);
}

#[tokio::test]
async fn payment_results_apply_once_across_an_engine_killed_while_consuming_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let mut server = Server::start(
        &dir.path().join("data"),
        &[("BOXOFFICE_KAFKA__BROKERS", &broker.addr)],
    );
    let mut c = server.clients().await;
    let event = c.create(event_request(500, 4)).await.event_id;
    let orders = confirmed_orders(&mut c, &event, 60).await;
    kafka::ensure_topic(&broker.addr, &BTreeMap::new(), PAYMENTS, 6, 1)
        .await
        .unwrap();
    let producer = kafka::producer(&broker.addr, &BTreeMap::new(), 1).unwrap();
    // Every approval twice, then the engine killed at a random moment while it takes them.
    for order in orders.iter().chain(&orders) {
        send(
            &producer,
            &event,
            approved(order, &format!("ch-{}", order.order_id)),
        )
        .await;
    }
    let seed = fastrand::u64(..);
    let after = Duration::from_millis(fastrand::Rng::with_seed(seed).u64(0..400));
    eprintln!("seed {seed}: boxoffice killed {after:?} after the results were produced");
    tokio::time::sleep(after).await;
    server.kill();
    server.restart();
    let mut c = server.clients().await;
    let mut tickets = HashMap::new();
    for order in &orders {
        let paid = order_until(&mut c, order, |o| o.status == v1::OrderStatus::Paid as i32).await;
        assert_eq!(paid.tickets.len(), 2);
        tickets.insert(paid.order_id.clone(), paid.tickets);
    }
    // One OrderPaid per order after deduplication by id, with the tickets GetOrder shows: a
    // result applied twice would have made a second one, with other tickets.
    let topic = reader(&broker, "boxoffice.orders.v1").await;
    let paid_events = |got: &[crate::order_events::Received]| {
        let mut paid: HashMap<String, Vec<Vec<v1::Ticket>>> = HashMap::new();
        for e in dedup_in_order(got).values().flatten() {
            if let Some(Change::OrderPaid(p)) = &e.change {
                let order = p.order.clone().unwrap();
                paid.entry(order.order_id).or_default().push(order.tickets);
            }
        }
        paid
    };
    // Every result, the repeats too, is taken once the engine's group has committed past it: a
    // result applied twice has written its order event by then.
    every_result_committed(&broker, "boxoffice-engine").await;
    // Everything the engine will publish is on the topic once its outbox is empty: read it all.
    // The gauge is sampled every 100 ms; one taken before the last results were applied could
    // still say 0.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.metric("boxoffice_outbox_pending_entries").await != 0.0 {
        assert!(Instant::now() < deadline, "the outbox never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let on_topic: i64 = {
        use kafka::rdkafka::consumer::Consumer;
        (0..6)
            .map(|p| {
                let (low, high) = topic
                    .fetch_watermarks("boxoffice.orders.v1", p, Duration::from_secs(10))
                    .unwrap();
                high - low
            })
            .sum()
    };
    let received = receive_until(&topic, Duration::from_secs(60), |got| {
        got.len() as i64 == on_topic
    })
    .await;
    let changes: usize = dedup_in_order(&received).values().map(Vec::len).sum();
    assert_eq!(
        changes,
        1 + 2 * orders.len(),
        "created, then per order confirmed and paid once"
    );
    assert_eq!(paid_events(&received).len(), orders.len());
    for (order, issued) in paid_events(&received) {
        assert_eq!(
            issued.len(),
            1,
            "order {order} paid {} times (seed {seed})",
            issued.len()
        );
        assert_eq!(issued[0], tickets[&order], "seed {seed}");
    }
}

/// Waits until `group` has committed offsets at the end of every partition of the payments topic.
async fn every_result_committed(broker: &Broker, group: &str) {
    use kafka::rdkafka::consumer::Consumer;
    use kafka::rdkafka::{Offset, TopicPartitionList};
    // A consumer that never subscribes does not join the group; it only reads its offsets.
    let consumer = kafka::consumer(&broker.addr, group, &BTreeMap::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let partitions =
            kafka::partition_count(&consumer, PAYMENTS, Duration::from_secs(5)).unwrap() as i32;
        let mut list = TopicPartitionList::new();
        for p in 0..partitions {
            list.add_partition(PAYMENTS, p);
        }
        let committed = consumer
            .committed_offsets(list, Duration::from_secs(5))
            .unwrap();
        let behind: i64 = (0..partitions)
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(PAYMENTS, p, Duration::from_secs(5))
                    .unwrap();
                match committed.find_partition(PAYMENTS, p).map(|e| e.offset()) {
                    Some(Offset::Offset(at)) => high - at,
                    _ => high,
                }
            })
            .sum();
        if behind == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{behind} payment results still not committed by {group}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
