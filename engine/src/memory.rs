//! The engine-wide account of what event state takes in memory (`engine.max_state_mib`). Each
//! actor reports its event's estimate (`Inventory::memory_bytes`) after every message that
//! changed it; new holds and new events are refused while the total is at the limit. It counts,
//! it never allocates or frees anything itself.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct StateMemory {
    limit_bytes: u64,
    used_bytes: AtomicU64,
}

impl StateMemory {
    pub fn new(limit_bytes: u64) -> StateMemory {
        StateMemory {
            limit_bytes,
            used_bytes: AtomicU64::new(0),
        }
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// Whether `extra` more bytes fit under the limit now.
    pub fn has_room(&self, extra: u64) -> bool {
        self.used_bytes().saturating_add(extra) <= self.limit_bytes
    }

    /// Moves one event's share from `*reported` to `now` and remembers `now` as reported.
    pub fn report(&self, reported: &mut u64, now: u64) {
        if now > *reported {
            self.used_bytes
                .fetch_add(now - *reported, Ordering::Relaxed);
        } else {
            self.used_bytes
                .fetch_sub(*reported - now, Ordering::Relaxed);
        }
        *reported = now;
    }
}
