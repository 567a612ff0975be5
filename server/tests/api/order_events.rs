//! Order events on Kafka, end to end: a real tansu broker (scripts/broker.sh, SQLite storage), a
//! real `boxoffice serve` with its relay, and a real rdkafka consumer in a consumer group.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kafka::CloudEvent;
use kafka::rdkafka::Message;
use kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use prost::Message as _;
use proto::v1;
use proto::v1::order_event::Change;

use crate::support::*;

pub use testkit::Broker;

/// One message as a consumer sees it.
#[derive(Debug)]
pub struct Received {
    pub key: String,
    pub headers: CloudEvent,
    pub event: v1::OrderEvent,
}

pub fn consumer(broker: &Broker, topic: &str) -> StreamConsumer {
    let group = format!("test-{}", uuid::Uuid::now_v7());
    let consumer = kafka::consumer(&broker.addr, &group, &BTreeMap::new()).expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// A consumer of every partition of `topic` from its first message, by assignment (no group),
/// once the topic exists.
pub async fn reader(broker: &Broker, topic: &str) -> StreamConsumer {
    use kafka::rdkafka::Offset;
    let group = format!("test-{}", uuid::Uuid::now_v7());
    let consumer: StreamConsumer =
        kafka::consumer(&broker.addr, &group, &BTreeMap::new()).expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(30);
    let partitions = loop {
        if let Ok(n) = kafka::partition_count(&consumer, topic, Duration::from_secs(5)) {
            break n;
        }
        assert!(Instant::now() < deadline, "no topic {topic} after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    kafka::assign_partitions(&consumer, topic, 0..partitions, Offset::Beginning).expect("assign");
    consumer
}

/// Reads messages until `done` says so or `within` passes.
pub async fn receive_until(
    consumer: &StreamConsumer,
    within: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} messages came: {got:#?}",
            got.len()
        );
        let Ok(message) = tokio::time::timeout(left, consumer.recv()).await else {
            continue;
        };
        let message = match message {
            Ok(m) => m,
            // Until the relay has created the topic, and while the broker is away: the consumer
            // reconnects by itself.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let headers = CloudEvent::from_headers(message.headers().expect("headers")).unwrap();
        let event = v1::OrderEvent::decode(message.payload().expect("a payload")).unwrap();
        got.push(Received {
            key: String::from_utf8(message.key().expect("a key").to_vec()).unwrap(),
            headers,
            event,
        });
    }
    got
}

/// Per event, the messages after deduplication by id, checked in order: sequence 1, 2, 3...
/// with no gap, each message's headers naming it.
pub fn dedup_in_order(received: &[Received]) -> HashMap<String, Vec<&v1::OrderEvent>> {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut per_event: HashMap<String, Vec<&v1::OrderEvent>> = HashMap::new();
    for r in received {
        let e = &r.event;
        assert_eq!(r.key, e.event_id, "the key is the event id");
        assert_eq!(r.headers.id, e.id);
        assert_eq!(r.headers.subject, e.event_id);
        assert_eq!(r.headers.source, "boxoffice");
        assert_eq!(r.headers.content_type, "application/protobuf");
        if let Some(seq) = ids.insert(e.id.clone(), e.sequence) {
            assert_eq!(seq, e.sequence, "one id, two sequence numbers");
            continue; // a duplicate, as docs/events.md allows
        }
        let seen = last.entry(e.event_id.clone()).or_insert(0);
        assert_eq!(
            e.sequence,
            *seen + 1,
            "gap or reorder in {}: {received:#?}",
            e.event_id
        );
        *seen = e.sequence;
        per_event.entry(e.event_id.clone()).or_default().push(e);
    }
    per_event
}

fn kind(event: &v1::OrderEvent) -> &'static str {
    match event.change.as_ref().expect("a change") {
        Change::EventCreated(_) => "created",
        Change::EventStatusChanged(_) => "status",
        Change::OrderConfirmed(_) => "confirmed",
        Change::OrderCancelled(_) => "cancelled",
        Change::OrderPaid(_) => "paid",
        Change::OrderRefunded(_) => "refunded",
        Change::RefundRequested(_) => "refund requested",
    }
}

#[tokio::test]
async fn every_change_reaches_a_consumer_once_in_order_with_its_headers() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let server = Server::start(
        &dir.path().join("data"),
        &[("BOXOFFICE_KAFKA__BROKERS", &broker.addr)],
    );
    let consumer = consumer(&broker, "boxoffice.orders.v1");
    let mut c = server.clients().await;
    let event = c.create(event_request(100, 2)).await.event_id;
    let mut orders = Vec::new();
    for i in 0..3 {
        let hold = c
            .reserve(ga(&event, &format!("fan-{i}"), 2, ""))
            .await
            .unwrap();
        let order = c
            .confirm(&event, hold.hold_id, format!("pay-{i}"))
            .await
            .unwrap();
        orders.push(order);
    }
    let req = c.req(v1::CancelOrderRequest {
        event_id: event.clone(),
        order_id: orders[1].order_id.clone(),
        reason: "payment failed".into(),
        idempotency_key: String::new(),
    });
    c.reservations.cancel_order(req).await.unwrap();
    let req = c.req(v1::SetEventStatusRequest {
        event_id: event.clone(),
        status: v1::EventStatus::Paused as i32,
    });
    c.admin.set_event_status(req).await.unwrap();

    let got = receive_until(&consumer, Duration::from_secs(60), |got| got.len() >= 6).await;
    let per_event = dedup_in_order(&got);
    let changes = &per_event[&event];
    let kinds: Vec<&str> = changes.iter().map(|e| kind(e)).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "confirmed",
            "confirmed",
            "confirmed",
            "cancelled",
            "status"
        ]
    );
    for r in &got {
        let expected = match kind(&r.event) {
            "created" => "boxoffice.event.created.v1",
            "confirmed" => "boxoffice.order.confirmed.v1",
            "cancelled" => "boxoffice.order.cancelled.v1",
            _ => "boxoffice.event.status_changed.v1",
        };
        assert_eq!(r.headers.kind, expected);
        assert!(
            r.headers.time.ends_with('Z') && r.headers.time.len() == 24,
            "{:?}",
            r.headers
        );
    }
    let Some(Change::OrderConfirmed(confirmed)) = &changes[1].change else {
        unreachable!()
    };
    let order = confirmed.order.as_ref().unwrap();
    assert_eq!(order, &orders[0], "the order as Confirm answered it");
    assert_eq!(order.customer_id, "fan-0");
    assert_eq!(order.payment_reference, "pay-0");
    assert_eq!(order.total_minor, 2 * (5_000 + 250));
    let Some(Change::OrderCancelled(cancelled)) = &changes[4].change else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, "payment failed");
    assert_eq!(
        cancelled.order.as_ref().unwrap().status,
        v1::OrderStatus::Cancelled as i32
    );
    let Some(Change::EventCreated(created)) = &changes[0].change else {
        unreachable!()
    };
    assert_eq!(created.event.as_ref().unwrap().event_id, event);

    // Once acknowledged, nothing waits in the outbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("boxoffice_outbox_pending_entries").await > 0.0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `boxoffice serve` with `env` and its stderr in a file; returns once it serves.
