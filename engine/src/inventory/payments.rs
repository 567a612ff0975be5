//! Payments: the results the payment adapter reports, the payment deadline of every order
//! pending payment, and refunds. A result is applied at most once whatever the broker redelivers:
//! the order's state says whether it was (a payment already recorded, a refund already
//! requested), so no result id needs remembering. Money that cannot pay its order (the order
//! was cancelled or paid by another payment, or the amount differs) is never turned into a paid
//! order: it becomes a refund request.

use super::spec::check_string;
use super::tickets::TicketIssuer;
use super::*;

/// The reason recorded for an order cancelled at its payment deadline.
pub const PAYMENT_TIMEOUT_REASON: &str = "no payment before the payment deadline";

impl Inventory {
    /// Decides what a payment result does to its order; see [`Settlement`].
    pub fn settle_payment(
        &mut self,
        result: &PaymentResult,
        now_ms: u64,
        limits: &Limits,
        issuer: &mut dyn TicketIssuer,
    ) -> Result<Decision<(Settlement, Order)>, Rejection> {
        check_string("payment provider", &result.provider, limits)?;
        let id = result.order_id;
        let order = self.orders.get(&id).ok_or(Rejection::OrderNotFound(id))?;
        let (settlement, record) = match &result.outcome {
            PaymentOutcome::Declined { reason } => {
                if order.status != OrderStatus::PendingPayment {
                    (Settlement::Unchanged, None)
                } else {
                    // A provider's words over the limit are cut, not refused: refusing would
                    // leave the order waiting out its deadline.
                    let limit = limits.max_string_bytes as usize;
                    let reason = match rejection::prefix(reason, limit) {
                        "" => "declined",
                        cut => cut,
                    };
                    let record = Record::OrderCancelled {
                        order_id: id,
                        cause: CancelCause::PaymentDeclined,
                        reason: reason.to_string(),
                        at_ms: now_ms,
                        key: None,
                    };
                    (Settlement::Cancelled, Some(record))
                }
            }
            PaymentOutcome::Approved {
                provider_ref,
                amount_minor,
                currency,
            } => {
                check_string("provider reference", provider_ref, limits)?;
                let this = |provider: &str, reference: &str| {
                    provider == result.provider && reference == provider_ref
                };
                let recorded = order
                    .payment
                    .as_ref()
                    .is_some_and(|p| this(&p.provider, &p.provider_ref))
                    || order.refunds_requested.iter().any(|(p, r)| this(p, r));
                if recorded {
                    (Settlement::Unchanged, None)
                } else {
                    let total = order_total(order);
                    let why = match order.status {
                        OrderStatus::PendingPayment if now_ms >= order.payment_due_at_ms => {
                            Some("the payment came after the payment deadline".to_string())
                        }
                        OrderStatus::PendingPayment
                            if *amount_minor == total && *currency == self.spec.currency =>
                        {
                            None
                        }
                        OrderStatus::PendingPayment => Some(format!(
                            "{amount_minor} {currency} taken for an order of {total} {}",
                            self.spec.currency
                        )),
                        OrderStatus::Paid => Some("the order was already paid".to_string()),
                        OrderStatus::Cancelled => Some("the order was cancelled".to_string()),
                        OrderStatus::Refunded => Some("the order was refunded".to_string()),
                    };
                    match why {
                        Some(why) => (
                            Settlement::RefundRequested,
                            Some(Record::RefundRequested {
                                order_id: id,
                                provider: result.provider.clone(),
                                provider_ref: provider_ref.clone(),
                                amount_minor: *amount_minor,
                                why,
                                at_ms: now_ms,
                            }),
                        ),
                        None => (
                            Settlement::Paid,
                            Some(Record::OrderPaid {
                                order_id: id,
                                payment: Payment {
                                    provider: result.provider.clone(),
                                    provider_ref: provider_ref.clone(),
                                    amount_minor: *amount_minor,
                                    paid_at_ms: now_ms,
                                },
                                tickets: self.issue_tickets(order, issuer),
                            }),
                        ),
                    }
                }
            }
        };
        if let Some(r) = &record {
            self.apply(r);
        }
        let answer = (settlement, self.order_view(id).expect("the order exists"));
        Ok(Decision { record, answer })
    }

