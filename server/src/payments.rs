//! The payment-result consumer: reads `kafka.payments_topic` (`boxoffice.v1.PaymentResult`,
//! written by the payment adapter) and applies each result to its order through the event's
//! actor. An offset is committed, to group `kafka.payments_group`, only after the engine answered,
//! which it does once the result's record is durable: at least once in, and since a result the
//! order already reflects changes nothing, at most once in effect.
//!
//! One engine owns every event, so it reads every partition of the topic by assignment and uses
//! the group only for its committed offsets: there is no membership to lose. (With a group
//! membership, tansu 0.6.0's coordinator kept a SIGKILLed engine as the group's leader, and the
//! restarted engine never got its partitions.) Partitions added to the topic are picked up within
//! `PARTITION_CHECK`.
//!
//! Messages are taken in batches of what has arrived (at most `BATCH`), settled concurrently, and
//! committed together once every one of them is settled. A result the engine cannot take now
//! (overloaded, recovering, a storage fault) is retried with a backoff, holding up its batch's
//! commit, never skipped. A message that cannot be a valid result (it does not decode, names no
//! such event or order, or breaks a limit) is logged, counted and committed past: it would never
//! succeed, and it must not stop the results behind it.
//!
//! It decides nothing: the inventory decides what a result does (`Inventory::settle_payment`).

use std::sync::Arc;
use std::time::Duration;

use config::KafkaConfig;
use engine::inventory::Settlement;
use engine::{Engine, Error};
use futures_util::future::join_all;
use kafka::rdkafka::consumer::StreamConsumer;
use kafka::rdkafka::message::OwnedMessage;
use kafka::rdkafka::{Message, Offset};
use metrics::counter;
use prost::Message as _;
use proto::v1;
use tokio::sync::watch;

use crate::convert;

/// Results taken from the consumer and settled together, at most.
const BATCH: usize = 1_024;

/// Starts the consumer if `kafka.brokers` is set; it stops when `stop` turns true.
pub fn start(
    engine: Arc<Engine>,
    config: &KafkaConfig,
    stop: watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if config.brokers.is_empty() {
        return None;
    }
    let consumer = match kafka::consumer(
        &config.brokers,
        &config.payments_group,
        &config.properties,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the payment-result consumer is off: fix kafka.properties and restart");
            counter!("boxoffice_payment_results_total", "outcome" => "config").increment(1);
            return None;
        }
    };
    let config = config.clone();
    Some(tokio::spawn(async move {
        // The topic may not exist before the adapter's first result; subscribing to a missing
        // topic only reports an error, so it is made here as the relay makes its own.
        while let Err(e) = kafka::ensure_topic(
            &config.brokers,
            &config.properties,
            &config.payments_topic,
            config.orders_topic_partitions as i32,
            config.orders_topic_replication as i32,
        )
        .await
        {
            tracing::warn!(error = %e, topic = %config.payments_topic, "payments topic not ready; retrying");
            if wait_or_stop(&stop, kafka::RETRY_BACKOFF).await {
                return;
            }
        }
        let consumer = Arc::new(consumer);
        let mut assigned = 0;
        while assigned == 0 {
            match follow_partitions(&consumer, &config.payments_topic, assigned).await {
                Ok(n) => assigned = n,
                Err(e) => {
                    tracing::warn!(error = %e, "payments topic not readable yet; retrying");
                    if wait_or_stop(&stop, kafka::RETRY_BACKOFF).await {
                        return;
                    }
                }
            }
        }
        tracing::info!(topic = %config.payments_topic, group = %config.payments_group, partitions = assigned, "payment-result consumer on");
        let watcher = tokio::spawn({
            let (consumer, topic, stop) = (
                consumer.clone(),
                config.payments_topic.clone(),
                stop.clone(),
            );
            async move {
                while !wait_or_stop(&stop, PARTITION_CHECK).await {
                    match follow_partitions(&consumer, &topic, assigned).await {
                        Ok(n) => assigned = n,
                        Err(e) => tracing::warn!(error = %e, "payments topic metadata not read"),
                    }
                }
            }
        });
        run(&engine, &consumer, stop).await;
        watcher.abort();
        let _ = watcher.await;
        close(consumer).await;
    }))
}

