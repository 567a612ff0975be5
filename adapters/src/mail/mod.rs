//! The email adapter (`boxoffice-email`): sends each paid order's tickets when they are rendered
//! (`boxoffice.v1.TicketsRendered` on `boxoffice.tickets.v1`, the PDF attached) and a notice when
//! an order is cancelled, cancelled for non-payment or refunded (`boxoffice.orders.v1`), over
//! SMTP with lettre, in the contact's language (`compose`). The PDF is read where its
//! announcement says (`crate::files`): a `file://` path, or an object of the bucket it is given.
//!
//! At least once in, at most once out. Every email is a send recorded under its order and kind
//! (`ledger`): recorded `Sending` and flushed before the SMTP server is asked, `Sent` (flushed)
//! once it took the message, so a redelivered message finds the send and sends nothing. A failure
//! that may pass (server away, a 4xx answer) is tried again with backoff, up to `max_attempts`;
//! then, or at once for a permanent (5xx) answer, the send is parked: counted in
//! `boxoffice_email_parked`, listed by the `Mail` service, retried when an operator says. A send
//! the adapter was stopped in the middle of is `Unknown` after a restart and never sent again by
//! itself: whether the server took it cannot be known, and a second email is what this adapter
//! promises never to send. Offsets are committed after every send of a batch is sent or parked.
//!
//! An operator resends an order's tickets (`ResendTickets`), to its address or a corrected one,
//! as a send of its own. The adapter talks to boxoffice only through Kafka.

pub mod compose;
pub mod ledger;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use kafka::rdkafka::Message;
use kafka::rdkafka::consumer::StreamConsumer;
use kafka::rdkafka::message::OwnedMessage;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use metrics::{counter, gauge, histogram};
use prost::Message as _;
use proto::v1;
use proto::v1::order_event::Change;
use tokio::sync::{Semaphore, watch};

use self::compose::Templates;
use self::ledger::{Ledger, LedgerError, Send, Source, State};
use crate::api_keys::ApiKey;
use crate::files::{FileError, Location};
use crate::unix_ms;

/// The roles the `Mail` service knows.
pub const ROLES: &[&str] = &["mail-operator"];

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain text; for a relay on the same host or a test server only.
    None,
    /// Plain, then upgraded with STARTTLS; refused if the server cannot.
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// PEM certificates trusted for the server's beside the system's roots (`--smtp-ca-file`).
    pub extra_roots: Option<Vec<u8>>,
    /// Empty: no authentication.
    pub username: String,
    pub password: String,
    /// One SMTP conversation, at most.
    pub timeout: Duration,
}

/// Everything the adapter is told at start.
#[derive(Clone)]
pub struct Settings {
    pub brokers: String,
    pub orders_topic: String,
    pub tickets_topic: String,
    pub group: String,
    pub instance_id: String,
    pub data_dir: PathBuf,
    pub properties: BTreeMap<String, String>,
    /// How a missing topic is made.
    pub topics: crate::TopicShape,
    pub smtp: SmtpSettings,
    pub from: Mailbox,
    pub templates: Arc<Templates>,
    /// Where ticket files are read: any local path, and the bucket it is given, if any.
    pub files: Arc<crate::files::Files>,
    /// Emails handed to the SMTP server at once, at most.
    pub max_parallel_sends: usize,
    /// Attempts at one email before it is parked.
    pub max_attempts: u32,
    /// The first retry's wait; each next one doubles, up to a minute.
    pub retry_base: Duration,
    /// Messages taken per batch, at most.
    pub max_batch: usize,
    pub listen: SocketAddr,
    pub api_keys: Vec<ApiKey>,
}

struct Adapter {
    settings: Settings,
    ledger: Ledger,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    sends: Semaphore,
    stop: watch::Receiver<bool>,
    /// Keys (`<order>/<kind>`) of the sends being attempted now: an operator's call and the
    /// consumer, or two calls, never attempt one send at once.
    attempting: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Keys of the sends PARKED or UNKNOWN: `boxoffice_email_parked`.
    waiting: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Holds a send's key in `Adapter::attempting` until dropped.
struct Attempting<'a>(&'a Adapter, String);

