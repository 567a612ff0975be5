//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/` (the directory given
//! as the only argument): a real session of one event (holds placed, released, expired and
//! confirmed, orders paid, cancelled and refunded, tickets let in) gives the log segments, the
//! records, the snapshots and the order events; the requests, payment results and webhooks are
//! the ones such a session takes. The same files every run (ticket tokens are signed with the
//! fuzz targets' fixed key, `TICKET_KEY_HEX`), except the snapshots' bytes: an event's hash maps
//! encode in an order seeded per process.
//!
//! Run: `cargo run --manifest-path fuzz/Cargo.toml -p boxoffice-fuzz-seeds -- fuzz/corpus`.

use std::path::{Path, PathBuf};

use engine::inventory::{
    CancelOrderRequest, ConfirmRequest, Contact, Currency, EventId, EventSpec, EventStatus, HoldId,
    Inventory, Limits, OrderId, PaymentOutcome, PaymentResult, Record, RefundOrderRequest,
    ReleaseRequest, ReserveItem, ReserveRequest, RowSpec, Scan, SeatRef, SectionSpec, Stock,
    TicketClaims, TicketId, TicketIssuer, TierSpec,
};
use engine::outbox::OutboxEntry;
use engine::tickets::TicketKeys;
use engine::wal;
use prost::Message;
use proto::v1;
use uuid::Uuid;

/// The event of every log and snapshot seed; the log targets recover it under this id.
const EVENT: EventId = EventId(Uuid::from_u128(0xb0c5_0ff1_ce00_0000_0000_0000_0000_0001));
/// The fuzz targets' ticket key (`fuzz_targets/inventory_requests.rs`), so that tokens here are
/// the ones the target issues.
const TICKET_KEY_HEX: &str = "f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022f022";
/// The webhook target's secrets and clock (`fuzz_targets/webhook.rs`).
const WEBHOOK_SECRETS: [&str; 2] = ["whsec_fuzz_0123456789abcdef", "whsec_fuzz_rotated_fedcba98"];
const WEBHOOK_NOW_S: u64 = 1_780_000_000;
const T0: u64 = 1_780_000_000_000;

struct Issuer {
    keys: TicketKeys,
    next: u128,
}

impl TicketIssuer for Issuer {
    fn ticket_id(&mut self) -> TicketId {
        self.next += 1;
        TicketId(Uuid::from_u128(
            0x71c4_e700_0000_0000_0000_0000_0000_0000 + self.next,
        ))
    }

    fn sign(&self, claims: &TicketClaims) -> String {
        self.keys.sign(claims)
    }
}

fn spec() -> EventSpec {
    EventSpec {
        id: EVENT,
        name: "Night show".into(),
        venue: "Hall".into(),
        starts_at_ms: T0 + 86_400_000,
        status: EventStatus::OnSale,
        currency: Currency::parse("EUR").expect("a currency"),
        customer_limit: Some(8),
        hold_ttl_ms: 60_000,
        payment_ttl_ms: 900_000,
        time_zone: "Europe/Lisbon".into(),
        allow_reentry: true,
        tiers: vec![
            TierSpec {
                code: "GA".into(),
                name: "Standing".into(),
                price_minor: 2_500,
                fee_minor: 150,
                max_per_order: 4,
                sale_windows: vec![],
                stock: Stock::General { capacity: 10 },
            },
            TierSpec {
                code: "SEAT".into(),
                name: "Seated".into(),
                price_minor: 4_000,
                fee_minor: 200,
                max_per_order: 6,
                sale_windows: vec![],
                stock: Stock::Seated {
                    sections: vec![SectionSpec {
                        name: "A".into(),
                        rows: ["1", "2"]
                            .iter()
                            .map(|r| RowSpec {
                                name: (*r).into(),
                                seats: (1..=4).map(|n| n.to_string()).collect(),
                            })
                            .collect(),
                    }],
                },
            },
        ],
    }
}

fn hold(n: u128) -> HoldId {
    HoldId(Uuid::from_u128(
        0x401d_0000_0000_0000_0000_0000_0000_0000 + n,
    ))
}

