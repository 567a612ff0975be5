//! A payment provider's webhook as the payment adapter takes it: the signature header checked over
//! the raw body (`webhook::verify`), then the body read as a payment event and its outcome. The
//! input is the header, a newline, then the body; the secrets and the clock are fixed, so a seed
//! signed with them (see `seeds`) reaches the body's parsing.

#![no_main]

use adapters::payments::webhook::{self, WebhookEvent};
use libfuzzer_sys::fuzz_target;

/// The secrets the seeds are signed with; the second is the one a rotation would add.
pub const SECRETS: [&str; 2] = ["whsec_fuzz_0123456789abcdef", "whsec_fuzz_rotated_fedcba98"];
/// The clock at which the seeds' timestamps are fresh.
pub const NOW_S: u64 = 1_780_000_000;

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let header = std::str::from_utf8(header).ok();
    let secrets: Vec<String> = SECRETS.iter().map(|s| s.to_string()).collect();
    let verified = webhook::verify(header, body, &secrets, NOW_S, 300);
    // The adapter reads the body only once the signature holds; read every body anyway, so the
    // parsing is fuzzed without having to forge a MAC.
    if let Ok(event) = serde_json::from_slice::<WebhookEvent>(body) {
        let _ = event.data.outcome();
    }
    if verified.is_ok() {
        // A body whose signature holds was signed by one of the secrets over exactly these bytes.
        let t = header
            .and_then(|h| h.split(',').find_map(|p| p.trim().strip_prefix("t=")))
            .and_then(|t| t.parse::<u64>().ok())
            .expect("a verified header has its t");
        assert!(NOW_S.abs_diff(t) <= 300);
    }
});