/// How long a stopping server waits for the payment-result consumer to close.
const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Closes the consumer, waiting at most `CLOSE_WITHIN`. rdkafka's drop closes a consumer and
/// waits, without a deadline, for its last offset commit to reach the group coordinator: with the
/// broker away, for ever (a stopping server hung in it). So it is dropped on a thread of its own;
/// past the deadline it is left there and the process ends without it. A result whose offset was
/// not committed is read again at the next start and changes nothing.
async fn close(consumer: Arc<StreamConsumer>) {
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("payments-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = closed_tx.send(());
        });
    if spawned.is_err() || tokio::time::timeout(CLOSE_WITHIN, closed).await.is_err() {
        tracing::warn!(
            within_s = CLOSE_WITHIN.as_secs(),
            "the payment-result consumer did not close in time (broker away?); its last offsets are committed when it is read again"
        );
    }
}

/// How often the consumer looks for partitions added to the payments topic.
const PARTITION_CHECK: Duration = Duration::from_secs(30);

/// Assigns the partitions of `topic` past the first `assigned`, from the group's committed
/// offsets (or the earliest message); how many it reads now.
async fn follow_partitions(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    assigned: usize,
) -> Result<usize, String> {
    let (consumer, topic) = (consumer.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let now = kafka::partition_count(consumer.as_ref(), &topic, Duration::from_secs(5))?;
        if now > assigned {
            kafka::assign_partitions(consumer.as_ref(), &topic, assigned..now, Offset::Stored)
                .map_err(|e| format!("assigning {topic}: {e}"))?;
            if assigned > 0 {
                tracing::info!(%topic, partitions = now, "payments topic grew; reading its new partitions");
            }
        }
        Ok(now.max(assigned))
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn run(engine: &Engine, consumer: &StreamConsumer, mut stop: watch::Receiver<bool>) {
    while let Some(batch) = kafka::next_batch(consumer, BATCH, &mut stop).await {
        let settled = join_all(batch.iter().map(|m| settle(engine, m, &stop))).await;
        if settled.iter().any(|done| !done) {
            return; // stopping: the batch's offsets stay uncommitted and it is read again
        }
        if let Err(e) = kafka::commit_batch(consumer, &batch) {
            // The results are durable, and read again they change nothing; but offsets that are
            // never committed (another member in the group refuses this consumer's commits)
            // make every restart read the topic again, so they are counted.
            tracing::warn!(error = %e, "payment offsets not committed");
            counter!("boxoffice_payment_offset_commit_failures_total").increment(1);
        }
    }
}

/// Applies one message; `false` if the server began stopping before it could.
async fn settle(engine: &Engine, message: &OwnedMessage, stop: &watch::Receiver<bool>) -> bool {
    let decoded = v1::PaymentResult::decode(message.payload().unwrap_or_default())
        .map_err(|e| format!("not a boxoffice.v1.PaymentResult: {e}"))
        .and_then(|r| convert::payment_result(r).map_err(|e| e.message));
    let (event, result) = match decoded {
        Ok(r) => r,
        Err(why) => return skip(message, &why),
    };
    let order = result.order_id;
    loop {
        let answer = match engine.event(event) {
            Ok(handle) => handle.settle_payment(result.clone()).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok((settlement, _)) => {
                let outcome = match settlement {
                    Settlement::Paid => "paid",
                    Settlement::Cancelled => "cancelled",
                    Settlement::RefundRequested => "refund_requested",
                    Settlement::Unchanged => "unchanged",
                };
                tracing::debug!(%event, %order, outcome, "payment result applied");
                counter!("boxoffice_payment_results_total", "outcome" => outcome).increment(1);
                return true;
            }
            Err(e @ (Error::EventNotFound(_) | Error::Rejected(_))) => {
                return skip(message, &e.to_string());
            }
            Err(e) => {
                // Overloaded, timed out, recovering, storage, stopping: the result waits.
                tracing::warn!(%event, %order, error = %e, "payment result not applied yet; retrying");
                counter!("boxoffice_payment_results_total", "outcome" => "retried").increment(1);
                if wait_or_stop(stop, kafka::RETRY_BACKOFF).await {
                    return false;
                }
            }
        }
    }
}

/// Logs and counts a message that can never be applied; it is committed past.
fn skip(message: &OwnedMessage, why: &str) -> bool {
    tracing::warn!(
        partition = message.partition(),
        offset = message.offset(),
        why,
        "payment result refused and skipped"
    );
    counter!("boxoffice_payment_results_total", "outcome" => "invalid").increment(1);
    true
}

/// Sleeps `pause`; `true` if the server began stopping meanwhile.
async fn wait_or_stop(stop: &watch::Receiver<bool>, pause: Duration) -> bool {
    let mut stop = stop.clone();
    tokio::select! {
        _ = stop.wait_for(|s| *s) => true,
        () = tokio::time::sleep(pause) => false,
    }
}
