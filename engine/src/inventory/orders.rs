//! Orders: confirming a live hold into an order pending payment, cancelling an order, giving an
//! order's tickets back to sale, and the lookups of orders. Payments and refunds are in
//! `payments.rs`, the tickets a paid order issues in `tickets.rs`.

use super::spec::check_string;
use super::*;

impl Inventory {
    /// Decides turning a live hold into an order pending payment, at today's prices.
    pub fn confirm(
        &mut self,
        req: &ConfirmRequest,
        order_id: OrderId,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Order>, Rejection> {
        check_string("payment reference", &req.payment_ref, limits)?;
        if let Some(contact) = &req.contact {
            super::spec::check_contact(contact)?;
        }
        let (keyed, first) =
            self.order_key(KeyScope::Confirm, &req.idempotency_key, req, now_ms, limits)?;
        if let Some(order) = first {
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
            payment_due_at_ms: now_ms.saturating_add(self.spec.payment_ttl_ms),
            key: keyed.map(|k| k.record),
            contact: req.contact.clone().map(Box::new),
        };
        self.apply(&record);
        let answer = self.order_view(order_id).expect("the order was just made");
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
        let (keyed, first) =
            self.order_key(KeyScope::Cancel, &req.idempotency_key, req, now_ms, limits)?;
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
        if order.status != OrderStatus::PendingPayment {
            return Err(Rejection::OrderNotCancellable {
                order: req.order_id,
                status: order.status,
            });
        }
        let record = Record::OrderCancelled {
            order_id: req.order_id,
            cause: CancelCause::Requested,
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

    pub fn order(&self, id: OrderId) -> Result<Order, Rejection> {
        self.order_view(id).ok_or(Rejection::OrderNotFound(id))
    }

    /// Every order with its hold and status, for audits.
    pub fn order_list(&self) -> Vec<(OrderId, HoldId, OrderStatus)> {
        self.orders
            .iter()
            .map(|(id, o)| (*id, o.hold_id, o.status))
            .collect()
    }

    /// An order as the answer describes it, with its totals.
    pub(super) fn order_view(&self, id: OrderId) -> Option<Order> {
        let o = self.orders.get(&id)?;
        let sum = |unit: fn(&LineRecord) -> u64| {
            o.lines.iter().fold(0u64, |sum, l| {
                unit(l)
                    .saturating_mul(u64::from(l.quantity))
                    .saturating_add(sum)
            })
        };
        let subtotal_minor = sum(|l| l.unit_price_minor);
        let fees_minor = sum(|l| l.unit_fee_minor);
        Some(Order {
            id,
            event_id: self.spec.id,
            hold_id: o.hold_id,
            customer: o.customer.clone(),
            lines: self.lines_view(&o.lines),
            currency: self.spec.currency,
            subtotal_minor,
            fees_minor,
            total_minor: subtotal_minor.saturating_add(fees_minor),
            payment_ref: o.payment_ref.clone(),
            status: o.status,
            created_at_ms: o.created_at_ms,
            updated_at_ms: o.updated_at_ms,
            payment_due_at_ms: o.payment_due_at_ms,
            payment: o.payment.clone(),
            tickets: self.tickets_view(o),
            cancelled: o.cancelled.clone(),
            refunded_minor: o.refunded_minor,
            contact: o.contact.clone(),
        })
    }

    // ------------------------------------------------------------------------------------------
    // Applying records, called by `apply`.
    // ------------------------------------------------------------------------------------------

    /// Performs `Record::HoldConfirmed`: the hold ends and its seats are sold to the new order.
    pub(super) fn apply_hold_confirmed(
        &mut self,
        hold_id: HoldId,
        order_id: OrderId,
        (payment_ref, contact): (&str, Option<&Contact>),
        lines: &[LineRecord],
        (at_ms, payment_due_at_ms): (u64, u64),
        key: Option<&KeyRecord>,
    ) {
        let hold = self
            .holds
            .remove(&hold_id)
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
                    Owner::Held(hold_id),
                    "seat {s} not held by {hold_id}"
                );
                self.owners[s as usize] = Owner::Sold(order_id);
            }
        }
        let tally = self
            .customers
            .get_mut(&hold.customer)
            .expect("holder has a tally");
        tally.open_holds -= 1;
        let previous = self.orders.insert(
            order_id,
            OrderState {
                hold_id,
                customer: hold.customer,
                lines: lines.to_vec(),
                tickets: hold.tickets,
                payment_ref: payment_ref.to_string(),
                contact: contact.map(|c| Box::new(c.clone())),
                status: OrderStatus::PendingPayment,
                created_at_ms: at_ms,
                updated_at_ms: at_ms,
                payment_due_at_ms,
                payment: None,
                issued: Vec::new(),
                cancelled: None,
                refunded_minor: 0,
                holds_stock: true,
                refunds_requested: Vec::new(),
            },
        );
        assert!(previous.is_none(), "order {order_id} made twice");
        // The customer id moved from the hold with its bytes; the contact is new.
        self.text_bytes += contact_text(&self.orders[&order_id]);
        self.payment_deadlines.push(payment_due_at_ms, order_id);
        self.note_end(hold_id, HoldEnd::Confirmed(order_id), at_ms);
        if let Some(k) = key {
            let order = self.order_view(order_id).expect("just inserted");
            self.remember(
                KeyScope::Confirm,
                "",
                k,
                at_ms,
                Answer::Order(Box::new(order)),
            );
        }
        self.assert_tiers(lines);
    }

