//! The systems a run measures, behind one set of calls: boxoffice over gRPC (a running server, or
//! one started in this process), unary or through ReserveStream; the engine in process with no
//! network; the no-op gRPC server (the transport's ceiling); and the PostgreSQL and Redis
//! baselines (`baseline.rs`). Requests are `boxoffice.v1` messages whatever the target, so every
//! target answers the same questions; a target that cannot model one (seat maps on a baseline)
//! refuses the run before it starts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail, ensure};
use proto::v1;
use proto::v1::availability_client::AvailabilityClient;
use proto::v1::event_admin_client::EventAdminClient;
use proto::v1::reservations_client::ReservationsClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::baseline::{Postgres, Redis};
use crate::order_events::OrderEventTap;
use crate::scenario::{Scenario, SeatPlan};

/// A target as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// The no-op gRPC server, started in this process.
    Noop {
        stream: bool,
    },
    /// A boxoffice server started in this process on loopback (sled files in a temporary
    /// directory, or `--data-dir`); with `relay`, publishing order events to `--kafka`.
    Embedded {
        stream: bool,
        relay: bool,
    },
    /// A running boxoffice at this address.
    Grpc {
        url: String,
        stream: bool,
    },
    /// The engine in this process, no network.
    Engine,
    Postgres {
        url: String,
    },
    Redis {
        url: String,
    },
}

pub const TARGET_HELP: &str = "noop, noop-stream, embedded, embedded-stream, embedded+relay, \
embedded-stream+relay, engine, grpc=http[s]://HOST:PORT, grpc-stream=http[s]://HOST:PORT, postgres=postgres://USER@HOST:PORT/DB, \
redis=redis://HOST:PORT";

impl std::str::FromStr for TargetSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, url) = match s.split_once('=') {
            Some((kind, url)) => (kind, Some(url.to_string())),
            None => (s, None),
        };
        let need = |url: Option<String>| {
            url.filter(|u| !u.is_empty())
                .ok_or_else(|| format!("target `{kind}` needs an address: `{kind}=URL`"))
        };
        Ok(match kind {
            "noop" => TargetSpec::Noop { stream: false },
            "noop-stream" => TargetSpec::Noop { stream: true },
            "embedded" | "embedded-stream" | "embedded+relay" | "embedded-stream+relay" => {
                TargetSpec::Embedded {
                    stream: kind.starts_with("embedded-stream"),
                    relay: kind.ends_with("+relay"),
                }
            }
            "engine" => TargetSpec::Engine,
            "grpc" => TargetSpec::Grpc {
                url: need(url)?,
                stream: false,
            },
            "grpc-stream" => TargetSpec::Grpc {
                url: need(url)?,
                stream: true,
            },
            "postgres" => TargetSpec::Postgres { url: need(url)? },
            "redis" => TargetSpec::Redis { url: need(url)? },
            other => return Err(format!("unknown target `{other}`; use {TARGET_HELP}")),
        })
    }
}

impl TargetSpec {
    /// The name used in reports: the kind and the mode, never a password.
    pub fn label(&self) -> String {
        let mode = |stream: bool| if stream { "stream" } else { "unary" };
        match self {
            TargetSpec::Noop { stream } => format!("noop gRPC ({})", mode(*stream)),
            TargetSpec::Embedded { stream, relay } => format!(
                "boxoffice gRPC ({}{})",
                mode(*stream),
                if *relay { ", relay on" } else { "" }
            ),
            TargetSpec::Grpc { url, stream } => {
                format!("boxoffice gRPC at {url} ({})", mode(*stream))
            }
            TargetSpec::Engine => "boxoffice engine (in process)".into(),
            TargetSpec::Postgres { .. } => "PostgreSQL (SELECT ... FOR UPDATE)".into(),
            TargetSpec::Redis { .. } => "Redis (Lua check-and-decrement)".into(),
        }
    }
}

/// A refusal or a failure, by its reason: a boxoffice reason (`SOLD_OUT`), or for transport and
/// other failures a reason that says so (`TRANSPORT_UNAVAILABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
}

