//! The payment adapter: consumes the order events (`boxoffice.orders.v1`) in its own consumer
//! group, charges a provider for every `OrderConfirmed`, gives money back for every
//! `OrderRefunded` and `RefundRequested`, and reports each charge's outcome to the engine as a
//! `boxoffice.v1.PaymentResult` on `boxoffice.payments.v1`.
//!
//! At least once in, exactly one charge per order. Messages come in batches; per batch:
//! 1. each order is charged (concurrently; a batch holds at most `max_in_flight`) with the order id as
//!    the provider's idempotency key, unless the ledger already holds its result;
//! 2. every new result is written to the ledger and the ledger flushed (fsync), once;
//! 3. the results not yet published are published (idempotent producer, `acks=all`) and the
//!    acknowledgements awaited;
//! 4. they are marked published in the ledger (flushed again), and only then are the batch's
//!    offsets committed.
//!
//! A crash anywhere repeats at most steps 1 to 4 for the batch (and a result recorded but not
//! marked published is published again at start): the provider finds the payment
//! under its key and answers as before, so the order is never charged twice, and the engine
//! applies a result it already has as a no-op. A provider that fails is retried with backoff
//! behind a circuit breaker; an order waits for it until its payment deadline, and is then left
//! to the engine, which cancels it.
//!
//! It talks to boxoffice only through Kafka, never through its files.

pub mod breaker;
pub mod ledger;
pub mod provider;
pub mod wallet;
pub mod wallet_api;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use kafka::rdkafka::Message;
use kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use kafka::rdkafka::message::OwnedMessage;
use kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use metrics::{counter, gauge, histogram};
use prost::Message as _;
use proto::v1;
use proto::v1::order_event::Change;
use tokio::sync::watch;

use self::breaker::{Breaker, backoff};
use self::ledger::{Charge, Ledger, Refund};
use self::provider::{ChargeRequest, Outcome, Provider, TestProvider};
use self::wallet::Wallet;
use self::webhook::WebhookProvider;
use crate::unix_ms;

/// Attempts at a refund before it is left to an operator.
const REFUND_ATTEMPTS: u32 = 8;

/// Everything the adapter is told at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub brokers: String,
    pub orders_topic: String,
    pub payments_topic: String,
    pub group: String,
    /// This adapter's static member id in the group; one per running adapter.
    pub instance_id: String,
    pub data_dir: PathBuf,
    /// Orders charged at once, at most; also the most messages taken per batch.
    pub max_in_flight: usize,
    /// The provider of a payment reference without a known scheme.
    pub default_provider: String,
    /// Failures in a row that open a provider's breaker, and how long it stays open.
    pub breaker_threshold: u32,
    pub breaker_cool_down: Duration,
    /// librdkafka properties for every client (TLS, SASL, ...).
    pub properties: BTreeMap<String, String>,
    /// How a missing topic is made.
    pub topics: crate::TopicShape,
    /// Where the Wallet gRPC service listens, and the keys it takes.
    pub listen: std::net::SocketAddr,
    pub api_keys: Vec<wallet_api::ApiKey>,
    pub webhook: WebhookSettings,
}

/// The webhook provider's settings; off unless `api` is set.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// The provider's API base URL.
    pub api: Option<String>,
    pub api_key: String,
    /// Secrets that sign webhooks; several during a rotation.
    pub secrets: Vec<String>,
    /// How far a signature's time may lie from now.
    pub tolerance: Duration,
    /// Where the provider sends webhooks (`POST /webhooks/payments`).
    pub listen: std::net::SocketAddr,
    /// A payment pending longer than this with no webhook is looked up at the provider; checked
    /// every `reconcile_every`.
    pub reconcile_after: Duration,
    pub reconcile_every: Duration,
}

struct Adapter {
    settings: Settings,
    ledger: Arc<Ledger>,
    providers: Vec<Provider>,
    breakers: BTreeMap<&'static str, Breaker>,
    producer: FutureProducer,
}

/// What one message asks of the adapter, after its charge or refund.
enum Done {
    /// Nothing to publish.
    Nothing,
    /// A result to record and publish.
    Publish { order_id: String, charge: Charge },
    /// The server is stopping: leave the batch uncommitted.
    Stopping,
    /// The ledger failed: leave the batch uncommitted and stop with an error.
    Failed,
}

