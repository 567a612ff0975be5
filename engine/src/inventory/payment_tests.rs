//! Tests of payments, payment deadlines, refunds and issued tickets, on the pure inventory with
//! the real ticket keys (in a temporary directory). No runtime, no clock.

use super::tests::{T0, TestIssuer, confirm, counts, ga, hid, limits, oid, seat, seats_req, spec};
use super::*;
use crate::tickets::TicketKeys;

pub(super) fn issuer(dir: &tempfile::TempDir) -> TestIssuer {
    TestIssuer {
        keys: TicketKeys::open(dir.path()).unwrap(),
        next: 0,
    }
}

pub(super) fn approved(order: OrderId, reference: &str, amount_minor: u64) -> PaymentResult {
    PaymentResult {
        order_id: order,
        provider: "test".into(),
        outcome: PaymentOutcome::Approved {
            provider_ref: reference.into(),
            amount_minor,
            currency: Currency::parse("EUR").unwrap(),
        },
    }
}

fn declined(order: OrderId) -> PaymentResult {
    PaymentResult {
        order_id: order,
        provider: "test".into(),
        outcome: PaymentOutcome::Declined {
            reason: "card declined".into(),
        },
    }
}

/// An event with order `oid(1)`: 2 GA tickets (2 x 2,650) and order `oid(2)`: seats A/1/1 and
/// A/1/2 (2 x 4,200), both pending payment since `T0`; and the log that made them.
pub(super) fn two_orders() -> (Inventory, Vec<Record>) {
    two_orders_of(spec())
}

/// `two_orders` of an event made from `spec`.
pub(super) fn two_orders_of(spec: EventSpec) -> (Inventory, Vec<Record>) {
    let mut inv = Inventory::create(spec.clone(), &limits()).unwrap().0;
    let mut log = vec![Record::Created { spec }];
    let lim = limits();
    log.extend(inv.reserve(&ga("ana", 2), hid(1), T0, &lim).unwrap().record);
    let seats = vec![seat("A", "1", "1"), seat("A", "1", "2")];
    log.extend(
        inv.reserve(&seats_req("zoë", seats), hid(2), T0, &lim)
            .unwrap()
            .record,
    );
    log.extend(
        inv.confirm(&confirm(hid(1)), oid(1), T0, &lim)
            .unwrap()
            .record,
    );
    log.extend(
        inv.confirm(&confirm(hid(2)), oid(2), T0, &lim)
            .unwrap()
            .record,
    );
    (inv, log)
}

#[test]
fn an_approved_payment_pays_the_order_once_and_issues_tickets_that_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer(&dir);
    let (mut inv, _) = two_orders();
    for (order, amount, customer) in [(oid(1), 5_300, "ana"), (oid(2), 8_400, "zoë")] {
        let pay = approved(order, &format!("pay-{order}"), amount);
        let d = inv
            .settle_payment(&pay, T0 + 1_000, &limits(), &mut issuer)
            .unwrap();
        assert_eq!(d.answer.0, Settlement::Paid);
        assert!(matches!(d.record, Some(Record::OrderPaid { .. })));
        let paid = d.answer.1;
        assert_eq!(paid.status, OrderStatus::Paid);
        assert_eq!(paid.payment.as_ref().unwrap().amount_minor, amount);
        assert_eq!(paid.tickets.len(), 2);
        for ticket in &paid.tickets {
            let claims = issuer.keys.verify(&ticket.token).unwrap();
            assert_eq!(claims.ticket_id, ticket.id);
            assert_eq!(claims.event_id, spec().id);
            assert_eq!(claims.holder, customer);
            assert_eq!(claims.tier, &*ticket.tier);
            assert_eq!(claims.seat, ticket.seat);
        }
        // The same result again, as a redelivery brings it: nothing changes.
        let applied = inv.applied();
        let again = inv
            .settle_payment(&pay, T0 + 2_000, &limits(), &mut issuer)
            .unwrap();
        assert_eq!(again.answer.0, Settlement::Unchanged);
        assert!(again.record.is_none());
        assert_eq!(again.answer.1, paid);
        assert_eq!(inv.applied(), applied);
    }
    let seats: Vec<_> = inv
        .order(oid(2))
        .unwrap()
        .tickets
        .into_iter()
        .map(|t| t.seat)
        .collect();
    assert_eq!(
        seats,
        vec![Some(seat("A", "1", "1")), Some(seat("A", "1", "2"))]
    );
    assert_eq!(counts(&inv, 0), (8, 0, 2));
    inv.audit();
}