impl Drop for Attempting<'_> {
    fn drop(&mut self) {
        self.0
            .attempting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// How a send ended this time.
#[derive(Debug, PartialEq, Eq)]
enum Done {
    /// Sent, parked, skipped or found done before.
    Settled,
    /// The adapter is stopping: leave the batch uncommitted.
    Stopping,
}

fn transport(s: &SmtpSettings) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    use anyhow::Context;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    let tls = || -> anyhow::Result<TlsParameters> {
        let mut parameters = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &s.extra_roots {
            anyhow::ensure!(
                pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
                "--smtp-ca-file holds no PEM certificate"
            );
            let roots = Certificate::from_pem(pem).context("--smtp-ca-file")?;
            parameters = parameters.add_root_certificate(roots);
        }
        parameters.build().context("SMTP TLS settings")
    };
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host);
    let builder = match s.security {
        Security::None => {
            anyhow::ensure!(
                s.extra_roots.is_none(),
                "--smtp-ca-file is for --smtp-security starttls or tls"
            );
            builder
        }
        // STARTTLS required: no credentials or message before the upgrade.
        Security::StartTls => builder.tls(Tls::Required(tls()?)),
        Security::Tls => builder.tls(Tls::Wrapper(tls()?)),
    };
    let mut builder = builder.port(s.port).timeout(Some(s.timeout));
    if !s.username.is_empty() {
        builder = builder.credentials(Credentials::new(s.username.clone(), s.password.clone()));
    }
    Ok(builder.build())
}

/// Runs the adapter until `stop` turns true. `ready` is called once it consumes, with the `Mail`
/// service's address.
pub async fn run(
    settings: Settings,
    stop: watch::Receiver<bool>,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let ledger = Ledger::open(&settings.data_dir.join("state"))?;
    let interrupted = ledger.settle_interrupted(unix_ms())?;
    if interrupted > 0 {
        tracing::warn!(
            sends = interrupted,
            "sends under way at the last stop are UNKNOWN: list them with ListParked; retry only those the recipient did not get"
        );
    }
    let Some(consumer) = crate::subscribed_consumer(
        &settings.brokers,
        &settings.properties,
        (&settings.group, &settings.instance_id),
        (
            &[&settings.orders_topic, &settings.tickets_topic],
            settings.topics,
        ),
        &[&settings.tickets_topic, &settings.orders_topic],
        &stop,
    )
    .await?
    else {
        return Ok(());
    };
    let adapter = Arc::new(Adapter {
        transport: transport(&settings.smtp)?,
        sends: Semaphore::new(settings.max_parallel_sends.max(1)),
        attempting: Default::default(),
        waiting: std::sync::Mutex::new(
            ledger
                .sends_in(&[State::Parked, State::Unknown], usize::MAX)?
                .iter()
                .map(|s| format!("{}/{}", s.order_id, s.kind))
                .collect(),
        ),
        settings,
        ledger,
        stop: stop.clone(),
    });
    gauge!("boxoffice_email_parked").set(adapter.waiting.lock().map_or(0, |w| w.len()) as f64);
    let grpc = api::serve(adapter.clone()).await?;
    ready(grpc);
    let consumed = adapter.consume(&consumer, stop).await;
    adapter.ledger.flush()?;
    consumed
}

/// A send a message asks for.
struct Job {
    order_id: String,
    event_id: String,
    kind: &'static str,
    contact: Option<v1::Contact>,
    source: Source,
}

/// Whether a send of `kind` carries the order's tickets.
fn carries_tickets(kind: &str) -> bool {
    kind == "tickets" || kind.starts_with("resend:")
}

fn kind_label(kind: &str) -> &str {
    kind.split(':').next().unwrap_or(kind)
}

impl Adapter {
    async fn consume(
        &self,
        consumer: &StreamConsumer,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let max = self.settings.max_batch.max(1);
        while let Some(batch) = kafka::next_batch(consumer, max, &mut stop).await {
            let mut jobs: Vec<Job> = Vec::new();
            for message in &batch {
                if let Some(job) = self.read(message)?
                    && !jobs
                        .iter()
                        .any(|j| j.order_id == job.order_id && j.kind == job.kind)
                {
                    jobs.push(job);
                }
            }
            // Events and rendered tickets read are durable before any send uses them.
            tokio::task::block_in_place(|| self.ledger.flush())?;
            let done = join_all(jobs.into_iter().map(|j| self.deliver(j))).await;
            let mut stopping = false;
            for d in done {
                stopping |= d? == Done::Stopping;
            }
            if stopping {
                return Ok(());
            }
            if let Err(e) = kafka::commit_batch(consumer, &batch) {
                tracing::warn!(error = %e, "offsets not committed; the batch will be read again and send nothing twice");
            }
        }
        Ok(())
    }

