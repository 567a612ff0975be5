//! The ticket-file adapter (`boxoffice-tickets`): consumes the order events
//! (`boxoffice.orders.v1`) in its own consumer group, keeps every `EventCreated` (names, venue,
//! start and time zone, for what tickets print), renders one PDF per `OrderPaid` (a page per
//! ticket with its signed token as a QR code, `render`), stores it in its directory or its
//! bucket (`crate::files`), and says where it is with a `boxoffice.v1.TicketsRendered` on `boxoffice.tickets.v1`, which the email
//! adapter consumes. Storefronts fetch a file through its `boxoffice.v1.TicketFiles` service.
//!
//! At least once in, one file per order. Per batch of messages:
//! 1. events are recorded; each paid order not rendered before is rendered on the blocking pool
//!    (at most `max_parallel_renders` at once) and its file written whole (`crate::files`);
//! 2. the new files are recorded and the state flushed (fsync), once;
//! 3. their `TicketsRendered` are published (idempotent producer, `acks=all`) and the
//!    acknowledgements awaited; they are marked published (flushed again);
//! 4. only then are the batch's offsets committed.
//!
//! A crash anywhere repeats at most steps 1 to 4 for the batch: an order already recorded is not
//! rendered again, and rendering is deterministic (same order, same bytes), so a file written
//! before the crash but not recorded is replaced by the same file. A `TicketsRendered` recorded
//! and not marked published is published again at start. An order that cannot be rendered (its
//! event was never read, or the renderer refused it) is parked, listed by
//! `boxoffice-tickets parked`, counted in `boxoffice_tickets_parked`, and tried again at every
//! start; its offset is committed so the orders after it are not held up.
//!
//! It talks to boxoffice only through Kafka, never through its files.

pub mod render;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use kafka::rdkafka::Message;
use kafka::rdkafka::consumer::StreamConsumer;
use kafka::rdkafka::message::OwnedMessage;
use kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use metrics::{counter, gauge, histogram};
use prost::Message as _;
use proto::v1;
use proto::v1::order_event::Change;
use tokio::sync::{Semaphore, watch};

use self::render::{Paper, TicketDocument, TicketPage};
use self::store::{Parked, Rendered, Store, StoreError};
use crate::api_keys::ApiKey;
use crate::files::{Files, Location};
use crate::{timestamp, unix_ms};
use sha2::{Digest, Sha256};

/// The roles the `TicketFiles` service knows.
pub const ROLES: &[&str] = &["storefront"];

/// The largest file `GetTicketFile` answers with; an order's tickets are limited by the engine
/// (`limits.max_tickets_per_request`), so a file this big means something else is wrong.
const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;

/// Everything the adapter is told at start.
#[derive(Clone, Debug)]
pub struct Settings {
    pub brokers: String,
    pub orders_topic: String,
    pub tickets_topic: String,
    pub group: String,
    /// This adapter's static member id in the group; one per running adapter.
    pub instance_id: String,
    /// Where the state database lives.
    pub data_dir: PathBuf,
    /// Where the PDF files go (a directory, or a bucket checked at start), and are read from.
    pub files: Arc<Files>,
    pub paper: Paper,
    /// Renders running at once, at most.
    pub max_parallel_renders: usize,
    /// Messages taken per batch, at most.
    pub max_batch: usize,
    /// librdkafka properties for every client (TLS, SASL, ...).
    pub properties: BTreeMap<String, String>,
    /// How a missing topic is made.
    pub topics: crate::TopicShape,
    /// Where the `TicketFiles` gRPC service listens, and the keys it takes.
    pub listen: SocketAddr,
    pub api_keys: Vec<ApiKey>,
}

struct Adapter {
    settings: Settings,
    store: Arc<Store>,
    producer: FutureProducer,
    renders: Arc<Semaphore>,
}

fn timestamp_ms(t: Option<&proto::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000)
            .saturating_add(i64::from(t.nanos / 1_000_000))
    })
}