/// Runs the adapter until `stop` turns true. `ready` is called once it is subscribed, with the
/// Wallet service's address and the webhook endpoint's, if on.
pub async fn run(
    settings: Settings,
    stop: watch::Receiver<bool>,
    ready: impl FnOnce(std::net::SocketAddr, Option<std::net::SocketAddr>),
) -> anyhow::Result<()> {
    use anyhow::Context;
    let ledger = Arc::new(Ledger::open(&settings.data_dir.join("ledger"))?);
    let wallet = Wallet::new(ledger.clone());
    let mut providers = vec![
        Provider::Test(TestProvider::new(ledger.clone())),
        Provider::Wallet(wallet.clone()),
    ];
    if let Some(api) = &settings.webhook.api {
        providers.push(Provider::Webhook(WebhookProvider::new(
            api,
            &settings.webhook.api_key,
        )?));
    }
    anyhow::ensure!(
        providers
            .iter()
            .any(|p| p.name() == settings.default_provider),
        "default provider `{}` is not one of: test, wallet, webhook (with --webhook-api)",
        settings.default_provider
    );
    let grpc = wallet_api::serve(settings.listen, wallet, settings.api_keys.clone()).await?;
    let breakers = providers
        .iter()
        .map(|p| {
            let breaker = Breaker::new(settings.breaker_threshold, settings.breaker_cool_down);
            (p.name(), breaker)
        })
        .collect();
    let producer =
        kafka::producer(&settings.brokers, &settings.properties, 1).context("payments producer")?;
    // Either topic may be missing before boxoffice's first start; both are made as it makes them.
    let Some(consumer) = crate::subscribed_consumer(
        &settings.brokers,
        &settings.properties,
        (&settings.group, &settings.instance_id),
        (
            &[&settings.orders_topic, &settings.payments_topic],
            settings.topics,
        ),
        &[&settings.orders_topic],
        &stop,
    )
    .await?
    else {
        return Ok(());
    };
    let adapter = Arc::new(Adapter {
        settings,
        ledger,
        providers,
        breakers,
        producer,
    });
    adapter.republish_unpublished().await?;
    tokio::spawn(lag(consumer_lag_source(&adapter.settings)?, stop.clone()));
    let mut webhooks = None;
    if adapter.settings.webhook.api.is_some() {
        webhooks = Some(webhook_endpoint(adapter.clone()).await?);
        tokio::spawn(reconcile(adapter.clone(), stop.clone()));
    }
    ready(grpc, webhooks);
    let consumed = adapter.consume(&consumer, stop).await;
    adapter.ledger.flush()?;
    consumed
}

impl Adapter {
    async fn consume(
        &self,
        consumer: &StreamConsumer,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let max = self.settings.max_in_flight.max(1);
        while let Some(batch) = kafka::next_batch(consumer, max, &mut stop).await {
            let done = join_all(batch.iter().map(|m| self.handle(m, &stop))).await;
            if done.iter().any(|d| matches!(d, Done::Stopping)) {
                return Ok(());
            }
            if done.iter().any(|d| matches!(d, Done::Failed)) {
                anyhow::bail!("the payment ledger failed; the batch stays uncommitted");
            }
            let fresh: Vec<(String, Charge)> = done
                .into_iter()
                .filter_map(|d| match d {
                    Done::Publish { order_id, charge } if !charge.published => {
                        Some((order_id, charge))
                    }
                    _ => None,
                })
                .collect();
            // Refunds and pending payments of the batch are flushed here too.
            self.record_and_publish(&fresh).await?;
            if let Err(e) = kafka::commit_batch(consumer, &batch) {
                tracing::warn!(error = %e, "order-event offsets not committed; the batch will be read again and change nothing");
            }
        }
        Ok(())
    }

