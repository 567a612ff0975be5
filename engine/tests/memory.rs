//! The engine's memory estimate (`Inventory::memory_bytes`, behind `engine.max_state_mib`)
//! against what the allocator really hands out, for events of each shape. A test binary of its
//! own: it counts every allocation of the process, so nothing else may run beside it.
//!
//! Prints the per-entry figures README.md quotes (run with `--nocapture`).

use std::alloc::System;

use cap::Cap;
use engine::inventory::{
    Currency, EventId, EventSpec, EventStatus, HoldId, Inventory, Limits, ReserveItem,
    ReserveRequest, RowSpec, SectionSpec, Stock, TierSpec,
};
use uuid::Uuid;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

fn allocated() -> i64 {
    ALLOCATOR.allocated() as i64
}

fn spec(tiers: Vec<TierSpec>) -> EventSpec {
    EventSpec {
        id: EventId(Uuid::from_u128(7)),
        name: "Memory".into(),
        venue: "Arena".into(),
        starts_at_ms: 0,
        status: EventStatus::OnSale,
        currency: Currency::parse("EUR").unwrap(),
        customer_limit: None,
        hold_ttl_ms: 600_000,
        payment_ttl_ms: 900_000,
        time_zone: "UTC".into(),
        allow_reentry: false,
        tiers,
    }
}

fn ga(capacity: u32) -> TierSpec {
    TierSpec {
        code: "GA".into(),
        name: "General".into(),
        price_minor: 5_000,
        fee_minor: 250,
        max_per_order: 8,
        sale_windows: vec![],
        stock: Stock::General { capacity },
    }
}

fn seated(rows: u32, per_row: u32) -> TierSpec {
    TierSpec {
        code: "SEAT".into(),
        name: "Stalls".into(),
        price_minor: 9_000,
        fee_minor: 400,
        max_per_order: 8,
        sale_windows: vec![],
        stock: Stock::Seated {
            sections: vec![SectionSpec {
                name: "Stalls".into(),
                rows: (1..=rows)
                    .map(|r| RowSpec {
                        name: format!("R{r}"),
                        seats: (1..=per_row).map(|n| n.to_string()).collect(),
                    })
                    .collect(),
            }],
        },
    }
}

fn limits() -> Limits {
    Limits {
        max_open_holds_per_event: u32::MAX,
        max_open_holds_per_customer: u32::MAX,
        max_capacity_per_tier: u32::MAX,
        max_seats_per_event: u32::MAX,
        ..Limits::default()
    }
}

/// Builds an event, runs `fill` on it, and returns (estimated, allocated) bytes of its state.
/// The event's handle keeps a second copy of the spec, which the estimate counts: it is made
/// here too.
fn measure(tiers: Vec<TierSpec>, fill: impl FnOnce(&mut Inventory)) -> (u64, u64) {
    let before = allocated();
    let (mut inventory, record) = Inventory::create(spec(tiers), &limits()).unwrap();
    drop(record);
    let handle_copy = inventory.spec().clone();
    fill(&mut inventory);
    let used = allocated() - before;
    let estimate = inventory.memory_bytes();
    drop(handle_copy);
    (estimate, used as u64)
}

/// `n` holds of `item()`, each for its own customer, with a client key if `keyed`; customer ids
/// and keys are `len` bytes (at least 17).
fn reserve_n(
    inventory: &mut Inventory,
    n: u32,
    item: impl Fn() -> ReserveItem,
    keyed: bool,
    len: usize,
) {
    for i in 0..n {
        let request = ReserveRequest {
            customer: format!("customer-{i:08}{}", "c".repeat(len.saturating_sub(17))),
            items: vec![item()],
            hold_ttl_ms: None,
            idempotency_key: keyed.then(|| format!("cart-{i:012}{}", "k".repeat(len - 17))),
        };
        inventory
            .reserve(
                &request,
                HoldId(Uuid::from_u128(u128::from(i) + 1)),
                1_000,
                &limits(),
            )
            .unwrap();
    }
}

/// The estimate may be generous, never much below what is really used.
fn check(what: &str, (estimate, used): (u64, u64), entries: u64) -> u64 {
    println!(
        "{what}: estimated {estimate} B, allocated {used} B; per entry {} B estimated, {} B allocated",
        estimate / entries,
        used / entries
    );
    assert!(
        estimate as f64 >= 0.9 * used as f64 && estimate as f64 <= 1.6 * used as f64,
        "{what}: estimated {estimate} bytes, allocated {used}"
    );
    used / entries
}

#[test]
fn memory_estimates_match_what_the_allocator_hands_out() {
    const N: u32 = 50_000;
    let ga_item = || ReserveItem::General {
        tier: "GA".into(),
        quantity: 2,
    };
    let best_two = || ReserveItem::BestAvailable {
        tier: "SEAT".into(),
        quantity: 2,
    };
    check("empty GA event of 100", measure(vec![ga(100)], |_| {}), 1);
    check(
        "empty GA event of 1M (tables sized for it)",
        measure(vec![ga(1_000_000)], |_| {}),
        1,
    );
    let per_seat = check(
        "seat map of 200,000 seats",
        measure(vec![seated(400, 500)], |_| {}),
        200_000,
    );
    let empty = measure(vec![ga(N * 2)], |_| {}).1;
    let held = measure(vec![ga(N * 2)], |inv| reserve_n(inv, N, ga_item, false, 34));
    check("GA holds of 2", held, u64::from(N));
    let keyed = measure(vec![ga(N * 2)], |inv| reserve_n(inv, N, ga_item, true, 34));
    check("GA holds of 2 with keys", keyed, u64::from(N));
    let seated_keyed = measure(vec![seated(250, 400)], |inv| {
        reserve_n(inv, N, best_two, true, 34)
    });
    check("seated holds of 2 with keys", seated_keyed, u64::from(N));
    // The longest ids the default limits allow (limits.max_string_bytes = 128).
    let long = measure(vec![ga(N * 2)], |inv| reserve_n(inv, N, ga_item, true, 128));
    check(
        "GA holds of 2 with 128-byte customer ids and keys",
        long,
        u64::from(N),
    );
    println!(
        "figures: per seat {per_seat} B; per GA hold {} B; per key {} B",
        (held.1 - empty) / u64::from(N),
        (keyed.1 - held.1) / u64::from(N)
    );
}
