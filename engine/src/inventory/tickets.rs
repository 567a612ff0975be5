//! Tickets: the ones a paid order issues (one per seat, or per general-admission unit), each with
//! a token signed by the actor's `TicketIssuer`, and the tickets as answers show them. The
//! inventory never signs: it asks the issuer once, when deciding, and records the tokens, so a
//! replay rebuilds the same tickets without a key.

use super::*;

/// Draws ticket ids and signs ticket tokens; the actor's is backed by `crate::tickets`.
pub trait TicketIssuer {
    fn ticket_id(&mut self) -> TicketId;
    fn sign(&self, claims: &TicketClaims) -> String;
}

impl Inventory {
    /// The tickets an order issues when paid: its lines in order, a ticket per seat of a seated
    /// line and per unit of a general-admission one.
    pub(super) fn issue_tickets(
        &self,
        order: &OrderState,
        issuer: &mut dyn TicketIssuer,
    ) -> Vec<TicketRecord> {
        let mut tickets = Vec::with_capacity(order.tickets as usize);
        for (index, line) in order.lines.iter().enumerate() {
            let seats: Vec<Option<u32>> = if line.seats.is_empty() {
                vec![None; line.quantity as usize]
            } else {
                line.seats.iter().copied().map(Some).collect()
            };
            for seat in seats {
                let id = issuer.ticket_id();
                let claims = TicketClaims {
                    ticket_id: id,
                    event_id: self.spec.id,
                    tier: self.spec.tiers[line.tier as usize].code.clone(),
                    seat: seat.map(|s| self.seats[s as usize].label.clone()),
                    holder: order.customer.to_string(),
                };
                tickets.push(TicketRecord {
                    id,
                    line: index as u16,
                    seat,
                    token: issuer.sign(&claims),
                });
            }
        }
        tickets
    }

    /// Checks tickets read back from a record or a snapshot against their order: one per unit of
    /// each line, each seat of the line once.
    pub(super) fn check_tickets(
        &self,
        order: &OrderState,
        tickets: &[TicketRecord],
    ) -> Result<(), String> {
        ensure!(
            tickets.len() as u64 == u64::from(order.tickets),
            "{} tickets issued for {} units",
            tickets.len(),
            order.tickets
        );
        for (index, line) in order.lines.iter().enumerate() {
            let of_line: Vec<Option<u32>> = tickets
                .iter()
                .filter(|t| usize::from(t.line) == index)
                .map(|t| t.seat)
                .collect();
            ensure!(
                of_line.len() as u64 == u64::from(line.quantity),
                "{} tickets of line {index} for {} units",
                of_line.len(),
                line.quantity
            );
            if line.seats.is_empty() {
                ensure!(
                    of_line.iter().all(Option::is_none),
                    "a general-admission ticket with a seat"
                );
            } else {
                let seats: Vec<Option<u32>> = line.seats.iter().copied().map(Some).collect();
                ensure!(of_line == seats, "ticket seats of line {index}");
            }
        }
        Ok(())
    }

    /// An order's tickets as answers show them.
    pub(super) fn tickets_view(&self, order: &OrderState) -> Vec<Ticket> {
        order
            .issued
            .iter()
            .map(|t| {
                let line = &order.lines[usize::from(t.line)];
                Ticket {
                    id: t.id,
                    tier: self.lookup.tier_codes[line.tier as usize].clone(),
                    seat: t.seat.map(|s| self.seats[s as usize].label.clone()),
                    holder: order.customer.clone(),
                    token: t.token.clone(),
                }
            })
            .collect()
    }
}
