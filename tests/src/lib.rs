//! Shared pieces of the end-to-end tests: event builders, a config on a temporary directory, the
//! crash harness used by both the suite and the `crash-soak` binary, and the storage-fault
//! simulation used by both the suite and the `storage-sim` binary.

pub mod crash;
pub mod sim;

use std::path::Path;

use engine::inventory::{
    Currency, EventId, EventSpec, EventStatus, ReserveItem, ReserveRequest, RowSpec, SeatRef,
    SectionSpec, Stock, TierSpec,
};
use uuid::Uuid;

/// The default config with its data directory moved to `dir`.
pub fn config_in(dir: &Path) -> config::Config {
    let mut c = config::Config::default();
    c.storage.data_dir = dir.to_path_buf();
    c.storage.cache_capacity_mib = 32;
    c
}

pub fn now_ms() -> u64 {
    engine::actor::wall_clock_ms()
}

pub fn ga_tier(code: &str, capacity: u32, max_per_order: u32) -> TierSpec {
    TierSpec {
        code: code.into(),
        name: format!("{code} tickets"),
        price_minor: 5_000,
        fee_minor: 250,
        max_per_order,
        sale_windows: vec![],
        stock: Stock::General { capacity },
    }
}

/// A seated tier of one section with `rows` rows (named 1, 2, ...) of `seats_per_row` seats.
pub fn seated_tier(code: &str, rows: u32, seats_per_row: u32, max_per_order: u32) -> TierSpec {
    TierSpec {
        code: code.into(),
        name: format!("{code} seats"),
        price_minor: 8_000,
        fee_minor: 400,
        max_per_order,
        sale_windows: vec![],
        stock: Stock::Seated {
            sections: vec![SectionSpec {
                name: code.into(),
                rows: (1..=rows)
                    .map(|r| RowSpec {
                        name: r.to_string(),
                        seats: (1..=seats_per_row).map(|n| n.to_string()).collect(),
                    })
                    .collect(),
            }],
        },
    }
}

/// An event on sale with the given tiers, no customer limit and a one-hour hold TTL.
pub fn event(tiers: Vec<TierSpec>) -> EventSpec {
    EventSpec {
        id: EventId(Uuid::new_v4()),
        name: "Ticket drop".into(),
        venue: "Arena".into(),
        starts_at_ms: now_ms() + 86_400_000,
        status: EventStatus::OnSale,
        currency: Currency::parse("EUR").expect("valid code"),
        customer_limit: None,
        hold_ttl_ms: 3_600_000,
        payment_ttl_ms: 900_000,
        time_zone: "UTC".into(),
        allow_reentry: false,
        tiers,
    }
}

pub fn seat_in(tier: &str, row: u32, number: u32) -> SeatRef {
    SeatRef {
        section: tier.into(),
        row: row.to_string(),
        number: number.to_string(),
    }
}

pub fn reserve_ga(customer: &str, tier: &str, quantity: u32) -> ReserveRequest {
    ReserveRequest {
        customer: customer.into(),
        items: vec![ReserveItem::General {
            tier: tier.into(),
            quantity,
        }],
        hold_ttl_ms: None,
        idempotency_key: None,
    }
}

pub fn reserve_seats(customer: &str, tier: &str, seats: Vec<SeatRef>) -> ReserveRequest {
    ReserveRequest {
        customer: customer.into(),
        items: vec![ReserveItem::Seats {
            tier: tier.into(),
            seats,
        }],
        hold_ttl_ms: None,
        idempotency_key: None,
    }
}

pub fn reserve_best(customer: &str, tier: &str, quantity: u32) -> ReserveRequest {
    ReserveRequest {
        customer: customer.into(),
        items: vec![ReserveItem::BestAvailable {
            tier: tier.into(),
            quantity,
        }],
        hold_ttl_ms: None,
        idempotency_key: None,
    }
}
