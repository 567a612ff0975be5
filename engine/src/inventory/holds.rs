//! Holds: reserving tickets and seats, releasing them, deadlines and expiry, the lookup of a live
//! hold, and the per-customer tallies of tickets and open holds that bound new reservations.

use super::keys::keyed;
use super::*;

/// What one reserve item asks for, once its tier and seats are resolved.
enum Ask {
    Count(u32),
    Named(Vec<u32>),
    Best(u32),
}

impl Inventory {
    // ------------------------------------------------------------------------------------------
    // Commands: decide, then apply the record they produce.
    // ------------------------------------------------------------------------------------------

    /// Decides a reservation. `hold_id` is the id the new hold gets; `now_ms` is the decision time.
    pub fn reserve(
        &mut self,
        req: &ReserveRequest,
        hold_id: HoldId,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Hold>, Rejection> {
        let (keyed, repeated) = self.reserve_key(req, now_ms, limits)?;
        if let Some(hold) = repeated {
            return Ok(Decision {
                record: None,
                answer: hold,
            });
        }
        if req.items.is_empty() {
            return Err(Rejection::Invalid(
                "a reservation needs at least one item".into(),
            ));
        }
        if req.items.len() > limits.max_items_per_request as usize {
            return Err(Rejection::Invalid(format!(
                "{} items, over the limit of {} per request",
                req.items.len(),
                limits.max_items_per_request
            )));
        }
        let ttl_ms = req.hold_ttl_ms.unwrap_or(self.spec.hold_ttl_ms);
        if !(limits.min_hold_ttl_ms..=limits.max_hold_ttl_ms).contains(&ttl_ms) {
            return Err(Rejection::HoldTtlOutOfRange {
                requested_ms: ttl_ms,
                min_ms: limits.min_hold_ttl_ms,
                max_ms: limits.max_hold_ttl_ms,
            });
        }

        // Shape of the request: tiers, kinds, quantities, named seats. Nothing here reads owners.
        let mut per_tier: Vec<(u16, u32)> = Vec::new();
        let mut named: HashSet<u32> = HashSet::default();
        let mut total: u64 = 0;
        // Each item resolved once: tier index, and seat indices for named seats.
        let mut plan: Vec<(u16, Ask)> = Vec::with_capacity(req.items.len());
        for item in &req.items {
            let (code, quantity) = match item {
                ReserveItem::General { tier, quantity }
                | ReserveItem::BestAvailable { tier, quantity } => (tier, *quantity),
                ReserveItem::Seats { tier, seats } => (tier, seats.len() as u32),
            };
            let ti = self.tier_index(code)?;
            let seated = !self.tiers[ti as usize].rows.is_empty();
            match (item, seated) {
                (ReserveItem::General { .. }, true) => {
                    return Err(Rejection::WrongItemKind {
                        tier: code.clone(),
                        kind: "seated",
                        expected: "named-seats or best-available",
                    });
                }
                (ReserveItem::Seats { .. } | ReserveItem::BestAvailable { .. }, false) => {
                    return Err(Rejection::WrongItemKind {
                        tier: code.clone(),
                        kind: "general admission",
                        expected: "quantity",
                    });
                }
                _ => {}
            }
            if quantity == 0 {
                return Err(Rejection::Invalid(format!(
                    "item for tier `{code}` asks for no tickets"
                )));
            }
            let mut seat_ids = Vec::new();
            if let ReserveItem::Seats { seats, .. } = item {
                for seat in seats {
                    let si = *self
                        .lookup
                        .seat_by_ref
                        .get(seat)
                        .ok_or_else(|| Rejection::UnknownSeat(seat.quoted()))?;
                    let actual = self.seats[si as usize].tier;
                    if actual != ti {
                        return Err(Rejection::SeatNotInTier {
                            seat: seat.clone(),
                            requested: code.clone(),
                            actual: self.spec.tiers[actual as usize].code.clone(),
                        });
                    }
                    if !named.insert(si) {
                        return Err(Rejection::DuplicateSeat(seat.clone()));
                    }
                    seat_ids.push(si);
                }
            }
            plan.push((
                ti,
                match item {
                    ReserveItem::General { .. } => Ask::Count(quantity),
                    ReserveItem::Seats { .. } => Ask::Named(seat_ids),
                    ReserveItem::BestAvailable { .. } => Ask::Best(quantity),
                },
            ));
            total += u64::from(quantity);
            match per_tier.iter_mut().find(|(t, _)| *t == ti) {
                Some((_, q)) => *q = q.saturating_add(quantity),
                None => per_tier.push((ti, quantity)),
            }
        }
        if total > u64::from(limits.max_tickets_per_request) {
            return Err(Rejection::Invalid(format!(
                "{total} tickets, over the limit of {} per request",
                limits.max_tickets_per_request
            )));
        }
        for &(ti, quantity) in &per_tier {
            let tier = &self.spec.tiers[ti as usize];
            if quantity > tier.max_per_order {
                return Err(Rejection::MaxPerOrder {
                    tier: tier.code.clone(),
                    requested: quantity,
                    max: tier.max_per_order,
                });
            }
        }

        // The event and the calendar.
        if self.status != EventStatus::OnSale {
            return Err(Rejection::NotOnSale(self.status));
        }
        for &(ti, _) in &per_tier {
            let tier = &self.spec.tiers[ti as usize];
            if !tier.sale_windows.is_empty()
                && !tier.sale_windows.iter().any(|w| w.contains(now_ms))
            {
                return Err(Rejection::OutsideSaleWindow(tier.code.clone()));
            }
        }

        // Limits of the event and of the customer.
        if self.holds.len() >= limits.max_open_holds_per_event as usize {
            return Err(Rejection::EventHoldLimit {
                limit: limits.max_open_holds_per_event,
            });
        }
        let tally = self
            .customers
            .get(req.customer.as_str())
            .copied()
            .unwrap_or_default();
        if tally.open_holds >= limits.max_open_holds_per_customer {
            return Err(Rejection::CustomerHoldLimit {
                limit: limits.max_open_holds_per_customer,
            });
        }
        if let Some(limit) = self.spec.customer_limit {
            let would_have = u64::from(tally.tickets) + total;
            if would_have > u64::from(limit) {
                return Err(Rejection::CustomerLimit {
                    limit,
                    would_have: would_have.min(u64::from(u32::MAX)) as u32,
                });
            }
        }

        // Availability: named seats must be free; general admission needs the count; best
        // available picks seats around those already taken by this request.
        for &si in &named {
            if self.owners[si as usize] != Owner::Free {
                return Err(Rejection::SeatTaken(self.seats[si as usize].label.clone()));
            }
        }
        for &(ti, quantity) in &per_tier {
            let tier = &self.tiers[ti as usize];
            if quantity > tier.available {
                return Err(Rejection::SoldOut {
                    tier: self.spec.tiers[ti as usize].code.clone(),
                    requested: quantity,
                    available: tier.available,
                });
            }
        }
        let mut taken = named;
        let mut lines: Vec<LineRecord> = Vec::with_capacity(req.items.len());
        for (ti, ask) in plan {
            let (quantity, seats) = match ask {
                Ask::Count(quantity) => (quantity, Vec::new()),
                Ask::Named(seats) => (seats.len() as u32, seats),
                Ask::Best(quantity) => {
                    let owners = &self.owners;
                    let chosen = seating::best_available(
                        &self.tiers[ti as usize].rows,
                        quantity,
                        &taken,
                        |s| owners[s as usize] == Owner::Free,
                    )
                    .ok_or_else(|| Rejection::NoSeatsTogether {
                        tier: self.spec.tiers[ti as usize].code.clone(),
                        quantity,
                    })?;
                    taken.extend(chosen.iter().copied());
                    (quantity, chosen)
                }
            };
            let spec = &self.spec.tiers[ti as usize];
            match lines.iter_mut().find(|l| l.tier == ti) {
                Some(line) => {
                    line.quantity += quantity;
                    line.seats.extend(seats);
                }
                None => lines.push(LineRecord {
                    tier: ti,
                    quantity,
                    seats,
                    unit_price_minor: spec.price_minor,
                    unit_fee_minor: spec.fee_minor,
                }),
            }
        }

        let customer: Arc<str> = Arc::from(req.customer.as_str());
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        // Built from what is at hand rather than looked up after `apply`: one random access into
        // a table of millions of holds fewer per reservation.
        let answer = Hold {
            id: hold_id,
            event_id: self.spec.id,
            customer: customer.clone(),
            lines: self.lines_view(&lines),
            currency: self.spec.currency,
            created_at_ms: now_ms,
            expires_at_ms,
        };
        let record = Record::HoldPlaced {
            hold_id,
            customer,
            lines,
            created_at_ms: now_ms,
            expires_at_ms,
            key: keyed.map(|k| k.record),
        };
        self.apply(&record);
        Ok(Decision {
            record: Some(record),
            answer,
        })
    }

    /// Decides giving a live hold's tickets back. The answer is the hold as it was.
    pub fn release(
        &mut self,
        req: &ReleaseRequest,
        now_ms: u64,
        limits: &Limits,
    ) -> Result<Decision<Hold>, Rejection> {
        let keyed = keyed(KeyScope::Release, "", &req.idempotency_key, req, limits)?;
        if let Some(Answer::Released(hold)) = self.repeat(keyed.as_ref(), now_ms, limits)? {
            return Ok(Decision {
                record: None,
                answer: hold,
            });
        }
        self.live_hold(req.hold_id, now_ms)?;
        let answer = self.hold_view(req.hold_id).expect("the hold is live");
        let record = Record::HoldReleased {
            hold_id: req.hold_id,
            at_ms: now_ms,
            key: keyed.map(|k| k.record),
        };
        self.apply(&record);
        Ok(Decision {
            record: Some(record),
            answer,
        })
    }

    /// Releases up to `max` holds whose deadline is at or before `now_ms`, as one record.
    pub fn expire_due(&mut self, now_ms: u64, max: usize) -> Option<Record> {
        let mut hold_ids = Vec::new();
        while hold_ids.len() < max {
            self.drop_stale_deadlines();
            if self.expiry.first().is_none_or(|(at, _)| at > now_ms) {
                break;
            }
            let (_, id) = self.expiry.pop_first().expect("a live hold is on top");
            hold_ids.push(id);
        }
        if hold_ids.is_empty() {
            return None;
        }
        let record = Record::HoldsExpired {
            hold_ids,
            at_ms: now_ms,
        };
        self.apply(&record);
        Some(record)
    }

    /// The earliest deadline among live holds.
    pub fn next_expiry_ms(&mut self) -> Option<u64> {
        self.drop_stale_deadlines();
        self.expiry.first().map(|(at, _)| at)
    }

    /// Drops ended holds from the top of the earliest deadline's list, and the list once empty,
    /// until a live hold is on top. Every entry is looked at once here, so this is cheap however
    /// many holds were confirmed or released before their deadline.
    fn drop_stale_deadlines(&mut self) {
        while let Some((at, id)) = self.expiry.first() {
            if self.holds.get(&id).is_some_and(|h| h.expires_at_ms == at) {
                return;
            }
            self.expiry.pop_first();
        }
    }

    /// A live hold, or why there is none.
    pub fn hold(&self, id: HoldId, now_ms: u64) -> Result<Hold, Rejection> {
        self.live_hold(id, now_ms)?;
        Ok(self.hold_view(id).expect("live"))
    }

    /// Ids of every live hold, for audits.
    pub fn hold_ids(&self) -> Vec<HoldId> {
        self.holds.keys().copied().collect()
    }

    /// A hold live at `now_ms`, or why there is none: expired, released, confirmed or unknown.
    pub(super) fn live_hold(&self, id: HoldId, now_ms: u64) -> Result<&HoldState, Rejection> {
        match self.holds.get(&id) {
            Some(h) if h.expires_at_ms > now_ms => Ok(h),
            Some(_) => Err(Rejection::HoldExpired(id)),
            None => Err(
                match self
                    .ended
                    .get(&id)
                    .or_else(|| self.order_of_hold.get(&id).map(|o| HoldEnd::Confirmed(*o)))
                {
                    Some(HoldEnd::Released) => Rejection::HoldReleased(id),
                    Some(HoldEnd::Expired) => Rejection::HoldExpired(id),
                    Some(HoldEnd::Confirmed(order)) => {
                        Rejection::HoldAlreadyConfirmed { hold: id, order }
                    }
                    None => Rejection::HoldNotFound(id),
                },
            ),
        }
    }

    /// A live hold as the answer describes it.
    fn hold_view(&self, id: HoldId) -> Option<Hold> {
        let h = self.holds.get(&id)?;
        Some(Hold {
            id,
            event_id: self.spec.id,
            customer: h.customer.clone(),
            lines: self.lines_view(&h.lines),
            currency: self.spec.currency,
            created_at_ms: h.created_at_ms,
            expires_at_ms: h.expires_at_ms,
        })
    }

    // ------------------------------------------------------------------------------------------
    // Applying records, called by `apply`.
    // ------------------------------------------------------------------------------------------

    /// Performs `Record::HoldPlaced`.
    pub(super) fn apply_hold_placed(
        &mut self,
        hold_id: HoldId,
        customer: &Arc<str>,
        lines: &[LineRecord],
        created_at_ms: u64,
        expires_at_ms: u64,
        key: Option<&KeyRecord>,
    ) {
        self.text_bytes += super::shared_text(customer);
        let mut tickets = 0;
        for line in lines {
            let tier = &mut self.tiers[line.tier as usize];
            assert!(
                tier.available >= line.quantity,
                "hold {hold_id} takes {} of tier {} with {} available",
                line.quantity,
                line.tier,
                tier.available
            );
            tier.available -= line.quantity;
            tier.held += line.quantity;
            tickets += line.quantity;
            for &s in &line.seats {
                let slot = &self.seats[s as usize];
                assert_eq!(
                    slot.tier, line.tier,
                    "seat {s} is not in tier {}",
                    line.tier
                );
                assert_eq!(
                    self.owners[s as usize],
                    Owner::Free,
                    "seat {} would get a second owner (hold {hold_id})",
                    slot.label
                );
                self.owners[s as usize] = Owner::Held(hold_id);
                tier.rows[slot.row as usize].free -= 1;
            }
            if !tier.rows.is_empty() {
                assert_eq!(
                    line.seats.len(),
                    line.quantity as usize,
                    "seated line without seats"
                );
            }
        }
        let previous = self.holds.insert(
            hold_id,
            HoldState {
                customer: customer.clone(),
                lines: lines.to_vec(),
                tickets,
                created_at_ms,
                expires_at_ms,
            },
        );
        assert!(previous.is_none(), "hold {hold_id} placed twice");
        self.expiry.push(expires_at_ms, hold_id);
        let tally = self
            .customers
            .get_or_insert_with(customer.clone(), Tally::default);
        tally.tickets += tickets;
        tally.open_holds += 1;
        if let Some(k) = key {
            let hold = self.hold_view(hold_id).expect("just inserted");
            self.remember(
                KeyScope::Reserve,
                customer,
                k,
                created_at_ms,
                Answer::Hold(hold),
            );
        }
        self.assert_tiers(lines);
    }

    /// Performs `Record::HoldReleased`.
    pub(super) fn apply_hold_released(
        &mut self,
        hold_id: HoldId,
        at_ms: u64,
        key: Option<&KeyRecord>,
    ) {
        let view = key.map(|_| self.hold_view(hold_id).expect("released hold is live"));
        self.end_hold(hold_id, HoldEnd::Released, at_ms);
        if let (Some(k), Some(hold)) = (key, view) {
            self.remember(KeyScope::Release, "", k, at_ms, Answer::Released(hold));
        }
    }

    /// Performs `Record::HoldsExpired`.
    pub(super) fn apply_holds_expired(&mut self, hold_ids: &[HoldId], at_ms: u64) {
        for id in hold_ids {
            self.end_hold(*id, HoldEnd::Expired, at_ms);
        }
    }

    /// Ends a live hold: its tickets and seats go back on sale.
    fn end_hold(&mut self, hold_id: HoldId, end: HoldEnd, at_ms: u64) {
        let hold = self
            .holds
            .remove(&hold_id)
            .unwrap_or_else(|| panic!("ended hold {hold_id} is not live"));
        self.text_bytes -= super::shared_text(&hold.customer);
        for line in &hold.lines {
            let tier = &mut self.tiers[line.tier as usize];
            assert!(tier.held >= line.quantity);
            tier.held -= line.quantity;
            tier.available += line.quantity;
            for &s in &line.seats {
                assert_eq!(
                    self.owners[s as usize],
                    Owner::Held(hold_id),
                    "seat {s} not held by {hold_id}"
                );
                self.owners[s as usize] = Owner::Free;
                tier.rows[self.seats[s as usize].row as usize].free += 1;
            }
        }
        self.untally(&hold.customer, hold.tickets, 1);
        self.note_end(hold_id, end, at_ms);
        self.assert_tiers(&hold.lines);
    }

    /// Takes tickets and open holds off a customer's tally; a tally at zero is dropped.
    pub(super) fn untally(&mut self, customer: &str, tickets: u32, holds: u32) {
        let tally = self
            .customers
            .get_mut(customer)
            .expect("customer has a tally");
        assert!(tally.tickets >= tickets && tally.open_holds >= holds);
        tally.tickets -= tickets;
        tally.open_holds -= holds;
        if tally.tickets == 0 && tally.open_holds == 0 {
            self.customers.remove(customer);
        }
    }

    /// Notes how a hold ended, for precise answers to late requests about it.
    pub(super) fn note_end(&mut self, hold_id: HoldId, end: HoldEnd, at_ms: u64) {
        if let HoldEnd::Confirmed(order) = end {
            self.order_of_hold.insert(hold_id, order);
        } else {
            self.ended.note(hold_id, end, at_ms);
        }
    }
}