    async fn handle(&self, message: &OwnedMessage, stop: &watch::Receiver<bool>) -> Done {
        let event = match v1::OrderEvent::decode(message.payload().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(partition = message.partition(), offset = message.offset(), error = %e, "not an order event; skipped");
                counter!("boxoffice_payments_skipped_total", "why" => "undecodable").increment(1);
                return Done::Nothing;
            }
        };
        let result = match event.change {
            Some(Change::OrderConfirmed(c)) => match c.order {
                Some(order) => self.charge(order, stop).await,
                None => Ok(Done::Nothing),
            },
            Some(Change::OrderRefunded(r)) => match r.order {
                Some(order) => {
                    let payment = order.payment.clone().unwrap_or_default();
                    let (provider, reference) = (payment.provider, payment.provider_reference);
                    self.refund(&order, &provider, &reference, r.amount_minor, stop)
                        .await
                }
                None => Ok(Done::Nothing),
            },
            Some(Change::RefundRequested(r)) => match r.order {
                Some(order) => {
                    let (provider, reference) = (&r.provider, &r.provider_reference);
                    self.refund(&order, provider, reference, r.amount_minor, stop)
                        .await
                }
                None => Ok(Done::Nothing),
            },
            _ => Ok(Done::Nothing),
        };
        result.unwrap_or_else(|e| {
            // The ledger failed: stop here; a restart reads the batch again.
            tracing::error!(error = %e, "payment ledger failed; stopping");
            Done::Failed
        })
    }

    fn provider(&self, reference: &str) -> &Provider {
        let default = self
            .providers
            .iter()
            .find(|p| p.name() == self.settings.default_provider)
            .expect("checked at start");
        provider::for_reference(&self.providers, default, reference)
    }

    async fn charge(
        &self,
        order: v1::Order,
        stop: &watch::Receiver<bool>,
    ) -> Result<Done, ledger::LedgerError> {
        if let Some(charge) = self.ledger.charge(&order.order_id)? {
            return Ok(Done::Publish {
                order_id: order.order_id,
                charge,
            });
        }
        let provider = self.provider(&order.payment_reference);
        let breaker = &self.breakers[provider.name()];
        let request = ChargeRequest {
            key: order.order_id.clone(),
            customer: order.customer_id.clone(),
            event_id: order.event_id.clone(),
            reference: order.payment_reference.clone(),
            amount_minor: order.total_minor,
            currency: order.currency.clone(),
        };
        let due_ms = order.payment_due_at.map_or(u64::MAX, |t| {
            (t.seconds.max(0) as u64).saturating_mul(1_000)
        });
        let mut attempt = 0;
        let outcome = loop {
            if !breaker.wait_closed(stop).await {
                return Ok(Done::Stopping);
            }
            let started = Instant::now();
            let in_flight =
                gauge!("boxoffice_payments_charges_in_flight", "provider" => provider.name());
            in_flight.increment(1.0);
            let answer = provider.charge(&request).await;
            in_flight.decrement(1.0);
            histogram!("boxoffice_payments_provider_seconds", "provider" => provider.name())
                .record(started.elapsed().as_secs_f64());
            match answer {
                Ok(outcome) => {
                    breaker.success();
                    break outcome;
                }
                Err(e) => {
                    breaker.failure();
                    gauge!("boxoffice_payments_breaker_open", "provider" => provider.name())
                        .set(if breaker.is_open() { 1.0 } else { 0.0 });
                    counter!("boxoffice_payments_charges_total", "provider" => provider.name(), "outcome" => "failed").increment(1);
                    if unix_ms() >= due_ms {
                        tracing::warn!(order_id = %order.order_id, error = %e, "provider failing past the payment deadline; the engine cancels the order");
                        counter!("boxoffice_payments_skipped_total", "why" => "deadline")
                            .increment(1);
                        return Ok(Done::Nothing);
                    }
                    tracing::warn!(order_id = %order.order_id, attempt, error = %e, "charge failed; retrying");
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(Done::Stopping),
                        () = tokio::time::sleep(backoff(attempt)) => {}
                    }
                    attempt += 1;
                }
            }
        };
        gauge!("boxoffice_payments_breaker_open", "provider" => provider.name()).set(0.0);
        if let Outcome::Pending { provider_ref } = &outcome {
            // The outcome comes by webhook or reconciliation; flushed with the batch before its
            // offsets are committed.
            self.ledger.put_pending(&ledger::Pending {
                order_id: order.order_id.clone(),
                event_id: order.event_id.clone(),
                provider_ref: provider_ref.clone(),
                since_ms: unix_ms(),
            })?;
            counter!("boxoffice_payments_charges_total", "provider" => provider.name(), "outcome" => "pending").increment(1);
            return Ok(Done::Nothing);
        }
        let charge = result_charge(provider.name(), &order.event_id, &order.order_id, outcome)
            .expect("not pending");
        Ok(Done::Publish {
            order_id: order.order_id,
            charge,
        })
    }

    /// Records `charges` (flushed), publishes them, waits for the acknowledgements, and marks
    /// them published (flushed again); the ledger is flushed even when `charges` is empty, for
    /// what the caller wrote before.
    async fn record_and_publish(&self, charges: &[(String, Charge)]) -> anyhow::Result<()> {
        for (order_id, charge) in charges {
            self.ledger.put_charge(order_id, charge)?;
        }
        tokio::task::block_in_place(|| self.ledger.flush())?;
        if charges.is_empty() {
            return Ok(());
        }
        // Recorded and durable, not yet acknowledged: what a crash now leaves to the next start.
        let unpublished = gauge!("boxoffice_payments_results_unpublished");
        unpublished.increment(charges.len() as f64);
        let sends = charges.iter().map(|(order_id, charge)| async move {
            let record = FutureRecord::to(&self.settings.payments_topic)
                .key(&charge.event_id)
                .payload(&charge.result);
            self.producer
                .send(record, Duration::from_secs(60))
                .await
                .map(|_| (order_id, charge))
                .map_err(|(e, _)| e)
        });
        for sent in join_all(sends).await {
            let (order_id, charge) = sent?;
            let published = Charge {
                published: true,
                ..charge.clone()
            };
            self.ledger.put_charge(order_id, &published)?;
            counter!("boxoffice_payments_results_published_total").increment(1);
        }
        // The marks durable before any offset is committed: a result whose offset is committed
        // is known published, and one not committed is read and published again.
        tokio::task::block_in_place(|| self.ledger.flush())?;
        unpublished.decrement(charges.len() as f64);
        Ok(())
    }

    /// At start: publishes every result recorded but not marked published (a crash came between
    /// the ledger's flush and the broker's acknowledgement, and its message may not come again).
    async fn republish_unpublished(&self) -> anyhow::Result<()> {
        let waiting: Vec<(String, Charge)> = self
            .ledger
            .charges()?
            .into_iter()
            .filter(|(_, c)| !c.published)
            .collect();
        if !waiting.is_empty() {
            tracing::info!(
                results = waiting.len(),
                "publishing results recorded before a restart"
            );
        }
        self.record_and_publish(&waiting).await
    }

    /// Applies a payment the webhook provider settled (by webhook or lookup): recorded, flushed,
    /// published, marked. What it did, for the metrics.
    async fn settle_pending(
        &self,
        payment: &webhook::ProviderPayment,
    ) -> anyhow::Result<&'static str> {
        let Some(pending) = self.ledger.pending(&payment.id)? else {
            return Ok(match self.ledger.charge(&payment.order_id)? {
                Some(charge) if !charge.published => {
                    self.record_and_publish(&[(payment.order_id.clone(), charge)])
                        .await?;
                    "repeat"
                }
                Some(_) => "repeat",
                // Not (yet) known here: the create's answer may still be on its way. The
                // provider retries a webhook that is not taken.
                None => "unknown",
            });
        };
        let Some(outcome) = payment.outcome() else {
            return Ok("still_pending");
        };
        let charge = result_charge("webhook", &pending.event_id, &pending.order_id, outcome)
            .expect("settled");
        // The pending entry goes only once the result is published: a crash before that leaves it
        // for the next webhook or the reconciliation, and the startup pass republishes a result
        // recorded but not published.
        self.record_and_publish(&[(pending.order_id.clone(), charge)])
            .await?;
        self.ledger.remove_pending(&payment.id)?;
        tokio::task::block_in_place(|| self.ledger.flush())?;
        Ok("applied")
    }

    /// Gives a payment back at its provider, once per order and payment reference.
    async fn refund(
        &self,
        order: &v1::Order,
        provider_name: &str,
        provider_ref: &str,
        amount_minor: u64,
        stop: &watch::Receiver<bool>,
    ) -> Result<Done, ledger::LedgerError> {
        let key = &format!("refund:{}:{provider_ref}", order.order_id);
        if self.ledger.has_refund(key)? {
            return Ok(Done::Nothing);
        }
        let Some(provider) = self.providers.iter().find(|p| p.name() == provider_name) else {
            tracing::error!(order_id = %order.order_id, provider = provider_name, "refund for a provider this adapter does not speak; give it back by hand");
            counter!("boxoffice_payments_skipped_total", "why" => "unknown_provider").increment(1);
            return Ok(Done::Nothing);
        };
        let mut attempt = 0;
        loop {
            match provider.refund(key, provider_ref, amount_minor).await {
                Ok(()) => break,
                Err(e) if attempt + 1 >= REFUND_ATTEMPTS => {
                    // Not retried for ever: it would hold up every order behind it. Logged and
                    // counted for an operator to give back by hand (the ledger has no record of it).
                    tracing::error!(order_id = %order.order_id, provider_ref, amount_minor, error = %e, "refund failed; give it back by hand");
                    counter!("boxoffice_payments_refunds_failed_total", "provider" => provider.name()).increment(1);
                    return Ok(Done::Nothing);
                }
                Err(e) => {
                    tracing::warn!(order_id = %order.order_id, attempt, error = %e, "refund failed; retrying");
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return Ok(Done::Stopping),
                        () = tokio::time::sleep(backoff(attempt)) => {}
                    }
                    attempt += 1;
                }
            }
        }
        self.ledger.put_refund(
            key,
            &Refund {
                order_id: order.order_id.clone(),
                provider: provider_name.to_string(),
                provider_ref: provider_ref.to_string(),
                amount_minor,
            },
        )?;
        counter!("boxoffice_payments_refunds_total", "provider" => provider.name()).increment(1);
        Ok(Done::Nothing)
    }
}