    /// What a message asks for: a send, or nothing (events and everything else are recorded or
    /// skipped here).
    fn read(&self, message: &OwnedMessage) -> Result<Option<Job>, LedgerError> {
        let payload = message.payload().unwrap_or_default();
        let undecodable = |e: prost::DecodeError| {
            tracing::warn!(topic = message.topic(), partition = message.partition(), offset = message.offset(), error = %e, "message does not decode; skipped");
            counter!("boxoffice_email_skipped_total", "why" => "undecodable").increment(1);
            Ok(None)
        };
        if message.topic() == self.settings.tickets_topic {
            let rendered = match v1::TicketsRendered::decode(payload) {
                Ok(r) => r,
                Err(e) => return undecodable(e),
            };
            let order = rendered.order.clone().unwrap_or_default();
            self.ledger.put_tickets(&order.order_id, payload)?;
            return Ok(Some(Job {
                order_id: order.order_id,
                event_id: order.event_id,
                kind: "tickets",
                contact: order.contact,
                source: Source::Tickets(payload.to_vec()),
            }));
        }
        let event = match v1::OrderEvent::decode(payload) {
            Ok(e) => e,
            Err(e) => return undecodable(e),
        };
        let (order, kind) = match event.change {
            Some(Change::EventCreated(created)) => {
                if let Some(e) = created.event {
                    self.ledger.put_event(&e.event_id, &e.encode_to_vec())?;
                }
                return Ok(None);
            }
            Some(Change::OrderCancelled(c)) => {
                let order = c.order.unwrap_or_default();
                let kind = if order.cancel_cause == v1::CancelCause::PaymentTimeout as i32 {
                    "unpaid"
                } else {
                    "cancelled"
                };
                (order, kind)
            }
            Some(Change::OrderRefunded(r)) => {
                let order = r.order.unwrap_or_default();
                // Recorded, and flushed with the batch before its sends and its offsets'
                // commit: the order's tickets, rendered or not yet, are not sent after this.
                self.ledger.put_refunded(&order.order_id)?;
                (order, "refunded")
            }
            _ => return Ok(None),
        };
        let event = self.ledger.event(&order.event_id)?.unwrap_or_default();
        Ok(Some(Job {
            order_id: order.order_id.clone(),
            event_id: order.event_id.clone(),
            kind,
            contact: order.contact.clone(),
            source: Source::Order {
                order: order.encode_to_vec(),
                event,
            },
        }))
    }

    /// Sends what `job` asks unless its send exists (a send left retrying goes on).
    async fn deliver(&self, job: Job) -> Result<Done, LedgerError> {
        if let Some(send) = self.ledger.send(&job.order_id, job.kind)? {
            if send.state != State::Retrying {
                let why = match send.state {
                    State::Sent => "sent_before",
                    State::Parked | State::Unknown => "parked_before",
                    State::Sending | State::Retrying => "under_way",
                };
                counter!("boxoffice_email_skipped_total", "why" => why).increment(1);
                return Ok(Done::Settled);
            }
            let budget = self.settings.max_attempts;
            return self.attempt(send, budget, &[Some(State::Retrying)]).await;
        }
        let Some(contact) = job.contact.filter(|c| !c.email.is_empty()) else {
            counter!("boxoffice_email_skipped_total", "why" => "no_address").increment(1);
            return Ok(Done::Settled);
        };
        let send = Send {
            order_id: job.order_id,
            event_id: job.event_id,
            kind: job.kind.to_string(),
            to: contact.email,
            language: contact.language,
            source: job.source,
            state: State::Sending,
            attempts: 0,
            detail: String::new(),
            updated_at_ms: unix_ms(),
            seq: self.ledger.next_seq(),
            by_operator: false,
        };
        self.attempt(send, self.settings.max_attempts, &[None])
            .await
    }