/// Runs the adapter until `stop` turns true. `ready` is called once it consumes, with the
/// `TicketFiles` service's address.
pub async fn run(
    settings: Settings,
    stop: watch::Receiver<bool>,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    use anyhow::Context;
    let store = Arc::new(Store::open(&settings.data_dir.join("state"))?);
    let producer =
        kafka::producer(&settings.brokers, &settings.properties, 1).context("tickets producer")?;
    let Some(consumer) = crate::subscribed_consumer(
        &settings.brokers,
        &settings.properties,
        (&settings.group, &settings.instance_id),
        (
            &[&settings.orders_topic, &settings.tickets_topic],
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
        renders: Arc::new(Semaphore::new(settings.max_parallel_renders.max(1))),
        settings,
        store,
        producer,
    });
    adapter.retry_parked().await?;
    adapter.publish_recorded().await?;
    let grpc = files_api::serve(
        adapter.settings.listen,
        adapter.store.clone(),
        adapter.settings.files.clone(),
        adapter.settings.api_keys.clone(),
    )
    .await?;
    ready(grpc);
    let consumed = adapter.consume(&consumer, stop).await;
    adapter.store.flush()?;
    consumed
}

/// What one paid order came to.
enum Outcome {
    /// Rendered now or before; `Rendered::published` says whether to publish.
    Rendered(String, Rendered),
    /// Parked (recorded, flushed with the batch).
    Parked,
}

impl Adapter {
    async fn consume(
        &self,
        consumer: &StreamConsumer,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let max = self.settings.max_batch.max(1);
        while let Some(batch) = kafka::next_batch(consumer, max, &mut stop).await {
            let mut paid: Vec<v1::Order> = Vec::new();
            for message in &batch {
                // A redelivery in the same batch: one render, one file.
                if let Some(order) = self.read(message)?
                    && !paid.iter().any(|o| o.order_id == order.order_id)
                {
                    paid.push(order);
                }
            }
            let outcomes = join_all(paid.into_iter().map(|o| self.render_order(o))).await;
            let mut fresh = Vec::new();
            for outcome in outcomes {
                if let Outcome::Rendered(order_id, rendered) = outcome?
                    && !rendered.published
                {
                    fresh.push((order_id, rendered));
                }
            }
            self.record_and_publish(fresh).await?;
            if let Err(e) = kafka::commit_batch(consumer, &batch) {
                tracing::warn!(error = %e, "order-event offsets not committed; the batch will be read again and change nothing");
            }
        }
        Ok(())
    }

