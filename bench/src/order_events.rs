//! Order events in a run: with the relay on, a consumer follows the target's topic and times each
//! confirmed order from the moment the client had its Confirm answered to the moment its
//! `OrderConfirmed` was read from the broker (the confirm-to-consumer latency, HDR), and the
//! audit checks that every confirmed order's event arrived, once after deduplication, with no gap
//! in its event's sequence.
//!
//! The consumer reads every partition from the beginning by assignment (no group to join, so it
//! reads from the first message on) and asks the broker to answer fetches within
//! `FETCH_WAIT_MS`, as a latency-minded consumer does.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use kafka::rdkafka::consumer::StreamConsumer;
use kafka::rdkafka::{Message, Offset};
use prost::Message as _;
use proto::v1;
use proto::v1::order_event::Change;

use crate::results::{Check, OpReport, histogram, op_report};

/// The longest a fetch waits at the broker for new messages.
const FETCH_WAIT_MS: &str = "5";

/// What the clients were told and what the consumer read, for one target. Its memory is bounded
/// by the confirms in flight and the events, not by the length of the run.
pub struct OrderEventTap {
    state: Mutex<TapState>,
}

struct TapState {
    /// Confirms answered whose event has not been read yet: hold id -> when answered, and
    /// whether the answer is in the measured window.
    waiting: HashMap<String, (Instant, bool)>,
    /// Holds whose `OrderConfirmed` was read before the client had the Confirm's answer.
    early: HashSet<String>,
    /// Per event id, the last sequence read: one at or below it is a duplicate, one past the
    /// next is a gap.
    last_seq: HashMap<String, u64>,
    answered: u64,
    confirmed_read: u64,
    /// Confirms answered after their event was read: latency 0.
    answered_after_read: u64,
    duplicates: u64,
    gaps: u64,
    /// Messages that do not decode as `OrderEvent`.
    undecodable: u64,
    latency: Histogram<u64>,
}

impl Default for OrderEventTap {
    fn default() -> Self {
        OrderEventTap {
            state: Mutex::new(TapState {
                waiting: HashMap::new(),
                early: HashSet::new(),
                last_seq: HashMap::new(),
                answered: 0,
                confirmed_read: 0,
                answered_after_read: 0,
                duplicates: 0,
                gaps: 0,
                undecodable: 0,
                latency: histogram(3),
            }),
        }
    }
}

impl OrderEventTap {
    /// A client was told that the hold `hold_id` is now an order.
    pub fn answered(&self, hold_id: &str, measured: bool) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("tap lock");
        s.answered += 1;
        if s.early.remove(hold_id) {
            s.answered_after_read += 1;
            if measured {
                s.latency.saturating_record(1);
            }
        } else {
            s.waiting.insert(hold_id.to_string(), (now, measured));
        }
    }

    fn read(&self, message: &[u8]) {
        let now = Instant::now();
        let mut s = self.state.lock().expect("tap lock");
        let Ok(event) = v1::OrderEvent::decode(message) else {
            s.undecodable += 1;
            return;
        };
        let last = s.last_seq.get(&event.event_id).copied().unwrap_or(0);
        if event.sequence <= last {
            s.duplicates += 1;
            return;
        }
        if event.sequence > last + 1 {
            s.gaps += 1;
        }
        s.last_seq.insert(event.event_id, event.sequence);
        let Some(Change::OrderConfirmed(v1::OrderConfirmed { order: Some(order) })) = event.change
        else {
            return;
        };
        s.confirmed_read += 1;
        match s.waiting.remove(&order.hold_id) {
            Some((answered, true)) => {
                let us = now.saturating_duration_since(answered).as_micros() as u64;
                s.latency.saturating_record(us.max(1));
            }
            Some((_, false)) => {}
            None => {
                s.early.insert(order.hold_id);
            }
        }
    }

    /// Waits up to `limit` for the event of every confirm answered so far.
    pub async fn catch_up(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until && !self.state.lock().expect("tap lock").waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The latency of the confirms answered in the measured window, and the audit's check.
    pub fn figures(&self, measured: Duration) -> (Option<OpReport>, Check) {
        let s = self.state.lock().expect("tap lock");
        let read = s.latency.len();
        let report = (read > 0).then(|| {
            op_report(
                &s.latency,
                measured,
                [("READ".to_string(), read)].into(),
                read,
            )
        });
        let missing = s.waiting.len();
        let check = Check {
            name: "every confirmed order's event reached the consumer".into(),
            passed: missing == 0 && s.gaps == 0 && s.undecodable == 0,
            detail: format!(
                "{} confirms answered, {} OrderConfirmed read, {} not read, {} read before the \
                 client had its answer, {} duplicates dropped, {} gaps in an event's sequence, \
                 {} undecodable",
                s.answered,
                s.confirmed_read,
                missing,
                s.answered_after_read,
                s.duplicates,
                s.gaps,
                s.undecodable
            ),
        };
        (report, check)
    }
}

/// Reads `topic`'s `partitions` from the beginning into `tap` until the task is aborted; a
/// consumer that cannot start says why, and the audit then finds every event missing.
pub async fn follow(
    brokers: String,
    topic: String,
    partitions: i32,
    tap: std::sync::Arc<OrderEventTap>,
) {
    if let Err(e) = read_into(&brokers, &topic, partitions, &tap).await {
        eprintln!("  order events: the consumer stopped: {e:#}");
    }
}

async fn read_into(brokers: &str, topic: &str, partitions: i32, tap: &OrderEventTap) -> Result<()> {
    let properties = [
        ("fetch.wait.max.ms".to_string(), FETCH_WAIT_MS.to_string()),
        ("fetch.error.backoff.ms".to_string(), "10".to_string()),
    ]
    .into();
    let consumer: StreamConsumer = kafka::consumer(brokers, "boxoffice-bench", &properties)
        .context("the order-event consumer")?;
    kafka::assign_partitions(&consumer, topic, 0..partitions as usize, Offset::Beginning)
        .context("assign")?;
    loop {
        match consumer.recv().await {
            Ok(m) => tap.read(m.payload().unwrap_or_default()),
            Err(e) => eprintln!("  order events: consumer: {e}"),
        }
    }
}
