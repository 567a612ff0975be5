//! boxoffice's Kafka plumbing, written once for the order-event relay and every adapter: the
//! producer settings that keep one event's messages in order and sent once per acknowledgement,
//! the CloudEvents headers (Kafka protocol binding, binary content mode), and consumers.
//!
//! It knows nothing of boxoffice's state: it configures clients and reads and writes headers.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::FutureProducer;

pub use rdkafka;

#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka client configuration refused: {0}")]
    Config(#[source] rdkafka::error::KafkaError),
}

/// `properties` as given, then `bootstrap.servers`.
fn client_config(brokers: &str, properties: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (key, value) in properties {
        config.set(key, value);
    }
    config.set("bootstrap.servers", brokers);
    config
}

/// A producer for `brokers` with `properties` passed through, then the settings the outbox
/// relies on: the idempotent producer (in order per partition, no duplicates from its own
/// retries), `acks=all`, and no delivery timeout, so a message waits out a broker outage instead
/// of failing and being overtaken by a later one; at most `max_in_flight` (1 ..= 5) requests in
/// flight per connection. `linger.ms` is 2 unless `properties` say otherwise.
pub fn producer(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    max_in_flight: u32,
) -> Result<FutureProducer, KafkaError> {
    let mut config = client_config(brokers, properties);
    if !properties.contains_key("linger.ms") && !properties.contains_key("queue.buffering.max.ms") {
        config.set("linger.ms", "2");
    }
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "max.in.flight.requests.per.connection",
            max_in_flight.clamp(1, 5).to_string(),
        )
        .set("message.timeout.ms", "0");
    config.create().map_err(KafkaError::Config)
}

/// A consumer in `group` for `brokers`, committing offsets only when told (after the effect),
/// starting from the earliest message when the group has no offset yet.
pub fn consumer(
    brokers: &str,
    group: &str,
    properties: &BTreeMap<String, String>,
) -> Result<StreamConsumer, KafkaError> {
    let mut config = client_config(brokers, properties);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000");
    config.create().map_err(KafkaError::Config)
}

/// Creates `topic` with `partitions` partitions and `replication` replicas if the cluster does
/// not have it; a topic that exists is left as it is.
pub async fn ensure_topic(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let config = client_config(brokers, properties);
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|e| format!("admin client: {e}"))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&new], &options)
        .await
        .map_err(|e| format!("creating topic {topic}: {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating topic {name}: {code}")),
        }
    }
    Ok(())
}

/// The CloudEvents attributes of one message (Kafka protocol binding, binary content mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEvent {
    pub id: String,
    /// e.g. `boxoffice.order.confirmed.v1`.
    pub kind: String,
    pub source: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub subject: String,
    /// `application/protobuf` or `application/json`.
    pub content_type: String,
}

pub const SPEC_VERSION: &str = "1.0";

impl CloudEvent {
    pub fn headers(&self) -> OwnedHeaders {
        [
            ("ce_specversion", SPEC_VERSION),
            ("ce_id", &self.id),
            ("ce_type", &self.kind),
            ("ce_source", &self.source),
            ("ce_time", &self.time),
            ("ce_subject", &self.subject),
            ("content-type", &self.content_type),
        ]
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(7), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
    }

    /// Reads the attributes back; the error names the first one missing or not UTF-8, or a spec
    /// version other than 1.0.
    pub fn from_headers(headers: &impl Headers) -> Result<CloudEvent, String> {
        let get = |name: &str| -> Result<String, String> {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
                .ok_or_else(|| format!("header {name} is missing or not UTF-8"))
        };
        let version = get("ce_specversion")?;
        if version != SPEC_VERSION {
            return Err(format!(
                "ce_specversion is {version:?}, not {SPEC_VERSION:?}"
            ));
        }
        Ok(CloudEvent {
            id: get("ce_id")?,
            kind: get("ce_type")?,
            source: get("ce_source")?,
            time: get("ce_time")?,
            subject: get("ce_subject")?,
            content_type: get("content-type")?,
        })
    }
}