    /// Tries `send` until it is sent, parked or unknown, at most `budget` attempts more, if the
    /// state recorded for it (`None`: nothing recorded) is one of `expect` once no other attempt
    /// at it is under way; otherwise nothing.
    ///
    /// Only what cannot have reached anyone is tried again by itself: the server out of reach
    /// before the send was recorded, or a 4xx answer. A conversation that broke or went quiet
    /// after the send was recorded may have delivered it: UNKNOWN, for an operator.
    async fn attempt(
        &self,
        send: Send,
        budget: u32,
        expect: &[Option<State>],
    ) -> Result<Done, LedgerError> {
        let key = format!("{}/{}", send.order_id, send.kind);
        loop {
            if self
                .attempting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone())
            {
                break;
            }
            let mut stop = self.stop.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(Done::Stopping),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let _attempting = Attempting(self, key);
        // Read again once alone: another attempt may have ended just before.
        let recorded = self.ledger.send(&send.order_id, &send.kind)?;
        if !expect.contains(&recorded.as_ref().map(|s| s.state)) {
            return Ok(Done::Settled);
        }
        // Tickets of a refunded order are void (the refund and the tickets arrive on different
        // topics, in either order): never sent after the refund notice, whether this send is
        // new, resumed or an operator's.
        if carries_tickets(&send.kind) && self.ledger.refunded(&send.order_id)? {
            counter!("boxoffice_email_skipped_total", "why" => "refunded").increment(1);
            return match recorded {
                None => Ok(Done::Settled),
                Some(r) => self.settle(
                    r,
                    State::Parked,
                    "the order was refunded: its tickets are void and are not sent".into(),
                ),
            };
        }
        let mut send = match recorded {
            Some(r) => Send {
                by_operator: r.by_operator || send.by_operator,
                ..r
            },
            None => send,
        };
        let timeout = self.settings.smtp.timeout;
        let mut tried = 0;
        loop {
            let permit = self.sends.acquire().await.expect("never closed");
            tried += 1;
            send.attempts += 1;
            let reachable = tokio::time::timeout(timeout, self.transport.test_connection()).await;
            let unreachable = match reachable {
                Ok(Ok(true)) => None,
                Ok(Ok(false)) => Some("the SMTP server does not answer".to_string()),
                Ok(Err(e)) => Some(format!("the SMTP server cannot be reached: {e}")),
                Err(_) => Some(format!("no SMTP greeting within {timeout:?}")),
            };
            let message = match unreachable {
                Some(why) => Err(Failure::Transient(why)),
                None => self.message(&send).await,
            };
            let message = match message {
                Ok(m) => m,
                Err(Failure::Permanent(why)) => return self.settle(send, State::Parked, why),
                Err(Failure::Transient(why)) => {
                    drop(permit);
                    match self.retry_or_park(&mut send, why, tried >= budget).await? {
                        Some(done) => return Ok(done),
                        None => continue,
                    }
                }
            };
            send.state = State::Sending;
            send.updated_at_ms = unix_ms();
            self.ledger.put_send(&send)?;
            // Recorded before the server is asked: a stop from here on leaves it UNKNOWN, never
            // sent twice.
            tokio::task::block_in_place(|| self.ledger.flush())?;
            let started = Instant::now();
            // lettre bounds only the connect by its timeout; the conversation is bounded here.
            let answer = tokio::time::timeout(timeout, self.transport.send(message)).await;
            drop(permit);
            histogram!("boxoffice_email_smtp_seconds").record(started.elapsed().as_secs_f64());
            match answer {
                Ok(Ok(response)) => {
                    let detail = format!(
                        "{} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    );
                    return self.settle(send, State::Sent, detail);
                }
                Ok(Err(e)) if e.is_permanent() => {
                    return self.settle(send, State::Parked, format!("refused: {e}"));
                }
                Ok(Err(e)) if e.is_transient() => {
                    match self
                        .retry_or_park(&mut send, e.to_string(), tried >= budget)
                        .await?
                    {
                        Some(done) => return Ok(done),
                        None => continue,
                    }
                }
                Ok(Err(e)) => {
                    let why = format!(
                        "the SMTP conversation broke after the send was recorded ({e}): it may or \
                         may not have gone out"
                    );
                    return self.settle(send, State::Unknown, why);
                }
                Err(_) => {
                    let why = format!(
                        "no answer from the SMTP server within {timeout:?}: it may or may not have \
                         gone out"
                    );
                    return self.settle(send, State::Unknown, why);
                }
            }
        }
    }

    /// After a failure that cannot have delivered it: parked if `last`, else recorded
    /// `Retrying` and waited out (`None`: try again; `Some(Stopping)`: the adapter is stopping).
    async fn retry_or_park(
        &self,
        send: &mut Send,
        why: String,
        last: bool,
    ) -> Result<Option<Done>, LedgerError> {
        if last {
            let why = format!("gave up after {} attempts: {why}", send.attempts);
            return self.settle(send.clone(), State::Parked, why).map(Some);
        }
        tracing::warn!(order_id = %send.order_id, kind = %send.kind, attempts = send.attempts, error = %why, "email not sent; retrying");
        send.state = State::Retrying;
        send.detail = why;
        send.updated_at_ms = unix_ms();
        self.ledger.put_send(send)?;
        tokio::task::block_in_place(|| self.ledger.flush())?;
        counter!("boxoffice_email_sends_total", "kind" => kind_label(&send.kind).to_string(), "outcome" => "retried").increment(1);
        let wait = self
            .settings
            .retry_base
            .saturating_mul(1 << send.attempts.saturating_sub(1).min(16))
            .min(Duration::from_secs(60));
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => Ok(Some(Done::Stopping)),
            () = tokio::time::sleep(wait) => Ok(None),
        }
    }

