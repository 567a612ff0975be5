//! Protobuf at the edge: every request is checked and turned into the engine's domain types once,
//! here, and every answer is turned back. A malformed field becomes `INVALID_ARGUMENT` naming the
//! field; the engine never sees generated types. Limits on strings and counts are the engine's
//! (`limits.*`), so they are checked in one place whichever edge a request comes through.

use engine::inventory::{
    self as domain, CancelCause, Currency, EventId, EventSpec, HoldId, OrderId, OrderStatus,
    SeatState,
};
use prost_types::Timestamp;
use proto::v1;
use uuid::Uuid;

use crate::status::{ApiError, quote};

/// Hold TTL of an event whose `default_hold_ttl_seconds` is 0.
pub const DEFAULT_HOLD_TTL_SECONDS: u32 = 600;

fn uuid(field: &str, value: &str) -> Result<Uuid, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid(format!("{field} is required")));
    }
    Uuid::try_parse(value)
        .map_err(|_| ApiError::invalid(format!("{field} `{}` is not a UUID", quote(value))))
}

pub fn event_id(value: &str) -> Result<EventId, ApiError> {
    uuid("event_id", value).map(EventId)
}

pub fn hold_id(value: &str) -> Result<HoldId, ApiError> {
    uuid("hold_id", value).map(HoldId)
}

pub fn order_id(value: &str) -> Result<OrderId, ApiError> {
    uuid("order_id", value).map(OrderId)
}

/// An empty key is no key.
fn idempotency_key(key: String) -> Option<String> {
    (!key.is_empty()).then_some(key)
}

fn timestamp_ms(field: &str, ts: Option<Timestamp>) -> Result<u64, ApiError> {
    let ts = ts.ok_or_else(|| ApiError::invalid(format!("{field} is required")))?;
    if ts.seconds < 0 || !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(ApiError::invalid(format!(
            "{field} must be a valid time after 1970-01-01"
        )));
    }
    (ts.seconds as u64)
        .checked_mul(1_000)
        .map(|ms| ms + ts.nanos as u64 / 1_000_000)
        .ok_or_else(|| ApiError::invalid(format!("{field} is too far in the future")))
}

pub fn timestamp(ms: u64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: (ms / 1_000) as i64,
        nanos: ((ms % 1_000) * 1_000_000) as i32,
    })
}

pub fn event_status(field: &str, value: i32) -> Result<domain::EventStatus, ApiError> {
    match v1::EventStatus::try_from(value) {
        Ok(v1::EventStatus::Draft) => Ok(domain::EventStatus::Draft),
        Ok(v1::EventStatus::OnSale) => Ok(domain::EventStatus::OnSale),
        Ok(v1::EventStatus::Paused) => Ok(domain::EventStatus::Paused),
        Ok(v1::EventStatus::Closed) => Ok(domain::EventStatus::Closed),
        Ok(v1::EventStatus::Unspecified) | Err(_) => Err(ApiError::invalid(format!(
            "{field} must be one of DRAFT, ON_SALE, PAUSED, CLOSED"
        ))),
    }
}

pub fn status_to_proto(status: domain::EventStatus) -> v1::EventStatus {
    match status {
        domain::EventStatus::Draft => v1::EventStatus::Draft,
        domain::EventStatus::OnSale => v1::EventStatus::OnSale,
        domain::EventStatus::Paused => v1::EventStatus::Paused,
        domain::EventStatus::Closed => v1::EventStatus::Closed,
    }
}