#[test]
fn a_decline_cancels_and_money_that_cannot_pay_its_order_becomes_one_refund_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer(&dir);
    let (mut inv, _) = two_orders();
    let d = inv
        .settle_payment(&declined(oid(1)), T0 + 1_000, &limits(), &mut issuer)
        .unwrap();
    assert_eq!(d.answer.0, Settlement::Cancelled);
    let order = d.answer.1;
    assert_eq!(order.status, OrderStatus::Cancelled);
    assert_eq!(
        order.cancelled,
        Some((CancelCause::PaymentDeclined, "card declined".to_string()))
    );
    assert_eq!(
        counts(&inv, 0),
        (10, 0, 0),
        "the tickets are back on sale at once"
    );
    // A second decline, and a success arriving after the cancel: never a resurrected order.
    let d = inv
        .settle_payment(&declined(oid(1)), T0 + 2_000, &limits(), &mut issuer)
        .unwrap();
    assert_eq!((d.answer.0, d.record), (Settlement::Unchanged, None));
    let late = approved(oid(1), "late-1", 5_300);
    let d = inv
        .settle_payment(&late, T0 + 3_000, &limits(), &mut issuer)
        .unwrap();
    assert_eq!(d.answer.0, Settlement::RefundRequested);
    assert!(matches!(
        &d.record,
        Some(Record::RefundRequested { why, amount_minor: 5_300, .. }) if why.contains("cancelled")
    ));
    assert_eq!(d.answer.1.status, OrderStatus::Cancelled);
    let d = inv
        .settle_payment(&late, T0 + 4_000, &limits(), &mut issuer)
        .unwrap();
    assert_eq!((d.answer.0, d.record), (Settlement::Unchanged, None));
    // The wrong amount never pays an order: it is given back and the order waits for the right one.
    let short = approved(oid(2), "short", 100);
    let d = inv
        .settle_payment(&short, T0 + 5_000, &limits(), &mut issuer)
        .unwrap();
    assert_eq!(d.answer.0, Settlement::RefundRequested);
    assert_eq!(d.answer.1.status, OrderStatus::PendingPayment);
    let right = approved(oid(2), "right", 8_400);
    let d = inv
        .settle_payment(&right, T0 + 6_000, &limits(), &mut issuer)
        .unwrap();
    assert_eq!(d.answer.0, Settlement::Paid);
    // A second, different charge of a paid order is given back too.
    let twice = approved(oid(2), "twice", 8_400);
    let d = inv
        .settle_payment(&twice, T0 + 7_000, &limits(), &mut issuer)
        .unwrap();
    assert_eq!(d.answer.0, Settlement::RefundRequested);
    assert_eq!(d.answer.1.payment.unwrap().provider_ref, "right");
    assert_eq!(
        inv.settle_payment(&approved(oid(9), "x", 1), T0, &limits(), &mut issuer)
            .unwrap_err(),
        Rejection::OrderNotFound(oid(9))
    );
    inv.audit();
}

#[test]
fn an_order_unpaid_at_its_deadline_is_cancelled_and_a_paid_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer(&dir);
    let (mut inv, _) = two_orders();
    let due = T0 + spec().payment_ttl_ms;
    assert_eq!(inv.order(oid(1)).unwrap().payment_due_at_ms, due);
    inv.settle_payment(
        &approved(oid(2), "p", 8_400),
        T0 + 1,
        &limits(),
        &mut issuer,
    )
    .unwrap();
    assert_eq!(inv.next_payment_due_ms(), Some(due));
    assert!(inv.expire_unpaid(due - 1).is_none());
    // An approval decided at the deadline, before the timer's cancel: it never pays the order.
    let d = inv
        .settle_payment(
            &approved(oid(1), "at-due", 5_300),
            due,
            &limits(),
            &mut issuer,
        )
        .unwrap();
    assert_eq!(d.answer.0, Settlement::RefundRequested);
    assert_eq!(d.answer.1.status, OrderStatus::PendingPayment);
    let record = inv.expire_unpaid(due).expect("order 1 is due");
    assert!(matches!(
        record,
        Record::OrderCancelled {
            cause: CancelCause::PaymentTimeout,
            ..
        }
    ));
    assert!(
        inv.expire_unpaid(due + 1).is_none(),
        "the paid order stays paid"
    );
    assert_eq!(inv.next_payment_due_ms(), None);
    assert_eq!(inv.order(oid(1)).unwrap().status, OrderStatus::Cancelled);
    assert_eq!(inv.order(oid(2)).unwrap().status, OrderStatus::Paid);
    assert_eq!(counts(&inv, 0), (10, 0, 0));
    // A payment arriving after the timeout is given back.
    let d = inv
        .settle_payment(
            &approved(oid(1), "late", 5_300),
            due + 5,
            &limits(),
            &mut issuer,
        )
        .unwrap();
    assert_eq!(d.answer.0, Settlement::RefundRequested);
    inv.audit();
}