impl Refusal {
    pub fn new(reason: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
        }
    }

    /// A refusal the target decided (nothing was applied). A timeout, a storage failure or a
    /// transport failure leaves the request's outcome unknown to the client: it may have been
    /// applied. The baselines answer with the same reasons.
    pub fn is_decided(&self) -> bool {
        const UNCERTAIN: &[&str] = &["TIMEOUT", "STORAGE", "SHUTTING_DOWN", "ACTOR_START"];
        server::status::REASONS.contains(&self.reason.as_str())
            && !UNCERTAIN.contains(&self.reason.as_str())
    }

    fn from_status(status: &tonic::Status) -> Refusal {
        match status.get_error_details().error_info() {
            Some(info) => Refusal::new(info.reason.clone()),
            None => Refusal::new(format!("TRANSPORT_{:?}", status.code()).to_uppercase()),
        }
    }
}

/// A hold as the client was told it.
#[derive(Debug, Clone)]
pub struct Held {
    pub hold_id: String,
    pub quantity: u32,
    /// `(section, row, number)` of every seat held, for seat maps.
    pub seats: Vec<(String, String, String)>,
}

fn held_from_proto(hold: &v1::Hold) -> Held {
    Held {
        hold_id: hold.hold_id.clone(),
        quantity: hold.lines.iter().map(|l| l.quantity).sum(),
        seats: hold
            .lines
            .iter()
            .flat_map(|l| l.seats.iter())
            .map(|s| (s.section.clone(), s.row.clone(), s.number.clone()))
            .collect(),
    }
}

/// An event created for the run.
#[derive(Debug, Clone)]
pub struct EventRef {
    pub id: String,
    pub tiers: Vec<TierRef>,
}

#[derive(Debug, Clone)]
pub struct TierRef {
    pub code: String,
    pub capacity: u64,
    pub seat_map: Option<SeatPlan>,
}

/// A tier as the target reports it after the run.
#[derive(Debug, Clone, Default)]
pub struct TierCounts {
    pub code: String,
    pub capacity: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
}

/// What the target reports for one event: its tiers, and for seat maps the seats sold.
#[derive(Debug, Clone, Default)]
pub struct EventCounts {
    pub tiers: Vec<TierCounts>,
    pub sold_seats: Vec<(String, String, String)>,
}

pub fn seat_names(plan: &SeatPlan) -> Vec<v1::Section> {
    (1..=plan.sections)
        .map(|s| v1::Section {
            name: format!("S{s}"),
            rows: (1..=plan.rows)
                .map(|r| v1::Row {
                    name: format!("R{r}"),
                    seats: (1..=plan.seats_per_row).map(|n| n.to_string()).collect(),
                })
                .collect(),
        })
        .collect()
}

/// The CreateEvent request for event number `n` of the scenario.
pub fn create_event_request(scenario: &Scenario, n: u32) -> v1::CreateEventRequest {
    v1::CreateEventRequest {
        name: format!("{} #{n}", scenario.name),
        venue: "Bench arena".into(),
        starts_at: Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        }),
        status: v1::EventStatus::OnSale as i32,
        currency: "EUR".into(),
        customer_limit: scenario.events.customer_limit,
        default_hold_ttl_seconds: scenario.events.hold_ttl_seconds,
        tiers: scenario
            .events
            .tiers
            .iter()
            .map(|t| v1::Tier {
                code: t.code.clone(),
                name: t.code.clone(),
                price_minor: t.price_minor,
                fee_minor: t.price_minor / 20,
                max_per_order: t.max_per_order,
                sale_windows: vec![],
                stock: Some(match (&t.capacity, &t.seat_map) {
                    (Some(capacity), _) => {
                        v1::tier::Stock::GeneralAdmission(v1::GeneralAdmission {
                            capacity: *capacity,
                        })
                    }
                    (None, Some(map)) => v1::tier::Stock::SeatMap(v1::SeatMap {
                        sections: seat_names(map),
                    }),
                    (None, None) => unreachable!("validated: capacity or seat map"),
                }),
            })
            .collect(),
        ..Default::default()
    }
}