/// The charge to record for an outcome; `None` while it is pending.
fn result_charge(
    provider: &str,
    event_id: &str,
    order_id: &str,
    outcome: Outcome,
) -> Option<Charge> {
    let (label, outcome) = match outcome {
        Outcome::Approved {
            provider_ref,
            amount_minor,
            currency,
        } => (
            "approved",
            v1::payment_result::Outcome::Approved(v1::PaymentApproved {
                provider_reference: provider_ref,
                amount_minor,
                currency,
            }),
        ),
        Outcome::Declined { reason } => (
            "declined",
            v1::payment_result::Outcome::Declined(v1::PaymentDeclined { reason }),
        ),
        Outcome::Pending { .. } => return None,
    };
    counter!("boxoffice_payments_charges_total", "provider" => provider.to_string(), "outcome" => label).increment(1);
    let result = v1::PaymentResult {
        event_id: event_id.to_string(),
        order_id: order_id.to_string(),
        provider: provider.to_string(),
        outcome: Some(outcome),
    };
    Some(Charge {
        event_id: event_id.to_string(),
        result: result.encode_to_vec(),
        published: false,
    })
}

/// A consumer of its own in the adapter's group, only to read offsets for the lag gauge.
fn consumer_lag_source(settings: &Settings) -> anyhow::Result<(StreamConsumer, String)> {
    let consumer = kafka::consumer(&settings.brokers, &settings.group, &settings.properties)?;
    Ok((consumer, settings.orders_topic.clone()))
}

