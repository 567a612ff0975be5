//! Read-only views of an event: its spec and counts, availability per tier and per seat, and the
//! answers' lines. They change nothing.

use super::*;

impl Inventory {
    /// The event as created; its status is `summary().status`.
    pub fn spec(&self) -> &EventSpec {
        &self.spec
    }

    pub fn id(&self) -> EventId {
        self.spec.id
    }

    /// Records applied so far, `Created` included.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The seq of the event's latest outbox entry.
    pub fn outbox_seq(&self) -> u64 {
        self.outbox_seq
    }

    pub fn open_holds(&self) -> usize {
        self.holds.len()
    }

    /// How many holds, orders, client keys and ended-hold notes the state carries: what a
    /// snapshot costs to write, roughly.
    pub fn state_size(&self) -> usize {
        self.holds.len() + self.orders.len() + self.keys.len() + self.ended.len()
    }

    /// The index of the tier with this code.
    pub(super) fn tier_index(&self, code: &str) -> Result<u16, Rejection> {
        self.lookup
            .tier_by_code
            .get(code)
            .copied()
            .ok_or_else(|| Rejection::UnknownTier(rejection::quote(code)))
    }

    /// An answer's lines, with tier codes and seat labels for the indices of `lines`.
    pub(super) fn lines_view(&self, lines: &[LineRecord]) -> Vec<Line> {
        lines
            .iter()
            .map(|l| Line {
                tier: self.lookup.tier_codes[l.tier as usize].clone(),
                quantity: l.quantity,
                seats: l
                    .seats
                    .iter()
                    .map(|&s| self.seats[s as usize].label.clone())
                    .collect(),
                unit_price_minor: l.unit_price_minor,
                unit_fee_minor: l.unit_fee_minor,
            })
            .collect()
    }

    pub fn availability(&self) -> Vec<TierAvailability> {
        self.tiers
            .iter()
            .zip(&self.spec.tiers)
            .map(|(t, s)| TierAvailability {
                code: s.code.clone(),
                capacity: t.capacity,
                available: t.available,
                held: t.held,
                sold: t.sold,
            })
            .collect()
    }

    /// Every seat of one seated tier (or of all, with `None`) and its state.
    pub fn seat_availability(
        &self,
        tier: Option<&str>,
    ) -> Result<Vec<SeatAvailability>, Rejection> {
        let only = tier.map(|code| self.tier_index(code)).transpose()?;
        Ok(self
            .seats
            .iter()
            .zip(&self.owners)
            .filter(|(slot, _)| only.is_none_or(|t| slot.tier == t))
            .map(|(slot, owner)| SeatAvailability {
                seat: slot.label.clone(),
                tier: self.spec.tiers[slot.tier as usize].code.clone(),
                state: match owner {
                    Owner::Free => SeatState::Free,
                    Owner::Held(_) => SeatState::Held,
                    Owner::Sold(_) => SeatState::Sold,
                },
            })
            .collect())
    }

    pub fn summary(&self) -> EventSummary {
        EventSummary {
            id: self.spec.id,
            name: self.spec.name.clone(),
            venue: self.spec.venue.clone(),
            starts_at_ms: self.spec.starts_at_ms,
            status: self.status,
            tiers: self.availability(),
            open_holds: self.holds.len() as u32,
            orders: self.orders.len() as u32,
        }
    }
}