fn tier_refs(scenario: &Scenario) -> Vec<TierRef> {
    scenario
        .events
        .tiers
        .iter()
        .map(|t| TierRef {
            code: t.code.clone(),
            capacity: t.capacity(),
            seat_map: t.seat_map.clone(),
        })
        .collect()
}

/// One ReserveStream per connection; a shopper's reservation goes over one of them and its answer
/// comes back to it by request id, as in a storefront gateway.
struct StreamGateway {
    lanes: Vec<Lane>,
    next_id: AtomicU64,
}

/// The shoppers waiting for an answer on one stream, by request id.
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<v1::Hold, Refusal>>>>>;

struct Lane {
    requests: mpsc::Sender<v1::ReserveStreamRequest>,
    waiting: Waiting,
}

impl StreamGateway {
    async fn open(
        channels: &[Channel],
        key: &MetadataValue<tonic::metadata::Ascii>,
    ) -> Result<Self> {
        let mut lanes = Vec::new();
        for channel in channels {
            // Bounds what waits in this process; the server bounds what it reads ahead.
            let (tx, rx) = mpsc::channel(8_192);
            let mut request = Request::new(ReceiverStream::new(rx));
            request.metadata_mut().insert("authorization", key.clone());
            let mut answers = ReservationsClient::new(channel.clone())
                .reserve_stream(request)
                .await
                .context("open ReserveStream")?
                .into_inner();
            let waiting: Waiting = Arc::default();
            let pending = waiting.clone();
            tokio::spawn(async move {
                let ended = loop {
                    match answers.message().await {
                        Ok(Some(answer)) => {
                            let reply = pending
                                .lock()
                                .expect("lane lock")
                                .remove(&answer.request_id);
                            let result = match answer.result {
                                Some(v1::reserve_stream_response::Result::Hold(hold)) => Ok(hold),
                                Some(v1::reserve_stream_response::Result::Error(e)) => {
                                    Err(Refusal::new(e.reason))
                                }
                                None => Err(Refusal::new("EMPTY_ANSWER")),
                            };
                            if let Some(reply) = reply {
                                let _ = reply.send(result);
                            }
                        }
                        Ok(None) => break Refusal::new("STREAM_ENDED"),
                        Err(status) => break Refusal::from_status(&status),
                    }
                };
                for (_, reply) in pending.lock().expect("lane lock").drain() {
                    let _ = reply.send(Err(ended.clone()));
                }
            });
            lanes.push(Lane {
                requests: tx,
                waiting,
            });
        }
        Ok(StreamGateway {
            lanes,
            next_id: AtomicU64::new(1),
        })
    }

    async fn reserve(&self, request: v1::ReserveRequest) -> Result<v1::Hold, Refusal> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lane = &self.lanes[id as usize % self.lanes.len()];
        let (reply, answer) = oneshot::channel();
        lane.waiting.lock().expect("lane lock").insert(id, reply);
        let sent = lane
            .requests
            .send(v1::ReserveStreamRequest {
                request_id: id,
                reserve: Some(request),
            })
            .await;
        if sent.is_err() {
            lane.waiting.lock().expect("lane lock").remove(&id);
            return Err(Refusal::new("STREAM_ENDED"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Refusal::new("STREAM_ENDED")))
    }
}

/// boxoffice, or the no-op server, over gRPC.
pub struct GrpcTarget {
    channels: Vec<Channel>,
    next: AtomicUsize,
    key: MetadataValue<tonic::metadata::Ascii>,
    stream: Option<StreamGateway>,
    /// The no-op server keeps no state: nothing to create, nothing to audit.
    noop: bool,
    /// With the relay on: what the order-event consumer read.
    pub order_events: Option<Arc<OrderEventTap>>,
}

pub struct Connection {
    pub connections: usize,
    pub api_key: String,
    /// For `https://` addresses: a PEM CA certificate to trust (default: the system's roots).
    pub tls_ca_pem: Option<Vec<u8>>,
    /// For `https://` addresses: the name the certificate must carry (default: the URL's host).
    pub tls_domain: Option<String>,
}

