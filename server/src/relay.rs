//! The relay: publishes the engine's outbox to Kafka (`kafka.*`), in order per event, and removes
//! an entry only once the broker has acknowledged it.
//!
//! Each round reads up to `kafka.batch_entries` entries after the last one sent, hands them all
//! to the producer (idempotent, `acks=all`, key = event id, no delivery timeout) and waits for
//! every acknowledgement; then it tells the engine how far each event was acknowledged. While
//! the broker is down the producer waits and so does the relay: selling goes on and the outbox
//! grows on disk. A producer that fails for good is made anew and the round sent again, from the
//! first entry not acknowledged, with the same ids; so is everything not acknowledged after a
//! restart (see docs/events.md for the duplicates a consumer may see).
//!
//! It decides nothing and changes no state but the outbox's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use config::{KafkaConfig, PayloadFormat};
use engine::Engine;
use engine::inventory::EventId;
use engine::outbox::OutboxEntry;
use kafka::CloudEvent;
use kafka::rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use metrics::{counter, gauge, histogram};
use prost::Message;
use tokio::sync::watch;

use crate::convert;

/// How long an idle relay waits before it looks at the outbox again.
const IDLE_POLL: Duration = Duration::from_millis(2);

pub struct Relay {
    engine: Arc<Engine>,
    config: KafkaConfig,
    json: Option<prost_reflect::MessageDescriptor>,
    /// Per event, the highest seq acknowledged by the broker in this process.
    acked: HashMap<EventId, u64>,
    /// When the oldest entry of the round under way was made, ms; 0 when none waits.
    oldest_ms: Arc<AtomicU64>,
}

/// Starts the relay if `kafka.brokers` is set. A configuration the producer refuses is reported
/// and leaves the relay off; the engine sells on and keeps the outbox.
pub fn start(
    engine: Arc<Engine>,
    config: &KafkaConfig,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.brokers.is_empty() {
        tracing::info!("kafka.brokers is empty: order events stay in the outbox");
        return None;
    }
    let producer = match kafka::producer(&config.brokers, &config.properties, config.max_in_flight)
    {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "the order-event relay is off: fix kafka.properties and restart; order events stay in the outbox");
            counter!("boxoffice_relay_errors_total", "kind" => "config").increment(1);
            return None;
        }
    };
    let json = (config.format == PayloadFormat::Json).then(|| {
        prost_reflect::DescriptorPool::decode(proto::FILE_DESCRIPTOR_SET)
            .expect("the compiled descriptor set decodes")
            .get_message_by_name("boxoffice.v1.OrderEvent")
            .expect("OrderEvent is in the descriptor set")
    });
    let oldest_ms = Arc::new(AtomicU64::new(0));
    // The gauges go on while a round waits out a broker outage.
    tokio::spawn(gauges(engine.clone(), oldest_ms.clone(), stop.clone()));
    let relay = Relay {
        engine,
        config: config.clone(),
        json,
        acked: HashMap::new(),
        oldest_ms,
    };
    tracing::info!(brokers = %config.brokers, topic = %config.orders_topic, "order-event relay on");
    Some(tokio::spawn(relay.run(producer, stop)))
}