    /// Decides refunding a paid order in full. Its tickets go back on sale unless the event has
    /// started; the payment adapter hears of it (`OrderRefunded`) and gives the money back.
    pub fn refund_order(
        &mut self,
        req: &RefundOrderRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Order>, Rejection> {
        check_string("refund reason", &req.reason, limits)?;
        let (keyed, first) =
            self.order_key(KeyScope::Refund, &req.idempotency_key, req, now_ms, limits)?;
        if let Some(order) = first {
            return Ok(Decision {
                record: None,
                answer: order,
            });
        }
        let order = self
            .orders
            .get(&req.order_id)
            .ok_or(Rejection::OrderNotFound(req.order_id))?;
        let (OrderStatus::Paid, Some(payment)) = (order.status, &order.payment) else {
            return Err(Rejection::OrderNotRefundable {
                order: req.order_id,
                status: order.status,
            });
        };
        let record = Record::OrderRefunded {
            order_id: req.order_id,
            amount_minor: payment.amount_minor,
            reason: req.reason.clone(),
            restock: now_ms < self.spec.starts_at_ms,
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

    /// Cancels the earliest order still unpaid at its payment deadline, if one is due by
    /// `now_ms`; called until it returns `None`.
    pub fn expire_unpaid(&mut self, now_ms: u64) -> Option<Record> {
        self.drop_stale_payment_deadlines();
        if self.payment_deadlines.first()?.0 > now_ms {
            return None;
        }
        let (_, order_id) = self
            .payment_deadlines
            .pop_first()
            .expect("a pending order is on top");
        let record = Record::OrderCancelled {
            order_id,
            cause: CancelCause::PaymentTimeout,
            reason: PAYMENT_TIMEOUT_REASON.to_string(),
            at_ms: now_ms,
            key: None,
        };
        self.apply(&record);
        Some(record)
    }

    /// The earliest payment deadline of an order pending payment.
    pub fn next_payment_due_ms(&mut self) -> Option<u64> {
        self.drop_stale_payment_deadlines();
        self.payment_deadlines.first().map(|(at, _)| at)
    }

    /// Drops entries of orders no longer pending from the top of the earliest deadline's list,
    /// and the list once empty, until a pending order is on top.
    fn drop_stale_payment_deadlines(&mut self) {
        while let Some((at, id)) = self.payment_deadlines.first() {
            if self.orders.get(&id).is_some_and(|o| {
                o.status == OrderStatus::PendingPayment && o.payment_due_at_ms == at
            }) {
                return;
            }
            self.payment_deadlines.pop_first();
        }
    }

    // ------------------------------------------------------------------------------------------
    // Applying records, called by `apply`.
    // ------------------------------------------------------------------------------------------

    /// Performs `Record::OrderPaid`: the order is paid and its tickets issued.
    pub(super) fn apply_order_paid(
        &mut self,
        order_id: OrderId,
        payment: &Payment,
        tickets: &[TicketRecord],
    ) {
        let order = self
            .orders
            .get(&order_id)
            .unwrap_or_else(|| panic!("paid order {order_id} does not exist"));
        assert_eq!(
            order.status,
            OrderStatus::PendingPayment,
            "order {order_id}"
        );
        if let Err(why) = self.check_tickets(order, tickets) {
            panic!("order {order_id} paid: {why}");
        }
        self.change_order(order_id, |order| {
            order.status = OrderStatus::Paid;
            order.updated_at_ms = payment.paid_at_ms;
            order.payment = Some(payment.clone());
            order.issued = tickets.to_vec();
        });
        self.index_tickets(order_id, tickets);
    }

    /// Performs `Record::OrderRefunded`.
    pub(super) fn apply_order_refunded(
        &mut self,
        order_id: OrderId,
        amount_minor: u64,
        restock: bool,
        at_ms: u64,
        key: Option<&KeyRecord>,
    ) {
        self.tickets_live -= self.orders[&order_id].issued.len() as u64;
        self.change_order(order_id, |order| {
            assert_eq!(order.status, OrderStatus::Paid, "refunded order {order_id}");
            order.status = OrderStatus::Refunded;
            order.updated_at_ms = at_ms;
            order.refunded_minor += amount_minor;
        });
        self.end_order(order_id, restock, (KeyScope::Refund, key), at_ms);
    }

    /// Performs `Record::RefundRequested`: the payment is remembered as one to give back.
    pub(super) fn apply_refund_requested(
        &mut self,
        order_id: OrderId,
        provider: &str,
        provider_ref: &str,
    ) {
        self.change_order(order_id, |order| {
            order
                .refunds_requested
                .push((provider.to_string(), provider_ref.to_string()));
        });
    }
}

/// What the order costs, fees included, in the event's currency (saturating, as the answer's
/// totals are: no spec limit bounds a fee).
pub(super) fn order_total(order: &OrderState) -> u64 {
    order.lines.iter().fold(0u64, |sum, l| {
        l.unit_price_minor
            .saturating_add(l.unit_fee_minor)
            .saturating_mul(u64::from(l.quantity))
            .saturating_add(sum)
    })
}