impl Connection {
    fn endpoint(&self, url: &str) -> Result<tonic::transport::Endpoint> {
        let endpoint = Channel::from_shared(url.to_string())
            .with_context(|| format!("bad gRPC address `{url}`"))?
            .tcp_nodelay(true);
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let mut tls = tonic::transport::ClientTlsConfig::new();
        tls = match &self.tls_ca_pem {
            Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => tls.with_native_roots(),
        };
        let domain = match &self.tls_domain {
            Some(domain) => domain.clone(),
            None => endpoint.uri().host().unwrap_or_default().to_string(),
        };
        endpoint
            .tls_config(tls.domain_name(domain))
            .context("TLS settings")
    }
}

impl GrpcTarget {
    pub async fn connect(url: &str, stream: bool, noop: bool, how: &Connection) -> Result<Self> {
        let mut channels = Vec::new();
        let endpoint = how.endpoint(url)?;
        for _ in 0..how.connections.max(1) {
            channels.push(
                endpoint
                    .connect()
                    .await
                    .with_context(|| format!("connect to {url}"))?,
            );
        }
        let key: MetadataValue<_> = format!("Bearer {}", how.api_key)
            .parse()
            .context("the API key must be printable ASCII")?;
        let stream = if stream {
            Some(StreamGateway::open(&channels, &key).await?)
        } else {
            None
        };
        Ok(GrpcTarget {
            channels,
            next: AtomicUsize::new(0),
            key,
            stream,
            noop,
            order_events: None,
        })
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.channels[i % self.channels.len()].clone()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.key.clone());
        request
    }
}

/// The engine in this process.
pub struct EngineTarget {
    pub engine: Arc<engine::Engine>,
}

fn api_refusal(e: server::status::ApiError) -> Refusal {
    Refusal::new(e.reason)
}

impl EngineTarget {
    fn event(&self, id: &str) -> Result<engine::EventHandle, Refusal> {
        let id = server::convert::event_id(id).map_err(api_refusal)?;
        self.engine
            .event(id)
            .map_err(|e| api_refusal(server::status::ApiError::from(e)))
    }
}

pub enum Target {
    Grpc(GrpcTarget),
    Engine(EngineTarget),
    Postgres(Arc<Postgres>),
    Redis(Arc<Redis>),
}

impl Target {
    /// Whether the target keeps state the audit can check.
    /// With the relay on: what the order-event consumer read.
    pub fn order_events(&self) -> Option<&Arc<OrderEventTap>> {
        match self {
            Target::Grpc(g) => g.order_events.as_ref(),
            _ => None,
        }
    }

    pub fn keeps_state(&self) -> bool {
        !matches!(self, Target::Grpc(g) if g.noop)
    }

    pub fn supports_watch(&self) -> bool {
        matches!(self, Target::Grpc(g) if !g.noop)
    }

    /// How long after its expiry a hold may still count as held: the engine releases on time;
    /// the baselines sweep expired holds once a second, as a cron job would.
    pub fn expiry_grace_ms(&self) -> u64 {
        match self {
            Target::Grpc(_) | Target::Engine(_) => 1_000,
            Target::Postgres(_) | Target::Redis(_) => 2_500,
        }
    }

    /// What the reader of a report must know about how the target was set up.
    pub async fn notes(&self) -> Vec<String> {
        match self {
            Target::Grpc(g) if g.noop => {
                vec!["answers without an engine: the transport's ceiling".into()]
            }
            Target::Grpc(g) => vec![format!(
                "{} HTTP/2 connection(s){}",
                g.channels.len(),
                if g.stream.is_some() {
                    ", one ReserveStream on each"
                } else {
                    ""
                }
            )],
            Target::Engine(_) => vec!["no network: EventHandle calls in this process".into()],
            Target::Postgres(p) => p.notes().await,
            Target::Redis(r) => r.notes().await,
        }
    }