    /// Records the send's end (flushed) and counts it.
    fn settle(&self, mut send: Send, state: State, detail: String) -> Result<Done, LedgerError> {
        if state != State::Sent {
            tracing::error!(order_id = %send.order_id, kind = %send.kind, state = ?state, why = %detail, "email waits for an operator");
        }
        send.state = state;
        send.detail = detail;
        send.updated_at_ms = unix_ms();
        self.ledger.put_send(&send)?;
        tokio::task::block_in_place(|| self.ledger.flush())?;
        let outcome = match state {
            State::Sent => "sent",
            State::Unknown => "unknown",
            _ => "parked",
        };
        counter!("boxoffice_email_sends_total", "kind" => kind_label(&send.kind).to_string(), "outcome" => outcome).increment(1);
        let key = format!("{}/{}", send.order_id, send.kind);
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(state, State::Parked | State::Unknown) {
            waiting.insert(key);
        } else {
            waiting.remove(&key);
        }
        gauge!("boxoffice_email_parked").set(waiting.len() as f64);
        Ok(Done::Settled)
    }

    /// The message of `send`, built now; the ticket file read off the async threads and checked
    /// against what its announcement said.
    async fn message(&self, send: &Send) -> Result<lettre::Message, Failure> {
        let templates = &self.settings.templates;
        let message_id = format!(
            "<{}.{}@{}>",
            send.kind.replace(':', "."),
            send.order_id,
            self.settings.from.email.domain()
        );
        let (composed, attachment) = match &send.source {
            Source::Tickets(bytes) => {
                let rendered = v1::TicketsRendered::decode(bytes.as_slice())
                    .map_err(|e| Failure::Permanent(format!("stored tickets: {e}")))?;
                let order = rendered.order.unwrap_or_default();
                let event = rendered.event.unwrap_or_default();
                let fields = compose::fields(&order, &event);
                let composed = templates
                    .compose("tickets", &send.language, &fields)
                    .map_err(Failure::Permanent)?;
                // Malformed, or in a bucket this adapter is not given: parked at once, for an
                // operator. A file not there yet (a store being mounted), not yet whole, or a
                // store out of reach may be later: tried again.
                let failure = |e: FileError| match e {
                    FileError::Elsewhere(why) => Failure::Permanent(why),
                    FileError::Io(why) => Failure::Transient(why),
                };
                let location = Location::parse_url(&rendered.location).map_err(failure)?;
                // No more than announced is read; a file that grew is not the one announced.
                let pdf = self
                    .settings
                    .files
                    .read(&location, rendered.file_bytes)
                    .await
                    .map_err(failure)?;
                let sha256 =
                    crate::tickets::store::hex(&<sha2::Sha256 as sha2::Digest>::digest(&pdf));
                if pdf.len() as u64 != rendered.file_bytes || sha256 != rendered.file_sha256 {
                    return Err(Failure::Transient(format!(
                        "ticket file {} is not the one announced ({} bytes, sha256 {sha256})",
                        rendered.location,
                        pdf.len()
                    )));
                }
                (
                    composed,
                    Some((format!("tickets-{}.pdf", order.order_id), pdf)),
                )
            }
            Source::Order { order, event } => {
                let order = v1::Order::decode(order.as_slice())
                    .map_err(|e| Failure::Permanent(format!("stored order: {e}")))?;
                let event = v1::Event::decode(event.as_slice()).unwrap_or_default();
                let fields = compose::fields(&order, &event);
                let composed = templates
                    .compose(kind_label(&send.kind), &send.language, &fields)
                    .map_err(Failure::Permanent)?;
                (composed, None)
            }
        };
        compose::message(
            &self.settings.from,
            &send.to,
            &message_id,
            &composed,
            attachment,
        )
        .map_err(Failure::Permanent)
    }
}