/// RFC 3339 in UTC with milliseconds, for `ce_time`: `2026-12-02T17:04:05.123Z`.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A static group member id (KIP-345, `group.instance.id`) for a process whose state lives in
/// `dir`: `<prefix>-` and the directory's absolute path, in the characters Kafka allows. With
/// it a restarted process takes its own place in the group at once; tansu 0.6.0's coordinator
/// otherwise keeps a member that died without leaving as leader, and every rejoin is told to
/// rebalance, for ever.
pub fn instance_id(prefix: &str, dir: &std::path::Path) -> String {
    let path = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text: String = path
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let keep = text.len().saturating_sub(200);
    format!("{prefix}-{}", &text[keep..])
}

/// The partition count of `topic`, from the cluster's metadata (blocks for up to `timeout`).
pub fn partition_count(
    consumer: &impl rdkafka::consumer::Consumer,
    topic: &str,
    timeout: Duration,
) -> Result<usize, String> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let found = metadata
        .topics()
        .first()
        .ok_or_else(|| format!("no topic {topic} in the metadata"))?;
    if let Some(e) = found.error() {
        return Err(format!("topic {topic}: {e:?}"));
    }
    if found.partitions().is_empty() {
        return Err(format!("topic {topic} has no partitions yet"));
    }
    Ok(found.partitions().len())
}

/// Assigns `consumer` the partitions `from..to` of `topic`, each starting at `offset`
/// (`Offset::Stored`: the group's committed offset, else `auto.offset.reset`). Added to what it
/// reads already.
pub fn assign_partitions(
    consumer: &impl rdkafka::consumer::Consumer,
    topic: &str,
    partitions: std::ops::Range<usize>,
    offset: rdkafka::Offset,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut list = rdkafka::TopicPartitionList::new();
    for p in partitions {
        list.add_partition_offset(topic, p as i32, offset)?;
    }
    consumer.incremental_assign(&list)
}

/// How long a relay or consumer waits between attempts after an error.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// The next batch of a consumer that applies messages in batches and commits after the effect:
/// waits for one message, then takes what has already arrived, up to `max` in all. `None` once
/// `stop` turns true. Errors of the consumer (a broker away, a topic not there yet) are waited
/// out: librdkafka reconnects by itself.
pub async fn next_batch(
    consumer: &StreamConsumer,
    max: usize,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Vec<rdkafka::message::OwnedMessage>> {
    use futures_util::FutureExt;
    loop {
        let first = tokio::select! {
            _ = stop.wait_for(|s| *s) => return None,
            m = consumer.recv() => m,
        };
        match first {
            Ok(m) => {
                let mut batch = vec![m.detach()];
                while batch.len() < max {
                    match consumer.recv().now_or_never() {
                        Some(Ok(m)) => batch.push(m.detach()),
                        _ => break,
                    }
                }
                return Some(batch);
            }
            Err(_) => {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return None,
                    () = tokio::time::sleep(RETRY_BACKOFF) => {}
                }
            }
        }
    }
}

/// Commits, per partition, the offset after the last message of `batch`: call once every
/// message of it has had its effect.
pub fn commit_batch(
    consumer: &StreamConsumer,
    batch: &[rdkafka::message::OwnedMessage],
) -> Result<(), rdkafka::error::KafkaError> {
    use rdkafka::consumer::{CommitMode, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let at = next.entry((m.topic(), m.partition())).or_default();
        *at = (*at).max(m.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.commit(&offsets, CommitMode::Async)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_796_230_245_123), "2026-12-02T16:50:45.123Z");
    }

    #[test]
    fn headers_round_trip() {
        let event = CloudEvent {
            id: "7d8f".into(),
            kind: "boxoffice.order.confirmed.v1".into(),
            source: "boxoffice".into(),
            time: rfc3339_ms(5),
            subject: "event".into(),
            content_type: "application/protobuf".into(),
        };
        assert_eq!(CloudEvent::from_headers(&event.headers()), Ok(event));
        assert!(CloudEvent::from_headers(&OwnedHeaders::new()).is_err());
    }
}