/// Every 5 s: messages of the order topic not yet committed by the adapter's group, summed over
/// partitions (`boxoffice_payments_consumer_lag_messages`).
async fn lag((consumer, topic): (StreamConsumer, String), mut stop: watch::Receiver<bool>) {
    use kafka::rdkafka::{Offset, TopicPartitionList};
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let consumer = &consumer;
        let topic = topic.clone();
        let lag = tokio::task::block_in_place(move || -> Option<i64> {
            let partitions =
                kafka::partition_count(consumer, &topic, Duration::from_secs(5)).ok()? as i32;
            let mut list = TopicPartitionList::new();
            for p in 0..partitions {
                list.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(list, Duration::from_secs(5))
                .ok()?;
            let mut lag = 0;
            for p in 0..partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(5))
                    .ok()?;
                let at = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => low,
                };
                lag += (high - at).max(0);
            }
            Some(lag)
        });
        if let Some(lag) = lag {
            gauge!("boxoffice_payments_consumer_lag_messages").set(lag as f64);
        }
    }
}

/// The webhook endpoint: `POST /webhooks/payments`, signature checked over the raw body before
/// anything else; 401 for a bad, missing or stale signature (logged and counted, nothing
/// changes), 400 for a signed body that is not a payment event, 200 otherwise (a repeat too).
async fn webhook_endpoint(adapter: Arc<Adapter>) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    use axum::http::{HeaderMap, StatusCode};
    let listen = adapter.settings.webhook.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the webhook port {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "webhook endpoint on");
    let handler = move |headers: HeaderMap, body: axum::body::Bytes| {
        let adapter = adapter.clone();
        async move {
            let settings = &adapter.settings.webhook;
            let header = headers
                .get(webhook::SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok());
            let now_s = unix_ms() / 1_000;
            if let Err(e) = webhook::verify(
                header,
                &body,
                &settings.secrets,
                now_s,
                settings.tolerance.as_secs(),
            ) {
                tracing::warn!(error = %e, "webhook refused");
                counter!("boxoffice_payments_webhooks_total", "outcome" => "bad_signature")
                    .increment(1);
                return (StatusCode::UNAUTHORIZED, e.to_string());
            }
            let event: webhook::WebhookEvent = match serde_json::from_slice(&body) {
                Ok(e) => e,
                Err(e) => {
                    counter!("boxoffice_payments_webhooks_total", "outcome" => "malformed")
                        .increment(1);
                    return (StatusCode::BAD_REQUEST, format!("not a payment event: {e}"));
                }
            };
            match adapter.settle_pending(&event.data).await {
                Ok("unknown") => {
                    counter!("boxoffice_payments_webhooks_total", "outcome" => "unknown")
                        .increment(1);
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "payment not known yet; retry".to_string(),
                    )
                }
                Ok(outcome) => {
                    counter!("boxoffice_payments_webhooks_total", "outcome" => outcome)
                        .increment(1);
                    (StatusCode::OK, outcome.to_string())
                }
                Err(e) => {
                    // The provider retries a webhook that was not taken.
                    tracing::warn!(error = %e, "webhook not applied yet");
                    counter!("boxoffice_payments_webhooks_total", "outcome" => "retry")
                        .increment(1);
                    (StatusCode::SERVICE_UNAVAILABLE, "retry later".to_string())
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/webhooks/payments", axum::routing::post(handler))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// Looks up, every `reconcile_every`, each payment pending longer than `reconcile_after`, and
/// settles those the provider has settled: a webhook lost on the way changes nothing.
async fn reconcile(adapter: Arc<Adapter>, mut stop: watch::Receiver<bool>) {
    let Some(Provider::Webhook(provider)) = adapter
        .providers
        .iter()
        .find(|p| matches!(p, Provider::Webhook(_)))
        .cloned()
    else {
        return;
    };
    let settings = adapter.settings.webhook.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(settings.reconcile_every) => {}
        }
        let Ok(pendings) = adapter.ledger.pendings() else {
            continue;
        };
        let due = unix_ms().saturating_sub(settings.reconcile_after.as_millis() as u64);
        for pending in pendings.into_iter().filter(|p| p.since_ms <= due) {
            match provider.lookup(&pending.provider_ref).await {
                Ok(payment) => match adapter.settle_pending(&payment).await {
                    Ok(outcome) => {
                        counter!("boxoffice_payments_reconciled_total", "outcome" => outcome)
                            .increment(1);
                    }
                    Err(e) => tracing::warn!(error = %e, "reconciliation not applied yet"),
                },
                Err(e) => {
                    tracing::warn!(provider_ref = %pending.provider_ref, error = %e, "lookup failed")
                }
            }
        }
    }
}
