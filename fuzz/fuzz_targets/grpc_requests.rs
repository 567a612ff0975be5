//! Every request message of boxoffice's gRPC services, decoded from arbitrary bytes and converted
//! by `server::convert` as the handlers do; a `CreateEvent` whose shape converts is then checked
//! against the default limits by the engine's `validate_spec`. The first byte picks the message.
//! Nothing may panic; what is refused must be refused with an error.

#![no_main]

use engine::inventory::{EventId, Limits, validate_spec};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use proto::v1;
use uuid::Uuid;

/// The messages in the order of the selector byte; `seeds` writes them in this order too.
const KINDS: u8 = 13;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % KINDS {
        0 => {
            if let Ok(r) = v1::CreateEventRequest::decode(bytes)
                && let Ok(spec) = server::convert::event_spec(r, 900_000)
                && validate_spec(&spec, &Limits::default()).is_ok()
            {
                let event = server::convert::event_to_proto(&spec, spec.status);
                assert_eq!(event.tiers.len(), spec.tiers.len());
            }
        }
        1 => {
            if let Ok(r) = v1::ReserveRequest::decode(bytes) {
                let _ = server::convert::reserve_request(r);
            }
        }
        2 => {
            if let Ok(r) = v1::ReserveStreamRequest::decode(bytes) {
                let _ = server::convert::reserve_request(r.reserve.unwrap_or_default());
            }
        }
        3 => {
            if let Ok(r) = v1::ConfirmRequest::decode(bytes) {
                let _ = server::convert::confirm_request(r);
            }
        }
        4 => {
            if let Ok(r) = v1::ReleaseRequest::decode(bytes) {
                let _ = server::convert::release_request(r);
            }
        }
        5 => {
            if let Ok(r) = v1::CancelOrderRequest::decode(bytes) {
                let _ = server::convert::cancel_order_request(r);
            }
        }
        6 => {
            if let Ok(r) = v1::RefundOrderRequest::decode(bytes) {
                let _ = server::convert::refund_order_request(r);
            }
        }
        7 => {
            if let Ok(r) = v1::SetEventStatusRequest::decode(bytes)
                && server::convert::event_id(&r.event_id).is_ok()
            {
                let _ = server::convert::event_status("status", r.status);
            }
        }
        8 => {
            if let Ok(r) = v1::GetHoldRequest::decode(bytes) {
                let _ = server::convert::event_id(&r.event_id);
                let _ = server::convert::hold_id(&r.hold_id);
            }
        }
        9 => {
            if let Ok(r) = v1::GetOrderRequest::decode(bytes) {
                let _ = server::convert::event_id(&r.event_id);
                let _ = server::convert::order_id(&r.order_id);
            }
        }
        10 => {
            if let Ok(r) = v1::CheckInRequest::decode(bytes)
                && let Ok(event) = server::convert::event_id(&r.event_id)
            {
                let _ = server::convert::scan(event, r.token, r.gate_id, r.scan_id);
            }
        }
        11 => {
            if let Ok(r) = v1::UploadScansRequest::decode(bytes)
                && let Ok(event) = server::convert::event_id(&r.event_id)
            {
                for s in r.scans {
                    let _ = server::convert::scan(event, s.token, s.gate_id, s.scan_id);
                }
            }
        }
        _ => {
            // Read requests that name only an event, and the page token of ListEvents.
            if let Ok(r) = v1::ListEventsRequest::decode(bytes) {
                let _ = server::convert::event_id(&r.page_token);
            }
            if let Ok(r) = v1::GetAvailabilityRequest::decode(bytes) {
                let _ = server::convert::event_id(&r.event_id);
            }
            if let Ok(r) = v1::CheckOutRequest::decode(bytes) {
                let _ = server::convert::scan(EventId(Uuid::nil()), r.token, r.gate_id, r.scan_id);
            }
        }
    }
});