impl Relay {
    async fn run(mut self, mut producer: FutureProducer, mut stop: watch::Receiver<bool>) {
        let k = &self.config;
        let topic = kafka::ensure_topic(
            &k.brokers,
            &k.properties,
            &k.orders_topic,
            k.orders_topic_partitions as i32,
            k.orders_topic_replication as i32,
        );
        // An unreachable broker is reported here; the producer keeps trying on its own.
        match tokio::time::timeout(Duration::from_secs(15), topic).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot make sure the order-event topic exists; publishing anyway");
                counter!("boxoffice_relay_errors_total", "kind" => "topic").increment(1);
            }
            Err(_) => {
                tracing::error!(brokers = %k.brokers, "no broker answered within 15 s; the relay keeps trying");
                counter!("boxoffice_relay_errors_total", "kind" => "topic").increment(1);
            }
        }
        let mut after: Option<(EventId, u64)> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let batch = match self
                .engine
                .outbox_after(after, self.config.batch_entries as usize)
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    counter!("boxoffice_relay_errors_total", "kind" => "outbox").increment(1);
                    sleep_or_stop(&mut stop, kafka::RETRY_BACKOFF).await;
                    continue;
                }
            };
            // Entries already acknowledged whose removal is not yet durable are not sent again.
            let batch: Vec<OutboxEntry> = batch
                .into_iter()
                .filter(|e| self.acked.get(&e.event_id).is_none_or(|&s| e.seq > s))
                .collect();
            let Some(last) = batch.last().map(|e| (e.event_id, e.seq)) else {
                // The end of the outbox: next time from its start, where new entries of earlier
                // events land.
                if after.is_none() {
                    self.oldest_ms.store(0, Ordering::Relaxed);
                }
                after = None;
                sleep_or_stop(&mut stop, IDLE_POLL).await;
                continue;
            };
            let oldest = batch.iter().map(|e| e.at_ms).min().unwrap_or(0);
            self.oldest_ms.store(oldest.max(1), Ordering::Relaxed);
            let pending = self.engine.outbox_pending();
            if pending > self.config.outbox_warn_entries {
                tracing::warn!(
                    pending,
                    bound = self.config.outbox_warn_entries,
                    "the outbox is past kafka.outbox_warn_entries: is the broker reachable?"
                );
            }
            let sent = tokio::select! {
                sent = self.send(&producer, &batch) => sent,
                _ = stop.wait_for(|s| *s) => {
                    // What is in flight is sent again after the restart.
                    let _ = producer.flush(Duration::from_secs(1));
                    return;
                }
            };
            match sent {
                Ok(()) => after = Some(last),
                Err(e) => {
                    tracing::error!(error = %e, "order events not acknowledged; sending them again");
                    counter!("boxoffice_relay_errors_total", "kind" => "publish").increment(1);
                    sleep_or_stop(&mut stop, kafka::RETRY_BACKOFF).await;
                    if let Ok(p) = kafka::producer(
                        &self.config.brokers,
                        &self.config.properties,
                        self.config.max_in_flight,
                    ) {
                        producer = p;
                    }
                    after = None;
                }
            }
        }
    }

    /// Sends `batch` and waits for every acknowledgement; acknowledges to the engine how far
    /// each event got, contiguously from its first entry in the batch.
    async fn send(
        &mut self,
        producer: &FutureProducer,
        batch: &[OutboxEntry],
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(batch.len());
        for entry in batch {
            let (payload, content_type) = self.payload(entry);
            let key = entry.event_id.0.to_string();
            let headers = CloudEvent {
                id: entry.id.to_string(),
                kind: convert::order_event_type(&entry.change).to_string(),
                source: "boxoffice".to_string(),
                time: kafka::rfc3339_ms(entry.at_ms),
                subject: key.clone(),
                content_type: content_type.to_string(),
            }
            .headers();
            let mut record = FutureRecord::to(&self.config.orders_topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            // The producer's queue is bounded: when it is full, wait for the earliest delivery.
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    Err((e, back)) => {
                        record = back;
                        if deliveries.is_empty() {
                            return Err(format!("cannot queue an order event: {e}"));
                        }
                        producer.poll(Duration::from_millis(10));
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            deliveries.push((entry.event_id, entry.seq, delivery));
        }
        let mut reached: HashMap<EventId, u64> = HashMap::new();
        let mut failed: Option<String> = None;
        let mut published = 0u64;
        for (event, seq, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(_)) if failed.is_none() => {
                    reached.insert(event, seq);
                    published += 1;
                }
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failed.get_or_insert_with(|| e.to_string());
                }
                Err(_) => {
                    failed.get_or_insert_with(|| "the producer dropped a delivery".to_string());
                }
            }
        }
        // Only what is acknowledged contiguously from the start of the batch counts: after a
        // failure the round is sent again from the first entry not acknowledged.
        for (event, seq) in reached {
            self.engine.ack_outbox(event, seq);
            self.acked.insert(event, seq);
        }
        counter!("boxoffice_relay_published_total").increment(published);
        histogram!("boxoffice_relay_round_seconds").record(started.elapsed().as_secs_f64());
        let now = engine::actor::wall_clock_ms();
        for entry in &batch[..published as usize] {
            histogram!("boxoffice_relay_publish_latency_seconds")
                .record(now.saturating_sub(entry.at_ms) as f64 / 1e3);
        }
        match failed {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    fn payload(&self, entry: &OutboxEntry) -> (Vec<u8>, &'static str) {
        let message = convert::order_event_to_proto(entry);
        match &self.json {
            None => (message.encode_to_vec(), "application/protobuf"),
            Some(descriptor) => {
                let dynamic = prost_reflect::DynamicMessage::decode(
                    descriptor.clone(),
                    &*message.encode_to_vec(),
                )
                .expect("an OrderEvent decodes as itself");
                let json = serde_json::to_vec(&dynamic).expect("a message maps to JSON");
                (json, "application/json")
            }
        }
    }
}

/// Every 100 ms: entries waiting in the outbox, and the age of the oldest being sent.
async fn gauges(engine: Arc<Engine>, oldest_ms: Arc<AtomicU64>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        gauge!("boxoffice_outbox_pending_entries").set(engine.outbox_pending() as f64);
        let oldest = oldest_ms.load(Ordering::Relaxed);
        let age = match oldest {
            0 => 0.0,
            ms => engine::actor::wall_clock_ms().saturating_sub(ms) as f64 / 1e3,
        };
        gauge!("boxoffice_outbox_oldest_age_seconds").set(age);
        sleep_or_stop(&mut stop, Duration::from_millis(100)).await;
    }
}

async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}