    /// Records an `EventCreated`; returns the order of an `OrderPaid`; skips the rest.
    fn read(&self, message: &OwnedMessage) -> Result<Option<v1::Order>, StoreError> {
        let event = match v1::OrderEvent::decode(message.payload().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(partition = message.partition(), offset = message.offset(), error = %e, "not an order event; skipped");
                counter!("boxoffice_tickets_skipped_total", "why" => "undecodable").increment(1);
                return Ok(None);
            }
        };
        match event.change {
            Some(Change::EventCreated(created)) => {
                if let Some(e) = created.event {
                    self.store.put_event(&e.event_id, &e.encode_to_vec())?;
                }
                Ok(None)
            }
            Some(Change::OrderPaid(paid)) => Ok(paid.order),
            _ => Ok(None),
        }
    }

    /// Renders `order` unless it was before; parks it if it cannot be.
    async fn render_order(&self, order: v1::Order) -> anyhow::Result<Outcome> {
        if let Some(rendered) = self.store.rendered(&order.order_id)? {
            counter!("boxoffice_tickets_skipped_total", "why" => "rendered_before").increment(1);
            return Ok(Outcome::Rendered(order.order_id, rendered));
        }
        let Some(event) = self.store.event(&order.event_id)? else {
            let why = format!(
                "no EventCreated was read for event {}: nothing to print its name and time from",
                order.event_id
            );
            return self.park(&order, why);
        };
        let event = match v1::Event::decode(event.as_slice()) {
            Ok(e) => e,
            Err(e) => return self.park(&order, format!("the stored event does not decode: {e}")),
        };
        let document = document(&event, &order, self.settings.paper);
        let location = match self
            .settings
            .files
            .location_of(&order.event_id, &order.order_id)
        {
            Ok(l) => l,
            Err(e) => return self.park(&order, e.to_string()),
        };
        let _permit = self
            .renders
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let started = Instant::now();
        let rendered = tokio::task::spawn_blocking(move || {
            render::render(&document).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("the render stopped: {e}")));
        let pdf = match rendered {
            Ok(pdf) => pdf,
            Err(why) => return self.park(&order, format!("the renderer refused it: {why}")),
        };
        let (sha256, bytes) = (store::hex(&Sha256::digest(&pdf)), pdf.len() as u64);
        // Under the render's permit: at most `max_parallel_renders` files in memory at once.
        self.settings.files.write(&location, pdf).await?;
        histogram!("boxoffice_tickets_render_seconds").record(started.elapsed().as_secs_f64());
        counter!("boxoffice_tickets_rendered_total").increment(1);
        counter!("boxoffice_tickets_pages_total").increment(order.tickets.len() as u64);
        let rendered_at_ms = unix_ms();
        let message = v1::TicketsRendered {
            location: location.url(),
            file_sha256: sha256.clone(),
            file_bytes: bytes,
            rendered_at: Some(timestamp(rendered_at_ms)),
            event: Some(slim(event)),
            order: Some(order.clone()),
        };
        Ok(Outcome::Rendered(
            order.order_id.clone(),
            Rendered {
                event_id: order.event_id.clone(),
                location: location.record(),
                sha256,
                bytes,
                tickets: order.tickets.len() as u32,
                rendered_at_ms,
                message: message.encode_to_vec(),
                published: false,
            },
        ))
    }

    fn park(&self, order: &v1::Order, why: String) -> anyhow::Result<Outcome> {
        tracing::error!(order_id = %order.order_id, why, "order parked: its tickets were not rendered");
        self.store.park(
            &order.order_id,
            &Parked {
                event_id: order.event_id.clone(),
                why,
                at_ms: unix_ms(),
                order: order.encode_to_vec(),
            },
        )?;
        gauge!("boxoffice_tickets_parked").set(self.store.parked_count() as f64);
        Ok(Outcome::Parked)
    }

    /// Records `fresh` (flushed), publishes them, waits for the acknowledgements, marks them
    /// published (flushed again). The state is flushed even when `fresh` is empty, for events and
    /// parked orders recorded before.
    async fn record_and_publish(&self, fresh: Vec<(String, Rendered)>) -> anyhow::Result<()> {
        for (order_id, rendered) in &fresh {
            self.store.put_rendered(order_id, rendered)?;
        }
        tokio::task::block_in_place(|| self.store.flush())?;
        if fresh.is_empty() {
            return Ok(());
        }
        let sends = fresh.iter().map(|(order_id, rendered)| async move {
            let headers = kafka::CloudEvent {
                id: format!("tickets-rendered-{order_id}"),
                kind: "boxoffice.tickets.rendered.v1".into(),
                source: "boxoffice-tickets".into(),
                time: kafka::rfc3339_ms(rendered.rendered_at_ms),
                subject: order_id.clone(),
                content_type: "application/protobuf".into(),
            }
            .headers();
            let record = FutureRecord::to(&self.settings.tickets_topic)
                .key(&rendered.event_id)
                .payload(&rendered.message)
                .headers(headers);
            self.producer
                .send(record, Duration::from_secs(60))
                .await
                .map_err(|(e, _)| e)
        });
        for (sent, (order_id, rendered)) in join_all(sends).await.into_iter().zip(&fresh) {
            sent?;
            let published = Rendered {
                published: true,
                ..rendered.clone()
            };
            self.store.put_rendered(order_id, &published)?;
            counter!("boxoffice_tickets_published_total").increment(1);
        }
        tokio::task::block_in_place(|| self.store.flush())?;
        Ok(())
    }

    /// At start: publishes every file recorded but not marked published.
    async fn publish_recorded(&self) -> anyhow::Result<()> {
        let waiting: Vec<_> = self
            .store
            .all_rendered()?
            .into_iter()
            .filter(|(_, r)| !r.published)
            .collect();
        if !waiting.is_empty() {
            tracing::info!(
                files = waiting.len(),
                "publishing files recorded before a restart"
            );
        }
        self.record_and_publish(waiting).await
    }

    /// At start: renders the parked orders again (a new version, or an event read since).
    async fn retry_parked(&self) -> anyhow::Result<()> {
        let parked = self.store.parked()?;
        let mut fresh = Vec::new();
        for (order_id, p) in parked {
            let Ok(order) = v1::Order::decode(p.order.as_slice()) else {
                tracing::error!(order_id, "a parked order does not decode; left parked");
                continue;
            };
            if let Outcome::Rendered(id, rendered) = self.render_order(order).await? {
                tracing::info!(order_id = %id, "parked order rendered");
                fresh.push((id, rendered));
            }
        }
        self.record_and_publish(fresh).await?;
        gauge!("boxoffice_tickets_parked").set(self.store.parked_count() as f64);
        Ok(())
    }
}

/// `event` without what its tickets and emails never print: seat maps (a stadium's is hundreds of
/// KB, and every order's announcement carries its event) and sale windows.
fn slim(event: v1::Event) -> v1::Event {
    v1::Event {
        tiers: event
            .tiers
            .into_iter()
            .map(|t| v1::Tier {
                stock: None,
                sale_windows: Vec::new(),
                ..t
            })
            .collect(),
        ..event
    }
}

