//! The limits that shape decisions, the checks of an event spec and of request strings against
//! them, and the event's status changes.

use super::*;

/// The limits that shape decisions. Not part of the state: changing them between restarts changes
/// what new requests may do, never how recorded ones replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_items_per_request: u32,
    pub max_tickets_per_request: u32,
    pub max_open_holds_per_event: u32,
    pub max_open_holds_per_customer: u32,
    pub max_tiers_per_event: u32,
    pub max_seats_per_event: u32,
    pub max_capacity_per_tier: u32,
    pub max_sale_windows_per_tier: u32,
    pub max_string_bytes: u32,
    pub min_hold_ttl_ms: u64,
    pub max_hold_ttl_ms: u64,
    pub min_payment_ttl_ms: u64,
    pub max_payment_ttl_ms: u64,
    pub idempotency_retention_ms: u64,
    pub max_keys_per_event: usize,
    pub ended_hold_retention_ms: u64,
    pub max_ended_hold_notes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&config::Config::default())
    }
}

impl From<&config::Config> for Limits {
    fn from(c: &config::Config) -> Self {
        let l = &c.limits;
        Limits {
            max_items_per_request: l.max_items_per_request,
            max_tickets_per_request: l.max_tickets_per_request,
            max_open_holds_per_event: l.max_open_holds_per_event,
            max_open_holds_per_customer: l.max_open_holds_per_customer,
            max_tiers_per_event: l.max_tiers_per_event,
            max_seats_per_event: l.max_seats_per_event,
            max_capacity_per_tier: l.max_capacity_per_tier,
            max_sale_windows_per_tier: l.max_sale_windows_per_tier,
            max_string_bytes: l.max_string_bytes,
            min_hold_ttl_ms: c.holds.min_hold_ttl_ms,
            max_hold_ttl_ms: c.holds.max_hold_ttl_ms,
            min_payment_ttl_ms: c.orders.min_payment_ttl_ms,
            max_payment_ttl_ms: c.orders.max_payment_ttl_ms,
            idempotency_retention_ms: c.idempotency.retention_ms,
            max_keys_per_event: c.idempotency.max_keys_per_event as usize,
            ended_hold_retention_ms: c.holds.ended_hold_retention_ms,
            max_ended_hold_notes: c.holds.max_ended_hold_notes as usize,
        }
    }
}

/// Checks that a string from a request or a spec is not empty and not over the limit.
pub(super) fn check_string(what: &str, value: &str, limits: &Limits) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::Invalid(format!("{what} must not be empty")));
    }
    if value.len() > limits.max_string_bytes as usize {
        return Err(Rejection::Invalid(format!(
            "{what} is {} bytes, over the limit of {}",
            value.len(),
            limits.max_string_bytes
        )));
    }
    Ok(())
}

/// The longest IANA time zone name taken; the longest in the database is 32 bytes.
const MAX_TIME_ZONE_BYTES: usize = 64;
/// RFC 5321's limit on a forward path; a longer address cannot be delivered.
pub const MAX_EMAIL_BYTES: usize = 254;
/// A name printed on a ticket, at most.
pub const MAX_CONTACT_NAME_BYTES: usize = 200;
/// A BCP 47 language tag, at most (RFC 5646 advises 35 characters).
pub const MAX_LANGUAGE_BYTES: usize = 35;

/// Checks that `name` is a time zone of the IANA database compiled into the binary (so the
/// answer is the same on every machine and at every replay).
fn check_time_zone(name: &str) -> Result<(), Rejection> {
    if name.is_empty() || name.len() > MAX_TIME_ZONE_BYTES {
        return Err(Rejection::Invalid(format!(
            "time zone must be 1 to {MAX_TIME_ZONE_BYTES} bytes"
        )));
    }
    if jiff::tz::db().get(name).is_err() {
        return Err(Rejection::Invalid(format!(
            "time zone `{}` is not an IANA time zone name (e.g. Europe/Lisbon)",
            rejection::quote(name)
        )));
    }
    Ok(())
}

/// Checks a buyer's contact details: an address of the form `local@domain` without spaces or
/// control characters, a printable name and a language tag of letters, digits and `-`.
pub fn check_contact(contact: &Contact) -> Result<(), Rejection> {
    let invalid = |m: String| Err(Rejection::Invalid(m));
    let email = &contact.email;
    if email.is_empty() || email.len() > MAX_EMAIL_BYTES {
        return invalid(format!(
            "contact email must be 1 to {MAX_EMAIL_BYTES} bytes"
        ));
    }
    let well_formed = match email.split_once('@') {
        Some((local, domain)) => local_part_ok(local) && domain_ok(domain),
        None => false,
    };
    if !well_formed {
        return invalid(format!(
            "contact email `{}` is not an address of the form local@domain",
            rejection::quote(email)
        ));
    }
    if contact.name.len() > MAX_CONTACT_NAME_BYTES {
        return invalid(format!(
            "contact name is {} bytes, over the limit of {MAX_CONTACT_NAME_BYTES}",
            contact.name.len()
        ));
    }
    if contact.name.chars().any(char::is_control) {
        return invalid("contact name must not hold control characters".into());
    }
    let language = &contact.language;
    if language.len() > MAX_LANGUAGE_BYTES
        || !language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        || language.starts_with('-')
        || language.ends_with('-')
    {
        return invalid(format!(
            "contact language `{}` is not a language tag such as en or pt-BR",
            rejection::quote(language)
        ));
    }
    Ok(())
}

/// An unquoted local part (RFC 5322 dot-atom), ASCII: what every SMTP server takes.
fn local_part_ok(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b))
}