fn serve_logging_to(
    dir: &Path,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    PathBuf,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    use std::io::BufRead;
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let log = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .arg("serve")
        .env("BOXOFFICE_CONFIG", &config)
        .env("BOXOFFICE_STORAGE__DATA_DIR", dir.join("data"))
        .env("BOXOFFICE_API__LISTEN", "127.0.0.1:0")
        .env("BOXOFFICE_METRICS__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn boxoffice");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for expected in ["boxoffice listening ", "boxoffice serving "] {
        line.clear();
        stdout.read_line(&mut line).unwrap();
        assert!(line.starts_with(expected), "{line:?}");
    }
    let addr = |prefix: &str, suffix: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(prefix)?.strip_suffix(suffix))
            .unwrap_or_else(|| panic!("no {prefix}ADDR{suffix} in {line:?}"))
            .parse()
            .expect("an address")
    };
    (
        child,
        log,
        addr("grpc=", ""),
        addr("metrics=http://", "/metrics"),
    )
}

/// A producer property librdkafka does not take, or no broker at the address: boxoffice says
/// so in its log and serves on.
#[tokio::test]
async fn a_bad_kafka_config_is_reported_and_selling_goes_on() {
    for (name, env) in [
        (
            "unknown property",
            vec![
                ("BOXOFFICE_KAFKA__BROKERS", "127.0.0.1:9"),
                (
                    "BOXOFFICE_KAFKA__PROPERTIES",
                    r#"{ "no.such.property" = "1" }"#,
                ),
            ],
        ),
        (
            "unreachable broker",
            vec![("BOXOFFICE_KAFKA__BROKERS", "127.0.0.1:9")],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, log, grpc, metrics) = serve_logging_to(dir.path(), &env);
        // It sells: a reservation is held, and the log shows the reason.
        let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = Clients::new(channel, DEV_KEY);
        let event = c.create(event_request(10, 1)).await.event_id;
        let hold = c.reserve(ga(&event, "fan", 2, "")).await;
        assert!(hold.is_ok(), "{name}: {hold:?}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (expected, kind) = match name {
            "unknown property" => ("no.such.property", "config"),
            _ => ("no broker answered", "topic"),
        };
        loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if text.contains(expected) {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: nothing said: {text}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // And the metrics count it (right after the log line).
        let counter = format!("boxoffice_relay_errors_total{{kind=\"{kind}\"}} 1");
        loop {
            let text = metrics_text_at(metrics).await;
            if text.lines().any(|l| l.trim() == counter) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no `{counter}` in {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `kafka.format = "json"`: the same message in the proto3 JSON mapping.
#[tokio::test]
async fn order_events_can_be_json() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BOXOFFICE_KAFKA__BROKERS", &broker.addr),
            ("BOXOFFICE_KAFKA__FORMAT", "json"),
            ("BOXOFFICE_KAFKA__ORDERS_TOPIC", "orders-json"),
        ],
    );
    let consumer = consumer(&broker, "orders-json");
    let mut c = server.clients().await;
    let event = c.create(event_request(10, 1)).await.event_id;
    let deadline = Instant::now() + Duration::from_secs(60);
    let message = loop {
        assert!(Instant::now() < deadline, "no message came");
        match tokio::time::timeout(Duration::from_secs(5), consumer.recv()).await {
            Ok(Ok(m)) => break m.detach(),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let headers = CloudEvent::from_headers(message.headers().unwrap()).unwrap();
    assert_eq!(headers.content_type, "application/json");
    assert_eq!(headers.kind, "boxoffice.event.created.v1");
    let json: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert_eq!(json["eventId"], event.as_str(), "{json}");
    assert_eq!(
        json["sequence"], "1",
        "64-bit integers are strings in proto3 JSON: {json}"
    );
    assert_eq!(
        json["eventCreated"]["event"]["status"], "EVENT_STATUS_ON_SALE",
        "{json}"
    );
    assert_eq!(json["id"], headers.id.as_str());
}
