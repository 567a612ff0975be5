//! What recovery checks before it trusts a record read back from the log: that `apply` can
//! perform it on the state at hand without breaking an invariant (`check_record`), and that a log
//! starts with a `Created` whose spec lays out (`check_created`). A record that passed its crc
//! can still be impossible (a log written by a bug, or bytes that happen to decode): recovery
//! refuses it, naming the event and the lsn, where `apply`, which trusts records, would panic.
//! The checks mirror `apply`'s assertions one for one; a change to an `apply_*` arm changes its
//! check here. Snapshots are checked whole, by `check_state`.

use super::*;

impl Inventory {
    /// Whether `record` can start an event's log: a `Created` whose tiers and seats can be
    /// indexed as the inventory indexes them (tiers by `u16`, seats by `u32`).
    pub fn check_created(record: &Record) -> Result<(), String> {
        let Record::Created { spec } = record else {
            return Err(format!(
                "the log starts with {}, not Created",
                record.kind()
            ));
        };
        ensure!(
            spec.tiers.len() <= usize::from(u16::MAX) + 1,
            "{} tiers",
            spec.tiers.len()
        );
        let seats: u64 = spec
            .tiers
            .iter()
            .map(|t| match &t.stock {
                Stock::General { .. } => 0,
                Stock::Seated { sections } => sections
                    .iter()
                    .flat_map(|s| &s.rows)
                    .map(|r| r.seats.len() as u64)
                    .sum(),
            })
            .sum();
        ensure!(seats <= u64::from(u32::MAX), "{seats} seats");
        Ok(())
    }

    /// Whether `apply` can perform `record` on this state, which passes `check_state`, and leave
    /// a state that passes it too. `Err` says why not.
    pub fn check_record(&self, record: &Record) -> Result<(), String> {
        ensure!(
            self.applied < u64::MAX && self.outbox_seq < u64::MAX,
            "the event has applied {} records",
            self.applied
        );
        match record {
            Record::Created { .. } => Err("Created past the start of the log".into()),
            Record::StatusChanged { .. } => Ok(()),
            Record::HoldPlaced {
                hold_id,
                customer,
                lines,
                ..
            } => self.check_hold_placed(*hold_id, customer, lines),
            Record::HoldReleased { hold_id, .. } => self.check_live_hold(*hold_id),
            Record::HoldsExpired { hold_ids, .. } => {
                let mut ended = HashSet::default();
                for id in hold_ids {
                    self.check_live_hold(*id)?;
                    ensure!(ended.insert(*id), "hold {id} expires twice");
                }
                Ok(())
            }
            Record::HoldConfirmed {
                hold_id,
                order_id,
                lines,
                ..
            } => {
                self.check_live_hold(*hold_id)?;
                ensure!(
                    self.orders.get(order_id).is_none(),
                    "order {order_id} exists already"
                );
                let held = &self.holds[hold_id].lines;
                ensure!(
                    lines.len() == held.len()
                        && lines.iter().zip(held).all(|(l, h)| {
                            (l.tier, l.quantity, &l.seats) == (h.tier, h.quantity, &h.seats)
                        }),
                    "order {order_id}'s lines differ from hold {hold_id}'s"
                );
                Ok(())
            }
            Record::OrderCancelled { order_id, .. } => {
                let order = self.order_state(*order_id)?;
                ensure!(
                    order.status == OrderStatus::PendingPayment && order.holds_stock,
                    "order {order_id} is {:?}, cannot be cancelled",
                    order.status
                );
                Ok(())
            }
            Record::OrderPaid {
                order_id, tickets, ..
            } => {
                let order = self.order_state(*order_id)?;
                ensure!(
                    order.status == OrderStatus::PendingPayment,
                    "order {order_id} is {:?}, cannot be paid",
                    order.status
                );
                self.check_tickets(order, tickets)
                    .map_err(|e| format!("order {order_id}: {e}"))?;
                let mut issued = HashSet::default();
                for t in tickets {
                    ensure!(
                        self.ticket_index.get(&t.id).is_none() && issued.insert(t.id),
                        "ticket {} issued twice",
                        t.id
                    );
                }
                Ok(())
            }
            Record::OrderRefunded {
                order_id,
                amount_minor,
                restock,
                ..
            } => {
                let order = self.order_state(*order_id)?;
                ensure!(
                    order.status == OrderStatus::Paid,
                    "order {order_id} is {:?}, cannot be refunded",
                    order.status
                );
                ensure!(
                    !restock || order.holds_stock,
                    "order {order_id} gives its stock back twice"
                );
                ensure!(
                    order.refunded_minor.checked_add(*amount_minor).is_some(),
                    "order {order_id} refunded past u64"
                );
                Ok(())
            }
            Record::RefundRequested { order_id, .. } => self.order_state(*order_id).map(|_| ()),
            Record::ScansRecorded { scans } => self.check_scans(scans),
        }
    }

    fn check_live_hold(&self, id: HoldId) -> Result<(), String> {
        ensure!(self.holds.get(&id).is_some(), "hold {id} is not live");
        Ok(())
    }

    fn order_state(&self, id: OrderId) -> Result<&OrderState, String> {
        self.orders
            .get(&id)
            .ok_or_else(|| format!("order {id} does not exist"))
    }

    /// `apply_hold_placed`'s conditions: a new hold id, lines inside the event (`check_lines`),
    /// stock available for all of them, every seat free, counts that fit.
    fn check_hold_placed(
        &self,
        id: HoldId,
        customer: &str,
        lines: &[LineRecord],
    ) -> Result<(), String> {
        ensure!(self.holds.get(&id).is_none(), "hold {id} is live already");
        ensure!(
            self.order_of_hold.get(&id).is_none(),
            "hold {id} was confirmed already"
        );
        let tickets = self
            .check_lines(lines)
            .map_err(|e| format!("hold {id}: {e}"))?;
        let mut wanted = vec![0u64; self.tiers.len()];
        for line in lines {
            wanted[usize::from(line.tier)] += u64::from(line.quantity);
            for &s in &line.seats {
                ensure!(
                    self.owners[s as usize] == Owner::Free,
                    "hold {id} takes seat {}, which is not free",
                    self.seats[s as usize].label
                );
            }
        }
        for (i, (tier, wanted)) in self.tiers.iter().zip(wanted).enumerate() {
            ensure!(
                wanted <= u64::from(tier.available),
                "hold {id} takes {wanted} of tier {i} with {} available",
                tier.available
            );
        }
        let (kept_tickets, kept_holds) = self
            .customers
            .get(customer)
            .map_or((0, 0), |t| (u64::from(t.tickets), u64::from(t.open_holds)));
        ensure!(
            kept_tickets + tickets <= u64::from(u32::MAX) && kept_holds < u64::from(u32::MAX),
            "customer {customer}'s tally overflows"
        );
        Ok(())
    }
}

impl Record {
    /// The record's kind, for errors: never its contents, which may be long.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Created { .. } => "Created",
            Record::StatusChanged { .. } => "StatusChanged",
            Record::HoldPlaced { .. } => "HoldPlaced",
            Record::HoldReleased { .. } => "HoldReleased",
            Record::HoldsExpired { .. } => "HoldsExpired",
            Record::HoldConfirmed { .. } => "HoldConfirmed",
            Record::OrderCancelled { .. } => "OrderCancelled",
            Record::OrderPaid { .. } => "OrderPaid",
            Record::OrderRefunded { .. } => "OrderRefunded",
            Record::RefundRequested { .. } => "RefundRequested",
            Record::ScansRecorded { .. } => "ScansRecorded",
        }
    }
}