enum Failure {
    /// Trying again cannot help (a template error, an address refused).
    Permanent(String),
    /// Trying again may help.
    Transient(String),
}

/// The `boxoffice.v1.Mail` gRPC service, for operators.
mod api {
    use super::*;
    use proto::v1::mail_server::{Mail, MailServer};
    use tonic::{Code, Request, Response, Status};

    use crate::api_keys::{check, status};

    struct Api(Arc<Adapter>);

    fn to_proto(s: &Send) -> v1::Send {
        v1::Send {
            order_id: s.order_id.clone(),
            event_id: s.event_id.clone(),
            kind: s.kind.clone(),
            to: s.to.clone(),
            state: match s.state {
                State::Sending => v1::SendState::Sending,
                State::Retrying => v1::SendState::Retrying,
                State::Sent => v1::SendState::Sent,
                State::Parked => v1::SendState::Parked,
                State::Unknown => v1::SendState::Unknown,
            } as i32,
            attempts: s.attempts,
            detail: s.detail.clone(),
            updated_at: Some(crate::timestamp(s.updated_at_ms)),
        }
    }

    fn storage(e: LedgerError) -> Status {
        tracing::error!(error = %e, "mail ledger");
        status(
            Code::Internal,
            "STORAGE",
            "the mail ledger could not be read or written",
        )
    }

    fn refunded(order_id: &str) -> Status {
        status(
            Code::FailedPrecondition,
            "ORDER_REFUNDED",
            format!("order {order_id} was refunded: its tickets are void"),
        )
    }

    fn invalid(message: String) -> Status {
        status(Code::InvalidArgument, "INVALID_ARGUMENT", message)
    }

    fn order_id(text: &str) -> Result<String, Status> {
        uuid::Uuid::parse_str(text)
            .map(|u| u.to_string())
            .map_err(|_| {
                invalid(format!(
                    "order_id `{}` is not a UUID",
                    text.chars().take(40).collect::<String>()
                ))
            })
    }

    impl Api {
        /// Tries `send` now, if its recorded state is one of `expect`, and answers its state
        /// after. The attempt runs as a task of its own: a caller that goes away does not leave
        /// it half done.
        async fn run(
            &self,
            send: Send,
            expect: &'static [Option<State>],
        ) -> Result<Response<v1::Send>, Status> {
            let (order_id, kind) = (send.order_id.clone(), send.kind.clone());
            let adapter = self.0.clone();
            let budget = adapter.settings.max_attempts;
            tokio::spawn(async move { adapter.attempt(send, budget, expect).await })
                .await
                .map_err(|e| status(Code::Internal, "INTERNAL", e.to_string()))?
                .map_err(storage)?;
            let now = self
                .0
                .ledger
                .send(&order_id, &kind)
                .map_err(storage)?
                .ok_or_else(|| status(Code::Internal, "INTERNAL", "the send was not recorded"))?;
            Ok(Response::new(to_proto(&now)))
        }
    }

    #[tonic::async_trait]
    impl Mail for Api {
        async fn list_sends(
            &self,
            request: Request<v1::ListSendsRequest>,
        ) -> Result<Response<v1::ListSendsResponse>, Status> {
            check(&self.0.settings.api_keys, &request, "mail-operator")?;
            let order_id = order_id(&request.into_inner().order_id)?;
            let sends = self.0.ledger.sends_of(&order_id).map_err(storage)?;
            Ok(Response::new(v1::ListSendsResponse {
                sends: sends.iter().map(to_proto).collect(),
            }))
        }

        async fn list_parked(
            &self,
            request: Request<v1::ListParkedRequest>,
        ) -> Result<Response<v1::ListParkedResponse>, Status> {
            check(&self.0.settings.api_keys, &request, "mail-operator")?;
            let limit = match request.into_inner().page_size {
                0 => 100,
                n if n > 1_000 => return Err(invalid(format!("page_size {n} is over 1000"))),
                n => n as usize,
            };
            let sends = self
                .0
                .ledger
                .sends_in(&[State::Parked, State::Unknown], limit)
                .map_err(storage)?;
            Ok(Response::new(v1::ListParkedResponse {
                sends: sends.iter().map(to_proto).collect(),
            }))
        }