fn order(n: u128) -> OrderId {
    OrderId(Uuid::from_u128(
        0x0bde_0000_0000_0000_0000_0000_0000_0000 + n,
    ))
}

fn seat(row: &str, number: &str) -> SeatRef {
    SeatRef {
        section: "A".into(),
        row: row.into(),
        number: number.into(),
    }
}

fn reserve(customer: &str, items: Vec<ReserveItem>, key: Option<&str>) -> ReserveRequest {
    ReserveRequest {
        customer: customer.into(),
        items,
        hold_ttl_ms: None,
        idempotency_key: key.map(str::to_string),
    }
}

fn confirm(hold_id: HoldId, contact: bool) -> ConfirmRequest {
    ConfirmRequest {
        hold_id,
        payment_ref: format!("test:approve:{}", hold_id.0.as_u128() & 0xff),
        idempotency_key: Some(format!("confirm-{hold_id}")),
        contact: contact.then(|| Contact {
            email: "ana@example.com".into(),
            name: "Ana Lima".into(),
            language: "pt".into(),
        }),
    }
}

fn approved(order_id: OrderId, amount_minor: u64) -> PaymentResult {
    PaymentResult {
        order_id,
        provider: "test".into(),
        outcome: PaymentOutcome::Approved {
            provider_ref: format!("ch_{}", order_id.0.as_u128() & 0xff),
            amount_minor,
            currency: Currency::parse("EUR").expect("a currency"),
        },
    }
}

/// What a session leaves: every record in order, the state after each, the outbox entries.
struct Session {
    records: Vec<Record>,
    states: Vec<Inventory>,
    entries: Vec<OutboxEntry>,
    tokens: Vec<(TicketId, String)>,
}

fn issuer(keys_dir: &Path) -> Issuer {
    std::fs::write(
        keys_dir.join("ticket-key-1.ed25519"),
        format!("{TICKET_KEY_HEX}\n"),
    )
    .expect("the key written");
    Issuer {
        keys: TicketKeys::open(keys_dir).expect("ticket keys"),
        next: 0,
    }
}