    pub async fn create_events(&self, scenario: &Scenario) -> Result<Vec<EventRef>> {
        let tiers = tier_refs(scenario);
        let mut events = Vec::new();
        for n in 0..scenario.events.count {
            let request = create_event_request(scenario, n);
            let id = match self {
                Target::Grpc(g) if g.noop => uuid::Uuid::now_v7().to_string(),
                Target::Grpc(g) => {
                    EventAdminClient::new(g.channel())
                        .create_event(g.request(request))
                        .await
                        .map_err(|s| anyhow::anyhow!("CreateEvent: {s}"))?
                        .into_inner()
                        .event
                        .context("CreateEvent answered no event")?
                        .event_id
                }
                Target::Engine(e) => {
                    let default_ttl_ms = config::Config::default().orders.default_payment_ttl_ms;
                    let spec = server::convert::event_spec(request, default_ttl_ms)
                        .map_err(|e| anyhow::anyhow!("event spec: {}", e.message))?;
                    e.engine.create_event(spec).await?.id.to_string()
                }
                Target::Postgres(p) => p.create_event(n, &tiers).await?,
                Target::Redis(r) => r.create_event(n, &tiers).await?,
            };
            events.push(EventRef {
                id,
                tiers: tiers.clone(),
            });
        }
        Ok(events)
    }

    pub fn check_scenario(&self, scenario: &Scenario) -> Result<()> {
        if matches!(self, Target::Postgres(_) | Target::Redis(_)) {
            ensure!(
                !scenario.has_seat_maps(),
                "the PostgreSQL and Redis baselines model general admission only; scenario `{}` has seat maps",
                scenario.name
            );
        }
        if scenario.pollers.watchers > 0 && !self.supports_watch() {
            bail!(
                "scenario `{}` has watchers; only a boxoffice gRPC target can be watched",
                scenario.name
            );
        }
        Ok(())
    }

    pub async fn reserve(&self, request: v1::ReserveRequest) -> Result<Held, Refusal> {
        match self {
            Target::Grpc(g) => {
                let hold = match &g.stream {
                    Some(gateway) => gateway.reserve(request).await?,
                    None => ReservationsClient::new(g.channel())
                        .reserve(g.request(request))
                        .await
                        .map_err(|s| Refusal::from_status(&s))?
                        .into_inner()
                        .hold
                        .ok_or_else(|| Refusal::new("EMPTY_ANSWER"))?,
                };
                Ok(held_from_proto(&hold))
            }
            Target::Engine(e) => {
                let (event, request) =
                    server::convert::reserve_request(request).map_err(api_refusal)?;
                let handle = e.engine.event(event).map_err(|e| api_refusal(e.into()))?;
                let hold = handle
                    .reserve(request)
                    .await
                    .map_err(|e| api_refusal(e.into()))?;
                Ok(held_from_proto(&server::convert::hold_to_proto(&hold)))
            }
            Target::Postgres(p) => p.reserve(&request).await,
            Target::Redis(r) => r.reserve(&request).await,
        }
    }

    pub async fn confirm(&self, event_id: &str, hold_id: &str) -> Result<(), Refusal> {
        let request = v1::ConfirmRequest {
            event_id: event_id.to_string(),
            hold_id: hold_id.to_string(),
            payment: Some(v1::Payment {
                reference: format!("bench-{hold_id}"),
            }),
            idempotency_key: String::new(),
            contact: None,
        };
        match self {
            Target::Grpc(g) => ReservationsClient::new(g.channel())
                .confirm(g.request(request))
                .await
                .map(|_| ())
                .map_err(|s| Refusal::from_status(&s)),
            Target::Engine(e) => {
                let (_, request) =
                    server::convert::confirm_request(request).map_err(api_refusal)?;
                e.event(event_id)?
                    .confirm(request)
                    .await
                    .map(|_| ())
                    .map_err(|e| api_refusal(e.into()))
            }
            Target::Postgres(p) => p.confirm(hold_id).await,
            Target::Redis(r) => r.confirm(hold_id).await,
        }
    }