/// The name printed on an order's tickets and used in its emails: its contact's name, else its
/// customer id.
pub fn holder(order: &v1::Order) -> String {
    order
        .contact
        .as_ref()
        .map(|c| c.name.trim())
        .filter(|n| !n.is_empty())
        .unwrap_or(&order.customer_id)
        .to_string()
}

/// What the renderer prints for `order` of `event`: per ticket its tier's name, its seat and
/// what was paid for it (unit price and fee of its line).
pub fn document(event: &v1::Event, order: &v1::Order, paper: Paper) -> TicketDocument {
    let holder = holder(order);
    let tickets = order
        .tickets
        .iter()
        .map(|t| {
            let tier_name = event
                .tiers
                .iter()
                .find(|tier| tier.code == t.tier_code)
                .map_or_else(|| t.tier_code.clone(), |tier| tier.name.clone());
            let price_minor = order
                .lines
                .iter()
                .find(|l| l.tier_code == t.tier_code)
                .map_or(0, |l| l.unit_price_minor.saturating_add(l.unit_fee_minor));
            TicketPage {
                ticket_id: t.ticket_id.clone(),
                tier_name,
                seat: t
                    .seat
                    .as_ref()
                    .map(|s| (s.section.clone(), s.row.clone(), s.number.clone())),
                price_minor,
                token: t.token.clone(),
            }
        })
        .collect();
    TicketDocument {
        event_name: event.name.clone(),
        venue: event.venue.clone(),
        starts_at_ms: timestamp_ms(event.starts_at.as_ref()),
        time_zone: event.time_zone.clone(),
        holder,
        order_id: order.order_id.clone(),
        currency: order.currency.clone(),
        tickets,
        paper,
    }
}

/// The `boxoffice.v1.TicketFiles` gRPC service: an order's file, for storefronts.
mod files_api {
    use super::*;
    use proto::v1::ticket_files_server::{TicketFiles, TicketFilesServer};
    use tonic::{Code, Request, Response, Status};

    use crate::api_keys::{check, status};

    struct Api {
        store: Arc<Store>,
        files: Arc<Files>,
        keys: Vec<ApiKey>,
    }

    #[tonic::async_trait]
    impl TicketFiles for Api {
        async fn get_ticket_file(
            &self,
            request: Request<v1::GetTicketFileRequest>,
        ) -> Result<Response<v1::GetTicketFileResponse>, Status> {
            check(&self.keys, &request, "storefront")?;
            let text = request.into_inner().order_id;
            // Keyed by the hyphenated lower-case form, as the engine writes ids.
            let order_id = uuid::Uuid::parse_str(&text)
                .map_err(|_| {
                    status(
                        Code::InvalidArgument,
                        "INVALID_ARGUMENT",
                        format!(
                            "order_id `{}` is not a UUID",
                            text.chars().take(40).collect::<String>()
                        ),
                    )
                })?
                .to_string();
            let storage = |e: String| {
                tracing::error!(error = e, "ticket file store");
                status(
                    Code::Internal,
                    "STORAGE",
                    "the ticket file could not be read",
                )
            };
            let rendered = self
                .store
                .rendered(&order_id)
                .map_err(|e| storage(e.to_string()))?
                .ok_or_else(|| {
                    status(
                        Code::NotFound,
                        "TICKETS_NOT_RENDERED",
                        format!("no ticket file for order {order_id} yet"),
                    )
                })?;
            // Read from wherever it was written, whatever this adapter writes to now.
            let location =
                Location::from_record(&rendered.location).map_err(|e| storage(e.to_string()))?;
            let pdf = self
                .files
                .read(&location, MAX_FILE_BYTES as u64)
                .await
                .map_err(|e| storage(e.to_string()))?;
            Ok(Response::new(v1::GetTicketFileResponse {
                pdf,
                file_sha256: rendered.sha256,
                event_id: rendered.event_id,
            }))
        }
    }

    /// Binds `listen` and serves `TicketFiles` (requests at most 4 KiB); the bound address.
    pub async fn serve(
        listen: SocketAddr,
        store: Arc<Store>,
        files: Arc<Files>,
        keys: Vec<ApiKey>,
    ) -> anyhow::Result<SocketAddr> {
        let service = TicketFilesServer::new(Api { store, files, keys })
            .max_decoding_message_size(4 * 1024)
            .max_encoding_message_size(MAX_FILE_BYTES + 1024);
        crate::serve_grpc(listen, tonic::service::Routes::new(service), "ticket-file").await
    }
}
