//! `boxoffice-bench` scenario files: arbitrary text parsed and validated by
//! `Scenario::from_toml`, the function `Scenario::load` calls on a file's text. Nothing may panic,
//! and what is accepted must pass `validate` again and say what it holds (`capacity` of its tiers,
//! whether it has seat maps) without panicking.

#![no_main]

use bench::scenario::Scenario;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(scenario) = Scenario::from_toml(text) {
        scenario
            .validate()
            .expect("an accepted scenario stays valid");
        let _ = scenario.has_seat_maps();
        for tier in &scenario.events.tiers {
            let _ = tier.capacity();
        }
    }
});