    /// One availability read, as a storefront polls it.
    pub async fn availability(&self, event: &EventRef, include_seats: bool) -> Result<(), Refusal> {
        let event_id = event.id.as_str();
        match self {
            Target::Grpc(g) => AvailabilityClient::new(g.channel())
                .get_availability(g.request(v1::GetAvailabilityRequest {
                    event_id: event_id.to_string(),
                    include_seats,
                    seats_tier_code: String::new(),
                }))
                .await
                .map(|_| ())
                .map_err(|s| Refusal::from_status(&s)),
            Target::Engine(e) => {
                let handle = e.event(event_id)?;
                handle.summary().await.map_err(|e| api_refusal(e.into()))?;
                if include_seats {
                    handle
                        .seats(None)
                        .await
                        .map_err(|e| api_refusal(e.into()))?;
                }
                Ok(())
            }
            Target::Postgres(p) => p.availability(event_id).await.map(|_| ()),
            Target::Redis(r) => r.availability(event_id, &event.tiers).await.map(|_| ()),
        }
    }

    /// A watch stream on the event; each message is one pushed change.
    pub async fn watch(
        &self,
        event_id: &str,
    ) -> Result<tonic::Streaming<v1::WatchAvailabilityResponse>> {
        match self {
            Target::Grpc(g) if !g.noop => Ok(AvailabilityClient::new(g.channel())
                .watch_availability(g.request(v1::WatchAvailabilityRequest {
                    event_id: event_id.to_string(),
                }))
                .await?
                .into_inner()),
            _ => bail!("this target cannot be watched"),
        }
    }

    /// The target's own account of an event, for the audit.
    pub async fn counts(&self, event: &EventRef, with_seats: bool) -> Result<EventCounts> {
        let tier_counts = |tiers: &[v1::TierAvailability]| {
            tiers
                .iter()
                .map(|t| TierCounts {
                    code: t.tier_code.clone(),
                    capacity: u64::from(t.capacity),
                    available: u64::from(t.available),
                    held: u64::from(t.held),
                    sold: u64::from(t.sold),
                })
                .collect()
        };
        let sold_seats = |seats: &[v1::SeatAvailability]| {
            seats
                .iter()
                .filter(|s| s.state == v1::SeatState::Sold as i32)
                .filter_map(|s| s.seat.as_ref())
                .map(|s| (s.section.clone(), s.row.clone(), s.number.clone()))
                .collect()
        };
        match self {
            Target::Grpc(g) => {
                let answer = AvailabilityClient::new(g.channel())
                    .max_decoding_message_size(256 * 1024 * 1024)
                    .get_availability(g.request(v1::GetAvailabilityRequest {
                        event_id: event.id.clone(),
                        include_seats: with_seats,
                        seats_tier_code: String::new(),
                    }))
                    .await
                    .map_err(|s| anyhow::anyhow!("GetAvailability: {s}"))?
                    .into_inner();
                Ok(EventCounts {
                    tiers: tier_counts(&answer.tiers),
                    sold_seats: sold_seats(&answer.seats),
                })
            }
            Target::Engine(e) => {
                let handle = e.event(&event.id).map_err(|r| anyhow::anyhow!(r.reason))?;
                let summary = handle.summary().await?;
                let seats = if with_seats {
                    server::convert::seats_to_proto(&handle.seats(None).await?)
                } else {
                    vec![]
                };
                Ok(EventCounts {
                    tiers: tier_counts(&server::convert::tiers_to_proto(&summary.tiers)),
                    sold_seats: sold_seats(&seats),
                })
            }
            Target::Postgres(p) => p.counts(&event.id).await,
            Target::Redis(r) => r.counts(&event.id, &event.tiers).await,
        }
    }

    /// The baselines expire holds with a periodic job (`settle`); boxoffice expires them itself.
    pub fn has_expiry_job(&self) -> bool {
        matches!(self, Target::Postgres(_) | Target::Redis(_))
    }

    /// Runs a baseline's expiry job once; also lets it catch up before the audit reads its counts.
    pub async fn settle(&self) -> Result<()> {
        match self {
            Target::Postgres(p) => p.sweep().await.map(|_| ()),
            Target::Redis(r) => r.sweep().await.map(|_| ()),
            _ => Ok(()),
        }
    }
}