        async fn retry_send(
            &self,
            request: Request<v1::RetrySendRequest>,
        ) -> Result<Response<v1::Send>, Status> {
            check(&self.0.settings.api_keys, &request, "mail-operator")?;
            let r = request.into_inner();
            let order_id = order_id(&r.order_id)?;
            let send = self
                .0
                .ledger
                .send(&order_id, &r.kind)
                .map_err(storage)?
                .ok_or_else(|| {
                    status(
                        Code::NotFound,
                        "SEND_NOT_FOUND",
                        format!(
                            "no send of kind `{}` for order {order_id}",
                            r.kind.chars().take(80).collect::<String>()
                        ),
                    )
                })?;
            if !matches!(send.state, State::Parked | State::Unknown) {
                return Err(status(
                    Code::FailedPrecondition,
                    "SEND_NOT_PARKED",
                    format!("the send is {:?}, not parked or unknown", send.state),
                ));
            }
            if carries_tickets(&send.kind) && self.0.ledger.refunded(&order_id).map_err(storage)? {
                return Err(refunded(&order_id));
            }
            tracing::info!(order_id, kind = %send.kind, "an operator retries a parked send");
            let send = Send {
                by_operator: true,
                ..send
            };
            self.run(send, &[Some(State::Parked), Some(State::Unknown)])
                .await
        }

        async fn resend_tickets(
            &self,
            request: Request<v1::ResendTicketsRequest>,
        ) -> Result<Response<v1::Send>, Status> {
            check(&self.0.settings.api_keys, &request, "mail-operator")?;
            let r = request.into_inner();
            let order_id = order_id(&r.order_id)?;
            if r.request_id.is_empty()
                || r.request_id.len() > 64
                || !r
                    .request_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(invalid(
                    "request_id must be 1 to 64 letters, digits, `-` or `_`".into(),
                ));
            }
            let kind = format!("resend:{}", r.request_id);
            if let Some(send) = self.0.ledger.send(&order_id, &kind).map_err(storage)? {
                return Ok(Response::new(to_proto(&send)));
            }
            if self.0.ledger.refunded(&order_id).map_err(storage)? {
                return Err(refunded(&order_id));
            }
            let rendered = self
                .0
                .ledger
                .tickets(&order_id)
                .map_err(storage)?
                .ok_or_else(|| {
                    status(
                        Code::NotFound,
                        "TICKETS_NOT_RENDERED",
                        format!("the tickets of order {order_id} were not rendered yet"),
                    )
                })?;
            let order = v1::TicketsRendered::decode(rendered.as_slice())
                .map_err(|e| status(Code::Internal, "STORAGE", format!("stored tickets: {e}")))?
                .order
                .unwrap_or_default();
            let contact = order.contact.unwrap_or_default();
            let to = if r.email.is_empty() {
                if contact.email.is_empty() {
                    return Err(status(
                        Code::FailedPrecondition,
                        "NO_ADDRESS",
                        format!("order {order_id} has no email address: give one in `email`"),
                    ));
                }
                contact.email
            } else {
                r.email
            };
            if to.parse::<Mailbox>().is_err() {
                return Err(invalid(format!(
                    "`{}` is not an email address",
                    to.chars().take(80).collect::<String>()
                )));
            }
            let send = Send {
                order_id,
                event_id: order.event_id,
                kind,
                to,
                language: contact.language,
                source: Source::Tickets(rendered),
                state: State::Sending,
                attempts: 0,
                detail: String::new(),
                updated_at_ms: unix_ms(),
                seq: self.0.ledger.next_seq(),
                by_operator: true,
            };
            tracing::info!(order_id = %send.order_id, to = %send.to, "an operator resends tickets");
            self.run(send, &[None]).await
        }
    }

    /// Binds the service's port and serves it (requests at most 4 KiB); the bound address.
    pub async fn serve(adapter: Arc<Adapter>) -> anyhow::Result<SocketAddr> {
        let listen = adapter.settings.listen;
        let service = MailServer::new(Api(adapter)).max_decoding_message_size(4 * 1024);
        crate::serve_grpc(listen, tonic::service::Routes::new(service), "mail service").await
    }
}