#[test]
fn a_refund_voids_a_paid_order_and_restocks_only_before_the_event_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer(&dir);
    let (mut inv, _) = two_orders();
    let lim = limits();
    let refund = |order: OrderId, key: Option<&str>| RefundOrderRequest {
        order_id: order,
        reason: "customer asked".into(),
        idempotency_key: key.map(String::from),
    };
    assert_eq!(
        inv.refund_order(&refund(oid(1), None), T0, &lim)
            .unwrap_err(),
        Rejection::OrderNotRefundable {
            order: oid(1),
            status: OrderStatus::PendingPayment
        }
    );
    for (order, amount) in [(oid(1), 5_300), (oid(2), 8_400)] {
        inv.settle_payment(&approved(order, "p", amount), T0, &lim, &mut issuer)
            .unwrap();
    }
    let d = inv
        .refund_order(&refund(oid(1), Some("r1")), T0 + 10, &lim)
        .unwrap();
    assert!(matches!(
        d.record,
        Some(Record::OrderRefunded {
            amount_minor: 5_300,
            restock: true,
            ..
        })
    ));
    assert_eq!(d.answer.status, OrderStatus::Refunded);
    assert_eq!(d.answer.refunded_minor, 5_300);
    assert_eq!(counts(&inv, 0), (10, 0, 0));
    // The same key again repeats the answer; without it the order is no longer refundable.
    let again = inv
        .refund_order(&refund(oid(1), Some("r1")), T0 + 20, &lim)
        .unwrap();
    assert!(again.record.is_none());
    assert_eq!(again.answer, d.answer);
    assert!(matches!(
        inv.refund_order(&refund(oid(1), None), T0 + 20, &lim),
        Err(Rejection::OrderNotRefundable { .. })
    ));
    // Once the event has started, refunded seats stay out of sale.
    let started = spec().starts_at_ms;
    let d = inv
        .refund_order(&refund(oid(2), None), started, &lim)
        .unwrap();
    assert!(matches!(
        d.record,
        Some(Record::OrderRefunded { restock: false, .. })
    ));
    assert_eq!(counts(&inv, 1), (10, 0, 2));
    inv.audit();
}

#[test]
fn the_log_and_a_snapshot_rebuild_payments_refunds_and_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer(&dir);
    let (mut inv, mut log) = two_orders();
    let lim = limits();
    log.extend(
        inv.settle_payment(&approved(oid(2), "p2", 8_400), T0 + 1, &lim, &mut issuer)
            .unwrap()
            .record,
    );
    log.extend(
        inv.settle_payment(&approved(oid(1), "short", 1), T0 + 2, &lim, &mut issuer)
            .unwrap()
            .record,
    );
    let request = RefundOrderRequest {
        order_id: oid(2),
        reason: "moved".into(),
        idempotency_key: Some("k".into()),
    };
    log.extend(inv.refund_order(&request, T0 + 3, &lim).unwrap().record);
    log.extend(inv.expire_unpaid(T0 + spec().payment_ttl_ms));
    let mut replayed = Inventory::from_created(&log[0]);
    for r in &log[1..] {
        replayed.apply(r);
    }
    replayed.audit();
    let bytes = postcard::to_allocvec(&inv).unwrap();
    let restored = postcard::from_bytes::<Inventory>(&bytes)
        .unwrap()
        .restored();
    restored.audit();
    for other in [&replayed, &restored] {
        assert_eq!(other.summary(), inv.summary());
        for order in [oid(1), oid(2)] {
            assert_eq!(other.order(order), inv.order(order));
        }
        // What the orders own is counted the same whichever way the state was rebuilt (table
        // capacities may differ: each map draws its own hash seed, and a restored state is sized
        // to what it holds).
        assert_eq!(other.text_bytes, inv.text_bytes);
    }
    assert_eq!(inv.order(oid(2)).unwrap().tickets.len(), 2);
}