    /// Performs `Record::OrderCancelled`: the order's seats and tickets go back on sale.
    pub(super) fn apply_order_cancelled(
        &mut self,
        order_id: OrderId,
        cause: CancelCause,
        reason: &str,
        at_ms: u64,
        key: Option<&KeyRecord>,
    ) {
        self.change_order(order_id, |order| {
            assert_eq!(order.status, OrderStatus::PendingPayment);
            order.status = OrderStatus::Cancelled;
            order.updated_at_ms = at_ms;
            order.cancelled = Some((cause, reason.to_string()));
        });
        self.end_order(order_id, true, (KeyScope::Cancel, key), at_ms);
    }

    /// The end of an order just cancelled or refunded: its stock back on sale if `restock`, its
    /// tickets off its customer's tally, the client key's answer remembered.
    pub(super) fn end_order(
        &mut self,
        order_id: OrderId,
        restock: bool,
        (scope, key): (KeyScope, Option<&KeyRecord>),
        at_ms: u64,
    ) {
        if restock {
            self.return_stock(order_id);
        }
        let order = &self.orders[&order_id];
        let (customer, tickets) = (order.customer.clone(), order.tickets);
        self.untally(&customer, tickets, 0);
        if let Some(k) = key {
            let order = self.order_view(order_id).expect("exists");
            self.remember(scope, "", k, at_ms, Answer::Order(Box::new(order)));
        }
    }

    /// Changes an order through `change`, keeping `text_bytes` in step with what it owns.
    pub(super) fn change_order<R>(
        &mut self,
        id: OrderId,
        change: impl FnOnce(&mut OrderState) -> R,
    ) -> R {
        let order = self
            .orders
            .get_mut(&id)
            .unwrap_or_else(|| panic!("order {id} does not exist"));
        let before = order_text(order);
        let result = change(order);
        let after = order_text(order);
        self.text_bytes = self.text_bytes - before + after;
        result
    }

    /// Puts an order's seats and tickets back on sale; it no longer holds stock.
    pub(super) fn return_stock(&mut self, order_id: OrderId) {
        let order = self.orders.get_mut(&order_id).expect("the order exists");
        assert!(
            order.holds_stock,
            "order {order_id} gave its stock back twice"
        );
        order.holds_stock = false;
        let lines = order.lines.clone();
        for line in &lines {
            let tier = &mut self.tiers[line.tier as usize];
            assert!(tier.sold >= line.quantity);
            tier.sold -= line.quantity;
            tier.available += line.quantity;
            for &s in &line.seats {
                assert_eq!(self.owners[s as usize], Owner::Sold(order_id));
                self.owners[s as usize] = Owner::Free;
                tier.rows[self.seats[s as usize].row as usize].free += 1;
            }
        }
        self.assert_tiers(&lines);
    }
}

/// Heap bytes an order owns besides its lines, for `memory_bytes`: its share of the customer id,
/// the cancel reason, the payment's strings, the issued tickets and their tokens.
pub(super) fn order_text(o: &OrderState) -> u64 {
    let payment = o.payment.as_ref().map_or(0, |p| {
        footprint::heap(p.provider.len()) + footprint::heap(p.provider_ref.len())
    });
    let cancelled = o
        .cancelled
        .as_ref()
        .map_or(0, |(_, r)| footprint::heap(r.len()));
    let issued: u64 = o
        .issued
        .iter()
        .map(|t| std::mem::size_of::<TicketRecord>() as u64 + footprint::heap(t.token.len()))
        .sum();
    let refunds: u64 = o
        .refunds_requested
        .iter()
        .map(|(p, r)| {
            2 * std::mem::size_of::<String>() as u64
                + footprint::heap(p.len())
                + footprint::heap(r.len())
        })
        .sum();
    shared_text(&o.customer) + payment + cancelled + issued + refunds + contact_text(o)
}

/// Heap bytes of an order's contact, if it has one.
fn contact_text(o: &OrderState) -> u64 {
    o.contact.as_ref().map_or(0, |c| {
        std::mem::size_of::<Contact>() as u64
            + footprint::heap(c.email.len())
            + footprint::heap(c.name.len())
            + footprint::heap(c.language.len())
    })
}