/// A domain of two or more labels of ASCII letters, digits and `-` (not first or last).
fn domain_ok(domain: &str) -> bool {
    domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Checks an event spec against the limits; an `Err` names the first problem.
pub fn validate_spec(spec: &EventSpec, limits: &Limits) -> Result<(), Rejection> {
    let invalid = |m: String| Err(Rejection::Invalid(m));
    check_string("event name", &spec.name, limits)?;
    check_string("venue", &spec.venue, limits)?;
    if spec.status == EventStatus::Closed {
        return invalid("a new event cannot start closed".into());
    }
    if spec.tiers.is_empty() {
        return invalid("an event needs at least one tier".into());
    }
    if spec.tiers.len() > limits.max_tiers_per_event as usize {
        return invalid(format!(
            "{} tiers, over the limit of {}",
            spec.tiers.len(),
            limits.max_tiers_per_event
        ));
    }
    if !(limits.min_hold_ttl_ms..=limits.max_hold_ttl_ms).contains(&spec.hold_ttl_ms) {
        return Err(Rejection::HoldTtlOutOfRange {
            requested_ms: spec.hold_ttl_ms,
            min_ms: limits.min_hold_ttl_ms,
            max_ms: limits.max_hold_ttl_ms,
        });
    }
    if !(limits.min_payment_ttl_ms..=limits.max_payment_ttl_ms).contains(&spec.payment_ttl_ms) {
        return invalid(format!(
            "payment ttl {} ms is outside {}..={} ms",
            spec.payment_ttl_ms, limits.min_payment_ttl_ms, limits.max_payment_ttl_ms
        ));
    }
    if spec.customer_limit == Some(0) {
        return invalid("customer limit must be at least 1 (or absent for no limit)".into());
    }
    if Currency::parse(spec.currency.as_str()).is_none() {
        return invalid("currency must be three upper-case letters".into());
    }
    check_time_zone(&spec.time_zone)?;
    let mut codes = HashSet::default();
    let mut seats = HashSet::default();
    for tier in &spec.tiers {
        check_string("tier code", &tier.code, limits)?;
        check_string("tier name", &tier.name, limits)?;
        if !codes.insert(tier.code.as_str()) {
            return invalid(format!("tier code `{}` is used twice", tier.code));
        }
        if tier.max_per_order == 0 {
            return invalid(format!(
                "tier `{}` max per order must be at least 1",
                tier.code
            ));
        }
        if tier.price_minor.checked_add(tier.fee_minor).is_none()
            || tier.price_minor > u64::MAX / u64::from(limits.max_tickets_per_request) / 2
        {
            return invalid(format!("tier `{}` price is too large", tier.code));
        }
        if tier.sale_windows.len() > limits.max_sale_windows_per_tier as usize {
            return invalid(format!(
                "tier `{}` has {} sale windows, over the limit of {}",
                tier.code,
                tier.sale_windows.len(),
                limits.max_sale_windows_per_tier
            ));
        }
        if let Some(w) = tier
            .sale_windows
            .iter()
            .find(|w| w.opens_at_ms >= w.closes_at_ms)
        {
            return invalid(format!(
                "tier `{}` sale window opens at {} but closes at {}",
                tier.code, w.opens_at_ms, w.closes_at_ms
            ));
        }
        match &tier.stock {
            Stock::General { capacity } => {
                if *capacity == 0 || *capacity > limits.max_capacity_per_tier {
                    return invalid(format!(
                        "tier `{}` capacity {capacity} is outside 1..={}",
                        tier.code, limits.max_capacity_per_tier
                    ));
                }
            }
            Stock::Seated { sections } => {
                let mut count = 0usize;
                for section in sections {
                    check_string("section name", &section.name, limits)?;
                    for row in &section.rows {
                        check_string("row name", &row.name, limits)?;
                        for number in &row.seats {
                            check_string("seat number", number, limits)?;
                            let seat = SeatRef {
                                section: section.name.clone(),
                                row: row.name.clone(),
                                number: number.clone(),
                            };
                            if !seats.insert(seat.clone()) {
                                return invalid(format!("seat {seat} is listed twice"));
                            }
                            count += 1;
                        }
                    }
                }
                if count == 0 {
                    return invalid(format!("seated tier `{}` has no seats", tier.code));
                }
            }
        }
    }
    if seats.len() > limits.max_seats_per_event as usize {
        return invalid(format!(
            "{} seats, over the limit of {}",
            seats.len(),
            limits.max_seats_per_event
        ));
    }
    Ok(())
}

impl Inventory {
    /// Decides a status change. Draft opens or closes; on sale and paused switch or close; closed
    /// is final. Asking for the current status changes nothing and is not an error.
    pub fn set_status(
        &mut self,
        to: EventStatus,
        now_ms: u64,
    ) -> Result<Decision<EventStatus>, Rejection> {
        use EventStatus::*;
        let from = self.status;
        if from == to {
            return Ok(Decision {
                record: None,
                answer: to,
            });
        }
        let allowed = matches!(
            (from, to),
            (Draft, OnSale)
                | (Draft, Closed)
                | (OnSale, Paused)
                | (OnSale, Closed)
                | (Paused, OnSale)
                | (Paused, Closed)
        );
        if !allowed {
            return Err(Rejection::StatusChange { from, to });
        }
        let record = Record::StatusChanged {
            status: to,
            at_ms: now_ms,
        };
        self.apply(&record);
        Ok(Decision {
            record: Some(record),
            answer: to,
        })
    }
}
