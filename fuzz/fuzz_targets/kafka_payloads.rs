//! The Kafka payloads boxoffice and its adapters consume, decoded from arbitrary bytes and taken
//! as far as their pure code goes. The first byte picks the payload:
//! - 0: `boxoffice.payments.v1` `PaymentResult`, decoded and converted by
//!   `server::convert::payment_result`, as the engine's consumer does;
//! - 1: `boxoffice.orders.v1` `OrderEvent`, decoded as the payment, ticket-file and email adapters
//!   do; a created event's start printed in its zone, a paid order's ticket document built and
//!   its prices printed (the ticket-file adapter's `document`, the email adapter's `money`);
//! - 2: the same, and a paid order's ticket file rendered (slow: a PDF per input).

#![no_main]

use adapters::tickets::document;
use adapters::tickets::render::{self, Paper};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::v1;
use proto::v1::order_event::Change;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 3 {
        0 => {
            if let Ok(r) = v1::PaymentResult::decode(bytes) {
                let _ = server::convert::payment_result(r);
            }
        }
        kind => {
            let Ok(message) = v1::OrderEvent::decode(bytes) else {
                return;
            };
            let change = message.change;
            let event = match &change {
                Some(Change::EventCreated(created)) => created.event.clone(),
                _ => None,
            }
            .unwrap_or_default();
            if let Some(at) = &event.starts_at {
                let ms = at.seconds.saturating_mul(1_000);
                let _ = render::local_start_text(ms, &event.time_zone);
            }
            let order = match change {
                Some(Change::OrderPaid(paid)) => paid.order,
                Some(Change::OrderConfirmed(c)) => c.order,
                Some(Change::OrderCancelled(c)) => c.order,
                Some(Change::OrderRefunded(r)) => r.order,
                _ => None,
            };
            if let Some(order) = order {
                let doc = document(&event, &order, Paper::A4);
                for ticket in &doc.tickets {
                    let _ = render::money(&doc.currency, ticket.price_minor);
                }
                if kind == 2 {
                    let _ = render::render(&doc);
                }
            }
        }
    }
});