fn session(keys_dir: &Path) -> Session {
    let limits = Limits::default();
    let mut issuer = issuer(keys_dir);
    let (mut inv, created) = Inventory::create(spec(), &limits).expect("a valid spec");
    let mut s = Session {
        records: vec![],
        states: vec![],
        entries: vec![],
        tokens: vec![],
    };
    let log = |inv: &Inventory, record: Option<Record>, now: u64, s: &mut Session| {
        if let Some(record) = record {
            s.entries.extend(OutboxEntry::after(inv, &record, now));
            s.records.push(record);
            s.states.push(inv.clone());
        }
    };
    log(&inv, Some(created), T0, &mut s);
    let ga = |q| ReserveItem::General {
        tier: "GA".into(),
        quantity: q,
    };
    let r = inv.reserve(
        &reserve("ana", vec![ga(2)], Some("k1")),
        hold(1),
        T0,
        &limits,
    );
    log(&inv, r.expect("reserve").record, T0, &mut s);
    let seats = ReserveItem::Seats {
        tier: "SEAT".into(),
        seats: vec![seat("1", "1"), seat("1", "2")],
    };
    let r = inv.reserve(
        &reserve("zoë", vec![seats, ga(1)], None),
        hold(2),
        T0 + 10,
        &limits,
    );
    log(&inv, r.expect("reserve").record, T0 + 10, &mut s);
    let best = ReserveItem::BestAvailable {
        tier: "SEAT".into(),
        quantity: 3,
    };
    let r = inv.reserve(
        &reserve("li", vec![best], Some("k3")),
        hold(3),
        T0 + 20,
        &limits,
    );
    log(&inv, r.expect("reserve").record, T0 + 20, &mut s);
    let r = inv.reserve(
        &reserve("ana", vec![ga(1)], None),
        hold(4),
        T0 + 30,
        &limits,
    );
    log(&inv, r.expect("reserve").record, T0 + 30, &mut s);
    let release = ReleaseRequest {
        hold_id: hold(4),
        idempotency_key: Some("r4".into()),
    };
    let r = inv.release(&release, T0 + 40, &limits);
    log(&inv, r.expect("release").record, T0 + 40, &mut s);
    for (h, o, contact) in [(1, 1, true), (2, 2, false), (3, 3, true)] {
        let r = inv.confirm(&confirm(hold(h), contact), order(o), T0 + 50, &limits);
        log(&inv, r.expect("confirm").record, T0 + 50, &mut s);
    }
    let r = inv.reserve(&reserve("bo", vec![ga(1)], None), hold(5), T0 + 60, &limits);
    log(&inv, r.expect("reserve").record, T0 + 60, &mut s);
    let expired = inv.expire_due(T0 + 120_000, 64);
    log(&inv, expired, T0 + 120_000, &mut s);
    let now = T0 + 130_000;
    for (o, amount) in [(1, 5_300), (2, 11_050)] {
        let r = inv.settle_payment(&approved(order(o), amount), now, &limits, &mut issuer);
        log(&inv, r.expect("settle").record, now, &mut s);
    }
    let cancel = CancelOrderRequest {
        order_id: order(3),
        reason: "changed plans".into(),
        idempotency_key: Some("c3".into()),
    };
    let r = inv.cancel_order(&cancel, now + 1, &limits);
    log(&inv, r.expect("cancel").record, now + 1, &mut s);
    // Money for the cancelled order: it cannot pay it, so a refund is requested.
    let r = inv.settle_payment(&approved(order(3), 12_600), now + 2, &limits, &mut issuer);
    log(&inv, r.expect("settle").record, now + 2, &mut s);
    let paid = inv.order(order(2)).expect("paid order");
    for (i, ticket) in paid.tickets.iter().enumerate() {
        s.tokens.push((ticket.id, ticket.token.clone()));
        let scan = Scan {
            ticket_id: ticket.id,
            token: ticket.token.clone(),
            gate: format!("gate-{i}"),
            scan_id: format!("scan-{i}"),
        };
        let r = inv.check_in(&scan, now + 10);
        log(&inv, r.expect("check in").record, now + 10, &mut s);
    }
    let refund = RefundOrderRequest {
        order_id: order(1),
        reason: "duplicate".into(),
        idempotency_key: Some("f1".into()),
    };
    let r = inv.refund_order(&refund, now + 20, &limits);
    log(&inv, r.expect("refund").record, now + 20, &mut s);
    let r = inv.set_status(EventStatus::Paused, now + 30);
    log(&inv, r.expect("status").record, now + 30, &mut s);
    inv.audit();
    s
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn segment(records: &[Record]) -> Vec<u8> {
    let mut frames = Vec::new();
    wal::encode_records(records, &mut frames);
    wal::finish_segment(records.len() as u32, &frames)
}

fn logs(dir: &Path, s: &Session) {
    // log_segment: the whole log as one segment, and its first few records.
    write(dir, "log_segment", "whole-log", &segment(&s.records));
    write(
        dir,
        "log_segment",
        "created-and-hold",
        &segment(&s.records[..2]),
    );
    // log_records: records as length-prefixed chunks, per segment sizes 1, 3 and 8.
    let chunks = |records: &[Record], per_segment: u8| {
        let mut out = vec![per_segment];
        for record in records {
            let bytes = postcard::to_stdvec(record).expect("a record encodes");
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    };
    write(dir, "log_records", "whole-log-1", &chunks(&s.records, 0));
    write(dir, "log_records", "whole-log-3", &chunks(&s.records, 2));
    write(dir, "log_records", "whole-log-8", &chunks(&s.records, 7));
    for n in [2, 5, 9] {
        let name = format!("first-{n}");
        write(dir, "log_records", &name, &chunks(&s.records[..n], 3));
    }
    // snapshot: `lsn` then the state, at a few points; and one whole file, crc and all.
    for (i, state) in s.states.iter().enumerate().step_by(4) {
        let mut bytes = state.applied().to_le_bytes().to_vec();
        bytes.extend(postcard::to_stdvec(state).expect("a state encodes"));
        write(dir, "snapshot", &format!("state-after-{}", i + 1), &bytes);
    }
    let last = s.states.last().expect("a state");
    let snapshots = tempfile::tempdir().expect("a temporary directory");
    let files = wal::SnapshotDir::open(snapshots.path()).expect("snapshot directory");
    let state = postcard::to_stdvec(last).expect("a state encodes");
    files
        .write(EVENT, last.applied(), &state)
        .expect("snapshot written");
    let file = std::fs::read(snapshots.path().join(format!("{EVENT}.snapshot"))).expect("read");
    write(dir, "snapshot", "file", &file);
}

fn requests(dir: &Path, s: &Session) {
    let seed = |kind: u8, name: &str, message: &dyn Fn() -> Vec<u8>| {
        let mut bytes = vec![kind];
        bytes.extend(message());
        write(dir, "grpc_requests", name, &bytes);
    };
    let spec = spec();
    let event = server::convert::event_to_proto(&spec, spec.status);
    let create = v1::CreateEventRequest {
        event_id: event.event_id.clone(),
        name: event.name.clone(),
        venue: event.venue.clone(),
        starts_at: event.starts_at,
        status: event.status,
        currency: event.currency.clone(),
        customer_limit: event.customer_limit,
        default_hold_ttl_seconds: event.default_hold_ttl_seconds,
        tiers: event.tiers.clone(),
        payment_ttl_seconds: event.payment_ttl_seconds,
        time_zone: event.time_zone.clone(),
        allow_reentry: event.allow_reentry,
    };
    seed(0, "create-event", &|| create.encode_to_vec());
    let id = EVENT.to_string();
    let item = |tier: &str, selection| v1::ReserveItem {
        tier_code: tier.into(),
        selection: Some(selection),
    };
    use v1::reserve_item::Selection;
    let reserve = v1::ReserveRequest {
        event_id: id.clone(),
        customer_id: "ana".into(),
        items: vec![
            item("GA", Selection::Quantity(2)),
            item("SEAT", Selection::BestAvailable(2)),
            item(
                "SEAT",
                Selection::Seats(v1::SeatList {
                    seats: vec![v1::Seat {
                        section: "A".into(),
                        row: "2".into(),
                        number: "4".into(),
                    }],
                }),
            ),
        ],
        hold_ttl_seconds: Some(120),
        idempotency_key: "k1".into(),
    };
    seed(1, "reserve", &|| reserve.encode_to_vec());
    let stream = v1::ReserveStreamRequest {
        request_id: 7,
        reserve: Some(reserve.clone()),
    };
    seed(2, "reserve-stream", &|| stream.encode_to_vec());
    let confirm = v1::ConfirmRequest {
        event_id: id.clone(),
        hold_id: hold(1).to_string(),
        payment: Some(v1::Payment {
            reference: "test:approve".into(),
        }),
        idempotency_key: "c1".into(),
        contact: Some(v1::Contact {
            email: "ana@example.com".into(),
            name: "Ana Lima".into(),
            language: "pt".into(),
        }),
    };
    seed(3, "confirm", &|| confirm.encode_to_vec());
    let release = v1::ReleaseRequest {
        event_id: id.clone(),
        hold_id: hold(1).to_string(),
        idempotency_key: "r1".into(),
    };
    seed(4, "release", &|| release.encode_to_vec());
    let cancel = v1::CancelOrderRequest {
        event_id: id.clone(),
        order_id: order(1).to_string(),
        reason: "changed plans".into(),
        idempotency_key: "x1".into(),
    };
    seed(5, "cancel-order", &|| cancel.encode_to_vec());
    let refund = v1::RefundOrderRequest {
        event_id: id.clone(),
        order_id: order(1).to_string(),
        reason: "duplicate".into(),
        idempotency_key: "f1".into(),
    };
    seed(6, "refund-order", &|| refund.encode_to_vec());
    let status = v1::SetEventStatusRequest {
        event_id: id.clone(),
        status: v1::EventStatus::Paused as i32,
    };
    seed(7, "set-event-status", &|| status.encode_to_vec());
    let get_hold = v1::GetHoldRequest {
        event_id: id.clone(),
        hold_id: hold(2).to_string(),
    };
    seed(8, "get-hold", &|| get_hold.encode_to_vec());
    let get_order = v1::GetOrderRequest {
        event_id: id.clone(),
        order_id: order(2).to_string(),
    };
    seed(9, "get-order", &|| get_order.encode_to_vec());
    let (_, token) = s.tokens.first().expect("a ticket").clone();
    let check_in = v1::CheckInRequest {
        event_id: id.clone(),
        token: token.clone(),
        gate_id: "north".into(),
        scan_id: "s1".into(),
    };
    seed(10, "check-in", &|| check_in.encode_to_vec());
    let upload = v1::UploadScansRequest {
        event_id: id.clone(),
        scans: s
            .tokens
            .iter()
            .enumerate()
            .map(|(i, (_, token))| v1::OfflineScan {
                token: token.clone(),
                gate_id: "south".into(),
                scan_id: format!("o{i}"),
                scanned_at: Some(prost_types::Timestamp {
                    seconds: 1_780_000_000,
                    nanos: 0,
                }),
            })
            .collect(),
    };
    seed(11, "upload-scans", &|| upload.encode_to_vec());
    let availability = v1::GetAvailabilityRequest {
        event_id: id.clone(),
        include_seats: true,
        seats_tier_code: "SEAT".into(),
    };
    seed(12, "get-availability", &|| availability.encode_to_vec());
}

fn payloads(dir: &Path, s: &Session) {
    let approved = v1::PaymentResult {
        event_id: EVENT.to_string(),
        order_id: order(1).to_string(),
        provider: "test".into(),
        outcome: Some(v1::payment_result::Outcome::Approved(v1::PaymentApproved {
            provider_reference: "ch_1".into(),
            amount_minor: 5_300,
            currency: "EUR".into(),
        })),
    };
    let declined = v1::PaymentResult {
        outcome: Some(v1::payment_result::Outcome::Declined(v1::PaymentDeclined {
            reason: "card declined".into(),
        })),
        ..approved.clone()
    };
    for (name, message) in [
        ("payment-approved", &approved),
        ("payment-declined", &declined),
    ] {
        let mut bytes = vec![0];
        bytes.extend(message.encode_to_vec());
        write(dir, "kafka_payloads", name, &bytes);
    }
    for entry in &s.entries {
        let message = server::convert::order_event_to_proto(entry);
        // "boxoffice.order.paid.v1" -> "order.paid"
        let name = server::convert::order_event_type(&entry.change)
            .trim_start_matches("boxoffice.")
            .trim_end_matches(".v1")
            .to_string();
        let mut bytes = vec![1];
        bytes.extend(message.encode_to_vec());
        write(
            dir,
            "kafka_payloads",
            &format!("{name}-{}", entry.seq),
            &bytes,
        );
        if name.contains("paid") {
            bytes[0] = 2;
            write(
                dir,
                "kafka_payloads",
                &format!("render-{}", entry.seq),
                &bytes,
            );
        }
    }
}

fn webhooks(dir: &Path) {
    use adapters::payments::webhook::sign;
    let bodies = [
        (
            "succeeded",
            r#"{"type":"payment.succeeded","data":{"id":"pay_1","status":"succeeded","amount_minor":5300,"currency":"EUR","order_id":"0bde0000-0000-0000-0000-000000000001"}}"#,
        ),
        (
            "failed",
            r#"{"type":"payment.failed","data":{"id":"pay_2","status":"failed","failure_message":"insufficient funds"}}"#,
        ),
        (
            "pending",
            r#"{"type":"payment.pending","data":{"id":"pay_3","status":"processing"}}"#,
        ),
    ];
    for (i, (name, body)) in bodies.iter().enumerate() {
        let secret = WEBHOOK_SECRETS[i % 2];
        let header = sign(secret, WEBHOOK_NOW_S - 10, body.as_bytes());
        write(dir, "webhook", name, format!("{header}\n{body}").as_bytes());
    }
    // Two signatures, one of them stale-looking v0, as a rotation sends.
    let body = bodies[0].1;
    let a = sign(WEBHOOK_SECRETS[0], WEBHOOK_NOW_S, body.as_bytes());
    let b = sign(WEBHOOK_SECRETS[1], WEBHOOK_NOW_S, body.as_bytes());
    let v1_b = b.split_once(",v1=").expect("a v1").1;
    let header = format!("{a}, v1={v1_b}, v0=00");
    write(
        dir,
        "webhook",
        "two-signatures",
        format!("{header}\n{body}").as_bytes(),
    );
}

fn configs(dir: &Path, root: &Path) {
    let shipped = std::fs::read_to_string(root.join("config/boxoffice.toml")).expect("config");
    write(dir, "config", "shipped", shipped.as_bytes());
    let overrides = "\0BOXOFFICE_LIMITS__MAX_ITEMS_PER_REQUEST=8\n\
                     BOXOFFICE_KAFKA__BROKERS=localhost:9092\n\
                     BOXOFFICE_API__TLS_CERT_PATH=/etc/boxoffice/cert.pem\n\
                     BOXOFFICE_API__TLS_KEY_PATH=/etc/boxoffice/key.pem\n\
                     BOXOFFICE_ENGINE__CALL_TIMEOUT_MS=2500\n";
    write(
        dir,
        "config",
        "shipped-with-overrides",
        format!("{shipped}{overrides}").as_bytes(),
    );
    write(dir, "config", "overrides-only", overrides.as_bytes());
    let scenario = root.join("bench/scenarios");
    for entry in std::fs::read_dir(&scenario).expect("scenarios") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .to_string();
        write(
            dir,
            "bench_scenario",
            &name,
            &std::fs::read(&path).expect("scenario"),
        );
    }
    for (name, _) in bench::scenario::BUILT_IN {
        let scenario = bench::scenario::Scenario::built_in(name).expect("a built-in scenario");
        let text = toml::to_string(&scenario).expect("a scenario encodes");
        write(
            dir,
            "bench_scenario",
            &format!("{name}.toml"),
            text.as_bytes(),
        );
    }
}

/// `inventory_requests`: chunks of `kind, advance, len: u16 LE, message`, as that target reads
/// them, making holds `1`, `2`, orders `0x1001`, `0x1002`, their payments, a ticket let in, out
/// and in again, a refund and a pause. The tokens come from the same decisions made here, with
/// the target's ids and key.
fn inventory_requests(dir: &Path, keys_dir: &Path) {
    let limits = Limits::default();
    let mut issuer = issuer(keys_dir);
    let (mut inv, _) = Inventory::create(spec(), &limits).expect("a valid spec");
    let id = |n: u128| Uuid::from_u128(n).to_string();
    let mut chunks: Vec<u8> = Vec::new();
    use v1::reserve_item::Selection;
    let reserve = |customer: &str, items: Vec<v1::ReserveItem>| v1::ReserveRequest {
        event_id: EVENT.to_string(),
        customer_id: customer.into(),
        items,
        hold_ttl_seconds: None,
        idempotency_key: String::new(),
    };
    let ga = v1::ReserveItem {
        tier_code: "GA".into(),
        selection: Some(Selection::Quantity(2)),
    };
    let seats = v1::ReserveItem {
        tier_code: "SEAT".into(),
        selection: Some(Selection::Seats(v1::SeatList {
            seats: ["1", "2"]
                .iter()
                .map(|n| v1::Seat {
                    section: "A".into(),
                    row: "1".into(),
                    number: (*n).into(),
                })
                .collect(),
        })),
    };
    chunk(&mut chunks, 0, 1, reserve("ana", vec![ga]).encode_to_vec());
    chunk(
        &mut chunks,
        0,
        1,
        reserve("zoë", vec![seats]).encode_to_vec(),
    );
    let mut made = Vec::new();
    for (n, customer, item) in [
        (
            1,
            "ana",
            ReserveItem::General {
                tier: "GA".into(),
                quantity: 2,
            },
        ),
        (
            2,
            "zoë",
            ReserveItem::Seats {
                tier: "SEAT".into(),
                seats: vec![seat("1", "1"), seat("1", "2")],
            },
        ),
    ] {
        let r = inv.reserve(
            &reserve_request(customer, item),
            HoldId(Uuid::from_u128(n)),
            T0,
            &limits,
        );
        made.extend(r.expect("reserve").record);
    }
    for n in [1u128, 2] {
        let confirm = v1::ConfirmRequest {
            event_id: EVENT.to_string(),
            hold_id: id(n),
            payment: Some(v1::Payment {
                reference: "test:approve".into(),
            }),
            idempotency_key: String::new(),
            contact: None,
        };
        chunk(&mut chunks, 1, 1, confirm.encode_to_vec());
        let req = ConfirmRequest {
            hold_id: HoldId(Uuid::from_u128(n)),
            payment_ref: "test:approve".into(),
            idempotency_key: None,
            contact: None,
        };
        let r = inv.confirm(&req, OrderId(Uuid::from_u128(0x1000 + n)), T0, &limits);
        made.extend(r.expect("confirm").record);
    }
    write(dir, "inventory_requests", "reserve-and-confirm", &chunks);
    for (n, amount) in [(1u128, 5_300u64), (2, 8_400)] {
        let result = v1::PaymentResult {
            event_id: EVENT.to_string(),
            order_id: id(0x1000 + n),
            provider: "test".into(),
            outcome: Some(v1::payment_result::Outcome::Approved(v1::PaymentApproved {
                provider_reference: format!("ch_{n}"),
                amount_minor: amount,
                currency: "EUR".into(),
            })),
        };
        chunk(&mut chunks, 6, 2, result.encode_to_vec());
        let r = inv.settle_payment(
            &approved(OrderId(Uuid::from_u128(0x1000 + n)), amount),
            T0,
            &limits,
            &mut issuer,
        );
        made.extend(r.expect("settle").record);
    }
    write(dir, "inventory_requests", "paid", &chunks);
    let token = inv
        .order(OrderId(Uuid::from_u128(0x1002)))
        .expect("a paid order")
        .tickets[0]
        .token
        .clone();
    let scan = |scan_id: &str| v1::CheckInRequest {
        event_id: EVENT.to_string(),
        token: token.clone(),
        gate_id: "north".into(),
        scan_id: scan_id.into(),
    };
    chunk(&mut chunks, 7, 60, scan("s1").encode_to_vec());
    let exit = v1::CheckOutRequest {
        event_id: EVENT.to_string(),
        token: token.clone(),
        gate_id: "north".into(),
        scan_id: "s2".into(),
    };
    chunk(&mut chunks, 8, 10, exit.encode_to_vec());
    chunk(&mut chunks, 7, 10, scan("s3").encode_to_vec());
    write(dir, "inventory_requests", "in-out-in", &chunks);
    let refund = v1::RefundOrderRequest {
        event_id: EVENT.to_string(),
        order_id: id(0x1001),
        reason: "duplicate".into(),
        idempotency_key: "f1".into(),
    };
    chunk(&mut chunks, 4, 1, refund.encode_to_vec());
    let cancel = v1::CancelOrderRequest {
        event_id: EVENT.to_string(),
        order_id: id(0x1002),
        reason: "too late".into(),
        idempotency_key: String::new(),
    };
    chunk(&mut chunks, 3, 1, cancel.encode_to_vec());
    let release = v1::ReleaseRequest {
        event_id: EVENT.to_string(),
        hold_id: id(1),
        idempotency_key: String::new(),
    };
    chunk(&mut chunks, 2, 1, release.encode_to_vec());
    let status = v1::SetEventStatusRequest {
        event_id: EVENT.to_string(),
        status: v1::EventStatus::Paused as i32,
    };
    chunk(&mut chunks, 5, 200, status.encode_to_vec());
    write(dir, "inventory_requests", "whole-session", &chunks);
}

/// Appends one request to `out` as `inventory_requests` reads it.
fn chunk(out: &mut Vec<u8>, kind: u8, advance: u8, message: Vec<u8>) {
    out.extend_from_slice(&[kind, advance]);
    out.extend_from_slice(&(message.len() as u16).to_le_bytes());
    out.extend(message);
}

fn reserve_request(customer: &str, item: ReserveItem) -> ReserveRequest {
    reserve(customer, vec![item], None)
}

fn main() {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .expect("usage: boxoffice-fuzz-seeds <corpus dir>")
        .into();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let keys = tempfile::tempdir().expect("a temporary directory");
    let s = session(keys.path());
    inventory_requests(&dir, keys.path());
    logs(&dir, &s);
    requests(&dir, &s);
    payloads(&dir, &s);
    webhooks(&dir);
    configs(&dir, &root);
}
