//! What one event's state takes in memory, estimated in O(1) from its tables' sizes and counts,
//! for the engine-wide limit `engine.max_state_mib`. The per-entry figures are the types' sizes
//! plus the heap parts each entry owns; `engine/tests/memory.rs` checks the estimate against what
//! the allocator really handed out for events of each shape. It reads the state, never changes it.

use std::mem::size_of;
use std::sync::Arc;

use super::*;

/// A hash table of `capacity` entries of `entry` bytes: hashbrown keeps at least 8 buckets per 7
/// entries, each with one control byte.
fn table(capacity: usize, entry: usize) -> u64 {
    (capacity as u64 * 8 / 7) * (entry as u64 + 1)
}

/// A heap string of `len` bytes, as the allocator rounds it.
pub(super) fn heap(len: usize) -> u64 {
    (len as u64).div_ceil(8).max(1) * 8
}

/// Heap bytes of a stored answer's `Vec<Line>` and its tier code: one line, as nearly every
/// hold and order has, plus each seat named in it.
const ANSWER_LINE_BYTES: u64 = size_of::<Line>() as u64;
const ANSWER_SEAT_BYTES: u64 = size_of::<SeatRef>() as u64 + 3 * 8;

impl Inventory {
    /// The bytes that do not change after creation: the spec (held twice: here and by the
    /// event's handle), the seat table, its lookup, the seat owners and the row index.
    pub(super) fn fixed_bytes(spec: &EventSpec, seats: &[SeatSlot]) -> u64 {
        // 28 KiB: the actor's tables at their smallest (the sharded maps' 64 tables each, with
        // room beside each for a snapshot's shared entries and the changes made meanwhile) and
        // the event's fixed parts.
        let mut bytes = 28_672 + 2 * size_of::<EventSpec>() as u64;
        for tier in &spec.tiers {
            bytes +=
                2 * (size_of::<TierSpec>() as u64 + heap(tier.code.len()) + heap(tier.name.len()));
            if let Stock::Seated { sections } = &tier.stock {
                for section in sections {
                    for row in &section.rows {
                        bytes += 2 * (size_of::<RowSpec>() as u64 + heap(row.name.len()));
                        for number in &row.seats {
                            bytes += 2 * (size_of::<String>() as u64 + heap(number.len()));
                        }
                    }
                }
            }
        }
        for slot in seats {
            let labels = heap(slot.label.section.len())
                + heap(slot.label.row.len())
                + heap(slot.label.number.len());
            // The slot, its owner, its place in its row, and its entry in the lookup by label:
            // the label twice.
            bytes += size_of::<SeatSlot>() as u64
                + size_of::<Owner>() as u64
                + 4
                + table(1, size_of::<(SeatRef, u32)>())
                + 2 * labels;
        }
        bytes
    }

    /// The event's state in memory, bytes, estimated (see the module's comment).
    pub fn memory_bytes(&self) -> u64 {
        let seats_held: u64 = self.held_or_sold_seats(|t| t.held);
        let seats_sold: u64 = self.held_or_sold_seats(|t| t.sold);
        let holds = table(
            self.holds.capacity(),
            size_of::<(HoldId, HoldState)>(),
        ) + self.holds.len() as u64 * size_of::<LineRecord>() as u64
            + seats_held * 4
            // Deadlines: one id per hold in per-millisecond lists.
            + self.holds.len() as u64 * 2 * size_of::<HoldId>() as u64;
        let customers = table(self.customers.capacity(), size_of::<(Arc<str>, Tally)>())
            + self.customers.len() as u64 * (16 + heap(16));
        let orders = table(self.orders.capacity(), size_of::<(OrderId, OrderState)>())
            + table(
                self.order_of_hold.capacity(),
                size_of::<(HoldId, OrderId)>(),
            )
            + self.orders.len() as u64 * (size_of::<LineRecord>() as u64 + heap(24))
            + seats_sold * 4
            // Payment deadlines: one id per order in per-millisecond lists, as for holds; counted
            // for every order, an upper bound (an entry goes once its deadline comes).
            + self.orders.len() as u64 * 2 * size_of::<OrderId>() as u64;
        let keys = table(self.keys.capacity(), size_of::<(KeyId, KeyEntry)>())
            + self.key_queue.capacity() as u64 * size_of::<(u64, KeyId)>() as u64
            // The answer's line; the key and its owner are in `text_bytes`.
            + self.keys.len() as u64 * ANSWER_LINE_BYTES
            // Orders answered to confirm, cancel and refund keys are boxed: at most one per
            // order, nearly always (a key per confirm).
            + self.keys.len().min(self.orders.len()) as u64 * size_of::<Order>() as u64
            + self.seats_in_keys_estimate() * ANSWER_SEAT_BYTES;
        let ended = table(self.ended.capacity(), size_of::<(HoldId, HoldEnd)>());
        // The ticket index and the admissions: their 64 shards even when empty, their entries,
        // and per admitted ticket the list of its scan ids (one, nearly always).
        let shards = 2 * 64 * size_of::<HashMap<u64, u64>>() as u64;
        let tickets = shards
            + table(
                self.ticket_index.capacity(),
                size_of::<(TicketId, (OrderId, u32))>(),
            )
            + table(
                self.admissions.capacity(),
                size_of::<(TicketId, checkins::TicketScans)>(),
            )
            + self.admissions.len() as u64 * size_of::<String>() as u64
            + self.gates.capacity() as u64 * size_of::<GateCounts>() as u64;
        self.fixed_bytes + holds + customers + orders + keys + ended + tickets + self.text_bytes
    }

    fn held_or_sold_seats(&self, count: impl Fn(&TierState) -> u32) -> u64 {
        self.tiers
            .iter()
            .filter(|t| !t.rows.is_empty())
            .map(|t| u64::from(count(t)))
            .sum()
    }

    /// Seats named in stored answers: as many per key as the event's holds and orders name on
    /// average.
    fn seats_in_keys_estimate(&self) -> u64 {
        let entries = (self.holds.len() + self.orders.len()) as u64;
        if entries == 0 {
            return 0;
        }
        let seats = self.held_or_sold_seats(|t| t.held + t.sold);
        seats * self.keys.len() as u64 / entries
    }
}