/// Checks a `CreateEventRequest`'s shape; the engine then checks its contents against the limits.
pub fn event_spec(
    request: v1::CreateEventRequest,
    default_payment_ttl_ms: u64,
) -> Result<EventSpec, ApiError> {
    let id = if request.event_id.is_empty() {
        EventId(Uuid::now_v7())
    } else {
        event_id(&request.event_id)?
    };
    let status = if request.status == v1::EventStatus::Unspecified as i32 {
        domain::EventStatus::Draft
    } else {
        event_status("status", request.status)?
    };
    let currency = Currency::parse(&request.currency).ok_or_else(|| {
        ApiError::invalid(format!(
            "currency `{}` is not an ISO 4217 code such as EUR",
            quote(&request.currency)
        ))
    })?;
    let ttl_seconds = match request.default_hold_ttl_seconds {
        0 => DEFAULT_HOLD_TTL_SECONDS,
        s => s,
    };
    let tiers = request
        .tiers
        .into_iter()
        .enumerate()
        .map(|(i, t)| tier(i, t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EventSpec {
        id,
        name: request.name,
        venue: request.venue,
        starts_at_ms: timestamp_ms("starts_at", request.starts_at)?,
        status,
        currency,
        customer_limit: request.customer_limit,
        hold_ttl_ms: u64::from(ttl_seconds) * 1_000,
        payment_ttl_ms: match request.payment_ttl_seconds {
            0 => default_payment_ttl_ms,
            s => u64::from(s) * 1_000,
        },
        tiers,
        time_zone: if request.time_zone.is_empty() {
            "UTC".into()
        } else {
            request.time_zone
        },
        allow_reentry: request.allow_reentry,
    })
}

fn tier(index: usize, t: v1::Tier) -> Result<domain::TierSpec, ApiError> {
    let stock = match t.stock {
        Some(v1::tier::Stock::GeneralAdmission(ga)) => domain::Stock::General {
            capacity: ga.capacity,
        },
        Some(v1::tier::Stock::SeatMap(map)) => domain::Stock::Seated {
            sections: map
                .sections
                .into_iter()
                .map(|s| domain::SectionSpec {
                    name: s.name,
                    rows: s
                        .rows
                        .into_iter()
                        .map(|r| domain::RowSpec {
                            name: r.name,
                            seats: r.seats,
                        })
                        .collect(),
                })
                .collect(),
        },
        None => {
            return Err(ApiError::invalid(format!(
                "tiers[{index}] needs general_admission or seat_map"
            )));
        }
    };
    let sale_windows = t
        .sale_windows
        .into_iter()
        .enumerate()
        .map(|(w, window)| {
            Ok(domain::SaleWindow {
                opens_at_ms: timestamp_ms(
                    &format!("tiers[{index}].sale_windows[{w}].opens_at"),
                    window.opens_at,
                )?,
                closes_at_ms: timestamp_ms(
                    &format!("tiers[{index}].sale_windows[{w}].closes_at"),
                    window.closes_at,
                )?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(domain::TierSpec {
        code: t.code,
        name: t.name,
        price_minor: t.price_minor,
        fee_minor: t.fee_minor,
        max_per_order: t.max_per_order,
        sale_windows,
        stock,
    })
}

pub fn event_to_proto(spec: &EventSpec, status: domain::EventStatus) -> v1::Event {
    v1::Event {
        event_id: spec.id.to_string(),
        name: spec.name.clone(),
        venue: spec.venue.clone(),
        starts_at: timestamp(spec.starts_at_ms),
        status: status_to_proto(status) as i32,
        currency: spec.currency.to_string(),
        customer_limit: spec.customer_limit,
        default_hold_ttl_seconds: (spec.hold_ttl_ms / 1_000) as u32,
        payment_ttl_seconds: (spec.payment_ttl_ms / 1_000) as u32,
        time_zone: spec.time_zone.clone(),
        allow_reentry: spec.allow_reentry,
        tiers: spec
            .tiers
            .iter()
            .map(|t| v1::Tier {
                code: t.code.clone(),
                name: t.name.clone(),
                price_minor: t.price_minor,
                fee_minor: t.fee_minor,
                max_per_order: t.max_per_order,
                sale_windows: t
                    .sale_windows
                    .iter()
                    .map(|w| v1::SaleWindow {
                        opens_at: timestamp(w.opens_at_ms),
                        closes_at: timestamp(w.closes_at_ms),
                    })
                    .collect(),
                stock: Some(match &t.stock {
                    domain::Stock::General { capacity } => {
                        v1::tier::Stock::GeneralAdmission(v1::GeneralAdmission {
                            capacity: *capacity,
                        })
                    }
                    domain::Stock::Seated { sections } => v1::tier::Stock::SeatMap(v1::SeatMap {
                        sections: sections
                            .iter()
                            .map(|s| v1::Section {
                                name: s.name.clone(),
                                rows: s
                                    .rows
                                    .iter()
                                    .map(|r| v1::Row {
                                        name: r.name.clone(),
                                        seats: r.seats.clone(),
                                    })
                                    .collect(),
                            })
                            .collect(),
                    }),
                }),
            })
            .collect(),
    }
}

pub fn tiers_to_proto(tiers: &[domain::TierAvailability]) -> Vec<v1::TierAvailability> {
    tiers
        .iter()
        .map(|t| v1::TierAvailability {
            tier_code: t.code.clone(),
            capacity: t.capacity,
            available: t.available,
            held: t.held,
            sold: t.sold,
        })
        .collect()
}

pub fn summary_to_proto(s: &domain::EventSummary) -> v1::EventSummary {
    v1::EventSummary {
        event_id: s.id.to_string(),
        name: s.name.clone(),
        venue: s.venue.clone(),
        starts_at: timestamp(s.starts_at_ms),
        status: status_to_proto(s.status) as i32,
        tiers: tiers_to_proto(&s.tiers),
        open_holds: s.open_holds,
        orders: s.orders,
    }
}

fn seat(s: v1::Seat) -> domain::SeatRef {
    domain::SeatRef {
        section: s.section,
        row: s.row,
        number: s.number,
    }
}

fn seat_to_proto(s: &domain::SeatRef) -> v1::Seat {
    v1::Seat {
        section: s.section.clone(),
        row: s.row.clone(),
        number: s.number.clone(),
    }
}

pub fn seats_to_proto(seats: &[domain::SeatAvailability]) -> Vec<v1::SeatAvailability> {
    seats
        .iter()
        .map(|s| v1::SeatAvailability {
            seat: Some(seat_to_proto(&s.seat)),
            tier_code: s.tier.clone(),
            state: match s.state {
                SeatState::Free => v1::SeatState::Free,
                SeatState::Held => v1::SeatState::Held,
                SeatState::Sold => v1::SeatState::Sold,
            } as i32,
        })
        .collect()
}

/// A `Reserve` as the engine takes it, and the event it goes to.
pub fn reserve_request(
    r: v1::ReserveRequest,
) -> Result<(EventId, domain::ReserveRequest), ApiError> {
    let event = event_id(&r.event_id)?;
    let items = r
        .items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item.selection {
            Some(v1::reserve_item::Selection::Quantity(quantity)) => {
                Ok(domain::ReserveItem::General {
                    tier: item.tier_code,
                    quantity,
                })
            }
            Some(v1::reserve_item::Selection::Seats(list)) => Ok(domain::ReserveItem::Seats {
                tier: item.tier_code,
                seats: list.seats.into_iter().map(seat).collect(),
            }),
            Some(v1::reserve_item::Selection::BestAvailable(quantity)) => {
                Ok(domain::ReserveItem::BestAvailable {
                    tier: item.tier_code,
                    quantity,
                })
            }
            None => Err(ApiError::invalid(format!(
                "items[{i}] needs one of quantity, seats or best_available"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        event,
        domain::ReserveRequest {
            customer: r.customer_id,
            items,
            hold_ttl_ms: r.hold_ttl_seconds.map(|s| u64::from(s) * 1_000),
            idempotency_key: idempotency_key(r.idempotency_key),
        },
    ))
}

pub fn confirm_request(
    r: v1::ConfirmRequest,
) -> Result<(EventId, domain::ConfirmRequest), ApiError> {
    let event = event_id(&r.event_id)?;
    let hold_id = hold_id(&r.hold_id)?;
    let payment = r
        .payment
        .ok_or_else(|| ApiError::invalid("payment is required"))?;
    if payment.reference.is_empty() {
        return Err(ApiError::invalid("payment.reference is required"));
    }
    Ok((
        event,
        domain::ConfirmRequest {
            hold_id,
            payment_ref: payment.reference,
            idempotency_key: idempotency_key(r.idempotency_key),
            // Checked by the engine (`check_contact`), as every other limit.
            contact: r.contact.map(|c| domain::Contact {
                email: c.email,
                name: c.name,
                language: c.language,
            }),
        },
    ))
}

pub fn release_request(
    r: v1::ReleaseRequest,
) -> Result<(EventId, domain::ReleaseRequest), ApiError> {
    Ok((
        event_id(&r.event_id)?,
        domain::ReleaseRequest {
            hold_id: hold_id(&r.hold_id)?,
            idempotency_key: idempotency_key(r.idempotency_key),
        },
    ))
}

pub fn cancel_order_request(
    r: v1::CancelOrderRequest,
) -> Result<(EventId, domain::CancelOrderRequest), ApiError> {
    Ok((
        event_id(&r.event_id)?,
        domain::CancelOrderRequest {
            order_id: order_id(&r.order_id)?,
            reason: r.reason,
            idempotency_key: idempotency_key(r.idempotency_key),
        },
    ))
}

pub fn refund_order_request(
    r: v1::RefundOrderRequest,
) -> Result<(EventId, domain::RefundOrderRequest), ApiError> {
    Ok((
        event_id(&r.event_id)?,
        domain::RefundOrderRequest {
            order_id: order_id(&r.order_id)?,
            reason: r.reason,
            idempotency_key: idempotency_key(r.idempotency_key),
        },
    ))
}

/// A payment result from `kafka.payments_topic`; the engine checks its strings against the limits.
pub fn payment_result(r: v1::PaymentResult) -> Result<(EventId, domain::PaymentResult), ApiError> {
    use v1::payment_result::Outcome;
    let outcome = match r.outcome {
        Some(Outcome::Approved(a)) => domain::PaymentOutcome::Approved {
            provider_ref: a.provider_reference,
            amount_minor: a.amount_minor,
            // Providers differ in case ("eur"); the code is the same.
            currency: Currency::parse(&a.currency.to_ascii_uppercase()).ok_or_else(|| {
                ApiError::invalid(format!(
                    "approved.currency `{}` is not an ISO 4217 code such as EUR",
                    quote(&a.currency)
                ))
            })?,
        },
        Some(Outcome::Declined(d)) => domain::PaymentOutcome::Declined { reason: d.reason },
        None => {
            return Err(ApiError::invalid(
                "outcome is required: approved or declined",
            ));
        }
    };
    Ok((
        event_id(&r.event_id)?,
        domain::PaymentResult {
            order_id: order_id(&r.order_id)?,
            provider: r.provider,
            outcome,
        },
    ))
}

fn lines_to_proto(lines: &[domain::Line]) -> (Vec<v1::Line>, u64, u64) {
    let mut subtotal = 0u64;
    let mut fees = 0u64;
    let lines = lines
        .iter()
        .map(|l| {
            let quantity = u64::from(l.quantity);
            subtotal = subtotal.saturating_add(l.unit_price_minor.saturating_mul(quantity));
            fees = fees.saturating_add(l.unit_fee_minor.saturating_mul(quantity));
            v1::Line {
                tier_code: l.tier.to_string(),
                quantity: l.quantity,
                seats: l.seats.iter().map(seat_to_proto).collect(),
                unit_price_minor: l.unit_price_minor,
                unit_fee_minor: l.unit_fee_minor,
            }
        })
        .collect();
    (lines, subtotal, fees)
}

pub fn hold_to_proto(h: &domain::Hold) -> v1::Hold {
    let (lines, subtotal_minor, fees_minor) = lines_to_proto(&h.lines);
    v1::Hold {
        hold_id: h.id.to_string(),
        event_id: h.event_id.to_string(),
        customer_id: h.customer.to_string(),
        lines,
        currency: h.currency.to_string(),
        subtotal_minor,
        fees_minor,
        total_minor: subtotal_minor.saturating_add(fees_minor),
        created_at: timestamp(h.created_at_ms),
        expires_at: timestamp(h.expires_at_ms),
    }
}

pub fn order_to_proto(o: &domain::Order) -> v1::Order {
    let (lines, _, _) = lines_to_proto(&o.lines);
    v1::Order {
        order_id: o.id.to_string(),
        event_id: o.event_id.to_string(),
        hold_id: o.hold_id.to_string(),
        customer_id: o.customer.to_string(),
        lines,
        currency: o.currency.to_string(),
        subtotal_minor: o.subtotal_minor,
        fees_minor: o.fees_minor,
        total_minor: o.total_minor,
        payment_reference: o.payment_ref.clone(),
        contact: o.contact.as_ref().map(|c| v1::Contact {
            email: c.email.clone(),
            name: c.name.clone(),
            language: c.language.clone(),
        }),
        status: order_status_to_proto(o.status) as i32,
        created_at: timestamp(o.created_at_ms),
        updated_at: timestamp(o.updated_at_ms),
        payment_due_at: timestamp(o.payment_due_at_ms),
        payment: o.payment.as_ref().map(|p| v1::OrderPayment {
            provider: p.provider.clone(),
            provider_reference: p.provider_ref.clone(),
            amount_minor: p.amount_minor,
            paid_at: timestamp(p.paid_at_ms),
        }),
        tickets: o
            .tickets
            .iter()
            .map(|t| v1::Ticket {
                ticket_id: t.id.to_string(),
                tier_code: t.tier.to_string(),
                seat: t.seat.as_ref().map(seat_to_proto),
                holder: t.holder.to_string(),
                token: t.token.clone(),
            })
            .collect(),
        cancel_cause: match o.cancelled.as_ref().map(|(c, _)| c) {
            None => v1::CancelCause::Unspecified,
            Some(CancelCause::Requested) => v1::CancelCause::Requested,
            Some(CancelCause::PaymentDeclined) => v1::CancelCause::PaymentDeclined,
            Some(CancelCause::PaymentTimeout) => v1::CancelCause::PaymentTimeout,
        } as i32,
        cancel_reason: o
            .cancelled
            .as_ref()
            .map(|(_, r)| r.clone())
            .unwrap_or_default(),
        refunded_minor: o.refunded_minor,
    }
}

pub fn order_status_to_proto(status: OrderStatus) -> v1::OrderStatus {
    match status {
        OrderStatus::PendingPayment => v1::OrderStatus::PendingPayment,
        OrderStatus::Paid => v1::OrderStatus::Paid,
        OrderStatus::Cancelled => v1::OrderStatus::Cancelled,
        OrderStatus::Refunded => v1::OrderStatus::Refunded,
    }
}

/// The status as the proto enum names it, for error metadata.
pub fn order_status_name(status: OrderStatus) -> &'static str {
    order_status_to_proto(status).as_str_name()
}

/// An outbox entry as the `OrderEvent` published for it.
pub fn order_event_to_proto(entry: &engine::outbox::OutboxEntry) -> v1::OrderEvent {
    use engine::outbox::Change;
    use v1::order_event::Change as Proto;
    let change = match &entry.change {
        Change::EventCreated { spec } => Proto::EventCreated(v1::EventCreated {
            event: Some(event_to_proto(spec, spec.status)),
        }),
        Change::EventStatusChanged { status } => {
            Proto::EventStatusChanged(v1::EventStatusChanged {
                status: status_to_proto(*status) as i32,
            })
        }
        Change::OrderConfirmed { order } => Proto::OrderConfirmed(v1::OrderConfirmed {
            order: Some(order_to_proto(order)),
        }),
        Change::OrderCancelled { order, reason } => Proto::OrderCancelled(v1::OrderCancelled {
            order: Some(order_to_proto(order)),
            reason: reason.clone(),
        }),
        Change::OrderPaid { order } => Proto::OrderPaid(v1::OrderPaid {
            order: Some(order_to_proto(order)),
        }),
        Change::OrderRefunded {
            order,
            amount_minor,
            reason,
        } => Proto::OrderRefunded(v1::OrderRefunded {
            order: Some(order_to_proto(order)),
            amount_minor: *amount_minor,
            reason: reason.clone(),
        }),
        Change::RefundRequested {
            order,
            provider,
            provider_ref,
            amount_minor,
            why,
        } => Proto::RefundRequested(v1::RefundRequested {
            order: Some(order_to_proto(order)),
            provider: provider.clone(),
            provider_reference: provider_ref.clone(),
            amount_minor: *amount_minor,
            why: why.clone(),
        }),
    };
    v1::OrderEvent {
        id: entry.id.to_string(),
        event_id: entry.event_id.0.to_string(),
        sequence: entry.seq,
        time: timestamp(entry.at_ms),
        change: Some(change),
    }
}

/// The CloudEvents type of an outbox entry's change.
pub fn order_event_type(change: &engine::outbox::Change) -> &'static str {
    use engine::outbox::Change;
    match change {
        Change::EventCreated { .. } => "boxoffice.event.created.v1",
        Change::EventStatusChanged { .. } => "boxoffice.event.status_changed.v1",
        Change::OrderConfirmed { .. } => "boxoffice.order.confirmed.v1",
        Change::OrderCancelled { .. } => "boxoffice.order.cancelled.v1",
        Change::OrderPaid { .. } => "boxoffice.order.paid.v1",
        Change::OrderRefunded { .. } => "boxoffice.order.refunded.v1",
        Change::RefundRequested { .. } => "boxoffice.order.refund_requested.v1",
    }
}

/// A scan's token and ids, checked: the token decodes and names `event`. Refused with
/// INVALID_TICKET otherwise (ticket_id as read, if it could be).
pub fn scan(
    event: EventId,
    token: String,
    gate: String,
    scan_id: String,
) -> Result<engine::inventory::Scan, ApiError> {
    let invalid = |why: String| {
        ApiError::new(
            tonic::Code::InvalidArgument,
            "INVALID_TICKET",
            format!("the token is not a ticket of this event: {why}"),
        )
    };
    let (ticket_id, named) =
        engine::tickets::read_ids(&token).map_err(|e| invalid(e.to_string()))?;
    if named != event {
        return Err(invalid(format!("it names event {named}")).with("ticket_id", ticket_id));
    }
    Ok(engine::inventory::Scan {
        ticket_id,
        token,
        gate,
        scan_id,
    })
}

pub fn admission_to_proto(a: &engine::inventory::Admission) -> v1::Admission {
    v1::Admission {
        ticket_id: a.ticket_id.to_string(),
        gate_id: a.gate.clone(),
        scan_id: a.scan_id.clone(),
        checked_in_at: timestamp(a.at_ms),
    }
}

pub fn check_in_stats_to_proto(s: &engine::inventory::CheckInStats) -> v1::GetCheckInStatsResponse {
    v1::GetCheckInStatsResponse {
        tickets_live: s.tickets_live,
        admitted: s.admitted,
        conflicts: s.conflicts,
        exits: s.exits,
        inside: s.inside,
        gates: s
            .gates
            .iter()
            .map(|g| v1::GateStats {
                gate_id: g.gate.clone(),
                admitted: g.admitted,
                conflicts: g.conflicts,
                exits: g.exits,
            })
            .collect(),
    }
}

pub fn exit_to_proto(e: &engine::inventory::Exit) -> v1::Exit {
    v1::Exit {
        ticket_id: e.ticket_id.to_string(),
        gate_id: e.gate.clone(),
        scan_id: e.scan_id.clone(),
        checked_out_at: timestamp(e.at_ms),
    }
}
