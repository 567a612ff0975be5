//! The three gRPC services of `boxoffice.v1` over one engine. Each handler converts its request
//! (`convert`), asks the event's actor through an `EventHandle` (which carries admission control
//! and the call timeout), and converts the answer or the refusal (`status`). No handler decides
//! anything about inventory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::ApiConfig;
use engine::Engine;
use engine::inventory::{EventId, Hold, ReserveRequest};
use futures_util::{FutureExt, StreamExt};
use prost::Message;
use proto::v1;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::answers::{self, AnswerBudget, AnswerSender, AnswerStream, Charge, HeldCharge};
use crate::coalesce::Coalescer;
use crate::convert;
use crate::status::ApiError;
use crate::telemetry;

/// `ListEvents` page size when the request names none, and the largest one allowed.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1_000;
/// How long a watcher waits before reading an overloaded event's counts again.
const WATCH_OVERLOAD_BACKOFF: Duration = Duration::from_millis(50);
/// Retry hint when the answer buffer has no room for a seat listing.
const SEAT_LISTING_RETRY_AFTER: Duration = Duration::from_millis(250);
/// Retry hint when every reservation stream slot is taken.
const STREAM_RETRY_AFTER: Duration = Duration::from_millis(100);

/// The services' shared state. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    engine: Arc<Engine>,
    config: Arc<ApiConfig>,
    /// Requests of one stream batch, at most: within the stream's read-ahead and the event's
    /// in-flight limit, so a batch is never refused for its size alone.
    stream_batch: usize,
    watchers: Arc<Semaphore>,
    /// Open ReserveStream calls, over every connection (`api.max_reserve_streams`).
    reserve_streams: Arc<Semaphore>,
    /// Bytes of requests read and answers not yet taken, over every connection.
    answer_budget: AnswerBudget,
    limits: Arc<engine::inventory::Limits>,
    /// Time to pay of an event created without one (`orders.default_payment_ttl_ms`).
    default_payment_ttl_ms: u64,
    /// Unary Reserve calls go through here, gathered per event into batches.
    coalescer: Arc<Coalescer>,
    stop: watch::Receiver<bool>,
}

impl Api {
    /// `stop` turns true when the server begins to shut down: streams then end.
    pub fn new(
        engine: Arc<Engine>,
        config: &config::Config,
        answer_budget: AnswerBudget,
        stop: watch::Receiver<bool>,
    ) -> Api {
        let api = &config.api;
        let stream_batch = api
            .max_stream_batch
            .min(api.max_stream_in_flight)
            .min(config.engine.max_in_flight_per_event) as usize;
        let coalescer = Arc::new(Coalescer::new(
            engine.clone(),
            config.engine.max_in_flight_per_event as usize,
            stream_batch,
        ));
        let limits = engine::inventory::Limits::from(config);
        Api {
            engine,
            coalescer,
            config: Arc::new(api.clone()),
            stream_batch,
            watchers: Arc::new(Semaphore::new(api.max_watchers as usize)),
            reserve_streams: Arc::new(Semaphore::new(api.max_reserve_streams as usize)),
            answer_budget,
            limits: Arc::new(limits),
            default_payment_ttl_ms: config.orders.default_payment_ttl_ms,
            stop,
        }
    }

    async fn unary<T>(
        &self,
        rpc: &'static str,
        work: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = work.await;
        telemetry::rpc(rpc, started, outcome(&result));
        result.map(Response::new).map_err(Status::from)
    }
}

fn outcome<T>(result: &Result<T, ApiError>) -> &'static str {
    match result {
        Ok(_) => "OK",
        Err(e) => e.reason,
    }
}

#[tonic::async_trait]
impl v1::event_admin_server::EventAdmin for Api {
    async fn create_event(
        &self,
        request: Request<v1::CreateEventRequest>,
    ) -> Result<Response<v1::CreateEventResponse>, Status> {
        self.unary("CreateEvent", async {
            let spec = convert::event_spec(request.into_inner(), self.default_payment_ttl_ms)?;
            let event = convert::event_to_proto(&spec, spec.status);
            // In a task of its own: a client that gives up (deadline, disconnect) drops this
            // handler, and creation must not stop between the durable record and the actor's
            // start.
            let engine = self.engine.clone();
            let summary = tokio::spawn(async move { engine.create_event(spec).await })
                .await
                .map_err(|e| {
                    ApiError::new(
                        Code::Internal,
                        "ACTOR_START",
                        format!("event creation failed: {e}"),
                    )
                })??;
            tracing::info!(event_id = %summary.id, name = %summary.name, "event created");
            Ok(v1::CreateEventResponse {
                event: Some(event),
                availability: convert::tiers_to_proto(&summary.tiers),
            })
        })
        .await
    }

    async fn get_event(
        &self,
        request: Request<v1::GetEventRequest>,
    ) -> Result<Response<v1::GetEventResponse>, Status> {
        self.unary("GetEvent", async {
            let id = convert::event_id(&request.get_ref().event_id)?;
            let event = self.engine.event(id)?;
            let summary = event.summary().await?;
            Ok(v1::GetEventResponse {
                event: Some(convert::event_to_proto(event.spec(), summary.status)),
                summary: Some(convert::summary_to_proto(&summary)),
            })
        })
        .await
    }

    async fn list_events(
        &self,
        request: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        self.unary("ListEvents", async {
            self.engine.ready()?;
            let request = request.into_inner();
            let page_size = match request.page_size {
                0 => DEFAULT_PAGE_SIZE,
                n if n > MAX_PAGE_SIZE => {
                    return Err(ApiError::invalid(format!(
                        "page_size {n} is over the maximum of {MAX_PAGE_SIZE}"
                    )));
                }
                n => n,
            } as usize;
            let after = if request.page_token.is_empty() {
                None
            } else {
                Some(convert::event_id(&request.page_token).map_err(|_| {
                    ApiError::invalid("page_token is not one this server handed out")
                })?)
            };
            let ids: Vec<EventId> = self
                .engine
                .event_ids()
                .into_iter()
                .filter(|id| after.is_none_or(|a| *id > a))
                .collect();
            let mut events = Vec::with_capacity(page_size.min(ids.len()));
            for id in ids.iter().take(page_size) {
                match self.engine.event(*id) {
                    Ok(event) => events.push(convert::summary_to_proto(&event.summary().await?)),
                    Err(engine::Error::EventNotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let next_page_token = if ids.len() > page_size {
                ids[page_size - 1].to_string()
            } else {
                String::new()
            };
            Ok(v1::ListEventsResponse {
                events,
                next_page_token,
            })
        })
        .await
    }

    async fn set_event_status(
        &self,
        request: Request<v1::SetEventStatusRequest>,
    ) -> Result<Response<v1::SetEventStatusResponse>, Status> {
        self.unary("SetEventStatus", async {
            let request = request.into_inner();
            let id = convert::event_id(&request.event_id)?;
            let status = convert::event_status("status", request.status)?;
            let now = self.engine.event(id)?.set_status(status).await?;
            tracing::info!(event_id = %id, status = ?now, "event status set");
            Ok(v1::SetEventStatusResponse {
                status: convert::status_to_proto(now) as i32,
            })
        })
        .await
    }

    async fn refund_order(
        &self,
        request: Request<v1::RefundOrderRequest>,
    ) -> Result<Response<v1::RefundOrderResponse>, Status> {
        self.unary("RefundOrder", async {
            let (event, request) = convert::refund_order_request(request.into_inner())?;
            let order = self.engine.event(event)?.refund_order(request).await?;
            tracing::info!(event_id = %event, order_id = %order.id, "order refunded");
            Ok(v1::RefundOrderResponse {
                order: Some(convert::order_to_proto(&order)),
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl v1::check_in_server::CheckIn for Api {
    async fn get_event_keys(
        &self,
        request: Request<v1::GetEventKeysRequest>,
    ) -> Result<Response<v1::GetEventKeysResponse>, Status> {
        self.unary("GetEventKeys", async {
            let id = convert::event_id(&request.get_ref().event_id)?;
            self.engine.event(id)?;
            let keys = self.engine.ticket_keys();
            Ok(v1::GetEventKeysResponse {
                keys: keys
                    .public_keys()
                    .into_iter()
                    .map(|k| v1::TicketKey {
                        key_id: k.key_id,
                        public_key: k.key.to_vec(),
                    })
                    .collect(),
                active_key_id: keys.active_id(),
                fetched_at: convert::timestamp(engine::actor::wall_clock_ms()),
            })
        })
        .await
    }

    async fn check_in(
        &self,
        request: Request<v1::CheckInRequest>,
    ) -> Result<Response<v1::CheckInResponse>, Status> {
        self.unary("CheckIn", async {
            let r = request.into_inner();
            let event = convert::event_id(&r.event_id)?;
            let scan = convert::scan(event, r.token, r.gate_id, r.scan_id)?;
            let answer = self.engine.event(event)?.check_in(scan).await;
            let event = event.to_string();
            let (admission, made) = match answer {
                Ok(a) => a,
                Err(e) => {
                    telemetry::scan(&event, "", "refused");
                    return Err(e.into());
                }
            };
            let outcome = if made { "admitted" } else { "repeated" };
            telemetry::scan(&event, &admission.gate, outcome);
            Ok(v1::CheckInResponse {
                admission: Some(convert::admission_to_proto(&admission)),
            })
        })
        .await
    }

    async fn check_out(
        &self,
        request: Request<v1::CheckOutRequest>,
    ) -> Result<Response<v1::CheckOutResponse>, Status> {
        self.unary("CheckOut", async {
            let r = request.into_inner();
            let event = convert::event_id(&r.event_id)?;
            let scan = convert::scan(event, r.token, r.gate_id, r.scan_id)?;
            let answer = self.engine.event(event)?.check_out(scan).await;
            let event = event.to_string();
            let (exit, made) = match answer {
                Ok(a) => a,
                Err(e) => {
                    telemetry::scan(&event, "", "refused");
                    return Err(e.into());
                }
            };
            let outcome = if made { "exited" } else { "repeated" };
            telemetry::scan(&event, &exit.gate, outcome);
            Ok(v1::CheckOutResponse {
                exit: Some(convert::exit_to_proto(&exit)),
            })
        })
        .await
    }

    async fn upload_scans(
        &self,
        request: Request<v1::UploadScansRequest>,
    ) -> Result<Response<v1::UploadScansResponse>, Status> {
        use engine::inventory::ScanOutcome;
        use v1::scan_result::Outcome;
        self.unary("UploadScans", async {
            let r = request.into_inner();
            let event = convert::event_id(&r.event_id)?;
            if r.scans.is_empty() || r.scans.len() > engine::inventory::MAX_SCANS_PER_UPLOAD {
                return Err(ApiError::invalid(format!(
                    "scans: 1..={} per upload, not {}",
                    engine::inventory::MAX_SCANS_PER_UPLOAD,
                    r.scans.len()
                )));
            }
            // Scans whose token does not even name a ticket of this event are answered here;
            // the rest go to the event in one decision.
            let mut results: Vec<Option<v1::ScanResult>> = Vec::with_capacity(r.scans.len());
            let mut judged = Vec::new();
            for s in r.scans {
                let scan_id = s.scan_id.clone();
                let scanned = match s.scanned_at {
                    None => Err(ApiError::invalid(
                        "scanned_at: when the scan was made is required",
                    )),
                    Some(t) => convert::scan(event, s.token, s.gate_id, s.scan_id).map(|scan| {
                        let ms = u64::from(t.nanos.clamp(0, 999_999_999) as u32 / 1_000_000);
                        let seconds = t.seconds.max(0) as u64;
                        (scan, seconds.saturating_mul(1_000).saturating_add(ms))
                    }),
                };
                match scanned {
                    Ok(scan) => {
                        judged.push(scan);
                        results.push(None);
                    }
                    Err(e) => {
                        telemetry::scan("", "", "refused");
                        results.push(Some(v1::ScanResult {
                            scan_id,
                            outcome: Outcome::Refused as i32,
                            admission: None,
                            error: Some(e.to_detail()),
                        }));
                    }
                }
            }
            let ids: Vec<(String, String)> = judged
                .iter()
                .map(|(s, _)| (s.gate.clone(), s.scan_id.clone()))
                .collect();
            let mut answers = if judged.is_empty() {
                Vec::new()
            } else {
                self.engine.event(event)?.upload_scans(judged).await?
            }
            .into_iter()
            .zip(ids);
            // Answers come only from an event that exists.
            let event_label = event.to_string();
            for slot in results.iter_mut().filter(|r| r.is_none()) {
                let (answer, (gate, scan_id)) = answers.next().expect("one answer per scan");
                let (outcome, admission, error) = match answer {
                    Ok(ScanOutcome::Admitted(a)) => (Outcome::Admitted, Some(a), None),
                    Ok(ScanOutcome::Conflict { first }) => (Outcome::Conflict, Some(first), None),
                    Ok(ScanOutcome::Repeated { first, .. }) => {
                        (Outcome::Repeated, Some(first), None)
                    }
                    Err(r) => {
                        let e = ApiError::from(engine::Error::Rejected(r));
                        (Outcome::Refused, None, Some(e.to_detail()))
                    }
                };
                let label = match outcome {
                    Outcome::Admitted => "admitted",
                    Outcome::Conflict => "conflict",
                    Outcome::Repeated => "repeated",
                    _ => "refused",
                };
                telemetry::scan(&event_label, &gate, label);
                *slot = Some(v1::ScanResult {
                    scan_id,
                    outcome: outcome as i32,
                    admission: admission.as_ref().map(convert::admission_to_proto),
                    error,
                });
            }
            Ok(v1::UploadScansResponse {
                results: results.into_iter().map(|r| r.expect("answered")).collect(),
            })
        })
        .await
    }

    async fn get_check_in_stats(
        &self,
        request: Request<v1::GetCheckInStatsRequest>,
    ) -> Result<Response<v1::GetCheckInStatsResponse>, Status> {
        self.unary("GetCheckInStats", async {
            let event = convert::event_id(&request.get_ref().event_id)?;
            let stats = self.engine.event(event)?.check_in_stats().await?;
            Ok(convert::check_in_stats_to_proto(&stats))
        })
        .await
    }
}

#[tonic::async_trait]
impl v1::reservations_server::Reservations for Api {
    async fn reserve(
        &self,
        request: Request<v1::ReserveRequest>,
    ) -> Result<Response<v1::ReserveResponse>, Status> {
        self.unary("Reserve", async {
            let (event, request) = convert::reserve_request(request.into_inner())?;
            let hold = self.coalescer.reserve(event, request).await?;
            Ok(v1::ReserveResponse {
                hold: Some(convert::hold_to_proto(&hold)),
            })
        })
        .await
    }

    async fn confirm(
        &self,
        request: Request<v1::ConfirmRequest>,
    ) -> Result<Response<v1::ConfirmResponse>, Status> {
        self.unary("Confirm", async {
            let (event, request) = convert::confirm_request(request.into_inner())?;
            let order = self.engine.event(event)?.confirm(request).await?;
            Ok(v1::ConfirmResponse {
                order: Some(convert::order_to_proto(&order)),
            })
        })
        .await
    }

    async fn release(
        &self,
        request: Request<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseResponse>, Status> {
        self.unary("Release", async {
            let (event, request) = convert::release_request(request.into_inner())?;
            let hold = self.engine.event(event)?.release(request).await?;
            Ok(v1::ReleaseResponse {
                hold: Some(convert::hold_to_proto(&hold)),
            })
        })
        .await
    }

    async fn get_hold(
        &self,
        request: Request<v1::GetHoldRequest>,
    ) -> Result<Response<v1::GetHoldResponse>, Status> {
        self.unary("GetHold", async {
            let request = request.into_inner();
            let event = convert::event_id(&request.event_id)?;
            let hold_id = convert::hold_id(&request.hold_id)?;
            let hold = self.engine.event(event)?.hold(hold_id).await?;
            Ok(v1::GetHoldResponse {
                hold: Some(convert::hold_to_proto(&hold)),
            })
        })
        .await
    }

    async fn get_order(
        &self,
        request: Request<v1::GetOrderRequest>,
    ) -> Result<Response<v1::GetOrderResponse>, Status> {
        self.unary("GetOrder", async {
            let request = request.into_inner();
            let event = convert::event_id(&request.event_id)?;
            let order_id = convert::order_id(&request.order_id)?;
            let order = self.engine.event(event)?.order(order_id).await?;
            Ok(v1::GetOrderResponse {
                order: Some(convert::order_to_proto(&order)),
            })
        })
        .await
    }

    async fn cancel_order(
        &self,
        request: Request<v1::CancelOrderRequest>,
    ) -> Result<Response<v1::CancelOrderResponse>, Status> {
        self.unary("CancelOrder", async {
            let (event, request) = convert::cancel_order_request(request.into_inner())?;
            let order = self.engine.event(event)?.cancel_order(request).await?;
            Ok(v1::CancelOrderResponse {
                order: Some(convert::order_to_proto(&order)),
            })
        })
        .await
    }

    type ReserveStreamStream = AnswerStream<v1::ReserveStreamResponse>;

    async fn reserve_stream(
        &self,
        request: Request<Streaming<v1::ReserveStreamRequest>>,
    ) -> Result<Response<Self::ReserveStreamStream>, Status> {
        let started = Instant::now();
        let slot = self
            .reserve_streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                ApiError::new(
                    Code::ResourceExhausted,
                    "OVERLOADED",
                    format!(
                        "the server has {} open reservation streams, its limit; retry later",
                        self.config.max_reserve_streams
                    ),
                )
                .retry_after(STREAM_RETRY_AFTER)
            });
        if let Err(e) = &slot {
            telemetry::rpc("ReserveStream", started, e.reason);
        }
        let slot = slot.map_err(Status::from)?;
        // One more than the read-ahead: room for every answer and the final status.
        let (answers, stream) = answers::channel(
            self.config.max_stream_in_flight as usize + 1,
            self.stream_stall_timeout(),
        );
        tokio::spawn(stream_reservations(
            self.clone(),
            request.into_inner(),
            answers,
            slot,
        ));
        Ok(Response::new(stream))
    }
}

type Answers = AnswerSender<v1::ReserveStreamResponse>;

fn refused(request_id: u64, error: &ApiError) -> v1::ReserveStreamResponse {
    v1::ReserveStreamResponse {
        request_id,
        result: Some(v1::reserve_stream_response::Result::Error(
            error.to_detail(),
        )),
    }
}

/// A request read from a stream, with the answer-budget bytes it holds until its answer is
/// taken by the client.
struct Read {
    request_id: u64,
    charge: Charge,
    /// Its read-ahead slot, given back once its answer is queued (or the client is gone).
    slot: OwnedSemaphorePermit,
}

/// Reservations read from a stream and not yet handed to their actors, grouped by event.
#[derive(Default)]
struct Gathered {
    groups: HashMap<EventId, (Vec<Read>, Vec<ReserveRequest>)>,
    count: usize,
}

/// Reads a `ReserveStream` one request at a time while requests are ready, gathers them by
/// event and hands every group to its actor as one `reserve_many` (one actor turn, one commit).
/// Answers go back as they are decided.
///
/// Bounds: at most `api.max_stream_in_flight` requests of this stream are read ahead of their
/// answers, and every request read holds answer-budget bytes (taken before it is read, shrunk to
/// its size once decided) until the client takes its answer; past either bound reading waits and
/// HTTP/2 flow control slows the client.
///
/// The stream always ends with a status that says whether every request sent was read: OK only
/// when the client half-closed and every request read was answered; otherwise every request read
/// is still answered, then the stream ends with a status naming the cause (a malformed frame,
/// the server shutting down, a client that stopped taking answers) and how many requests were
/// read, so the client knows that later requests were not.
async fn stream_reservations(
    api: Api,
    mut inbound: Streaming<v1::ReserveStreamRequest>,
    answers: Answers,
    _slot: OwnedSemaphorePermit,
) {
    let read_ahead = api.config.max_stream_in_flight;
    let in_flight = Arc::new(Semaphore::new(read_ahead as usize));
    let mut stop = api.stop.clone();
    let mut read: u64 = 0;
    let mut gathered = Gathered::default();
    let end: Result<(), ApiError> = loop {
        // A client whose requests keep arriving still sees the server stop.
        if *stop.borrow() {
            break Err(shutting_down(read));
        }
        // Room for one more request: a read-ahead slot. While waiting, what is gathered goes to
        // the actors: its answers free room.
        let slot = match in_flight.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                api.dispatch(&mut gathered, &answers);
                tokio::select! {
                    slot = in_flight.clone().acquire_owned() => slot.expect("never closed"),
                    _ = stop.wait_for(|s| *s) => break Err(shutting_down(read)),
                    _ = answers.stalled() => break Err(slow_reader(&api, read)),
                }
            }
        };
        // Take what has already arrived without waiting; once nothing is ready, what is gathered
        // goes to the actors before the next wait.
        let next = match inbound.next().now_or_never() {
            Some(next) => next,
            None => {
                api.dispatch(&mut gathered, &answers);
                tokio::select! {
                    next = inbound.next() => next,
                    _ = stop.wait_for(|s| *s) => break Err(shutting_down(read)),
                    _ = answers.stalled() => break Err(slow_reader(&api, read)),
                }
            }
        };
        let item = match next {
            None => break Ok(()),
            Some(Ok(item)) => item,
            Some(Err(status)) => break Err(malformed(&status, read)),
        };
        // The request and its largest answer are charged to the budget before it is decided;
        // while the budget is full the stream holds this one request and reads no more.
        let bytes = answer_charge(&item, &api.limits);
        let charge = match api.answer_budget.try_charge(bytes) {
            Some(c) => c,
            None => {
                api.dispatch(&mut gathered, &answers);
                tokio::select! {
                    c = api.answer_budget.charge(bytes) => c,
                    _ = stop.wait_for(|s| *s) => break Err(shutting_down(read)),
                    _ = answers.stalled() => break Err(slow_reader(&api, read)),
                }
            }
        };
        read += 1;
        api.gather(item, charge, slot, &mut gathered, &answers)
            .await;
        if gathered.count >= api.stream_batch {
            api.dispatch(&mut gathered, &answers);
        }
        if answers.is_stalled() {
            break Err(slow_reader(&api, read));
        }
    };
    api.dispatch(&mut gathered, &answers);
    // Every request read gets its answer queued before the stream ends: each holds a read-ahead
    // slot until then (or until the client is gone).
    let _all = in_flight.acquire_many(read_ahead).await;
    // The stream ends once the client has taken every answer. A client that takes none for the
    // stall time has its waiting answers dropped, and the stream ends SLOW_READER, never OK,
    // even after a half-close.
    let end = match answers.drained().await {
        true => end,
        false => {
            answers.discard_waiting();
            match end {
                Err(e) if e.reason != "SLOW_READER" => Err(e),
                _ => Err(slow_reader(&api, read)),
            }
        }
    };
    if let Err(e) = &end {
        tracing::debug!(reason = e.reason, message = %e.message, "reserve stream ended early");
    }
    answers.finish(end.map_err(Status::from));
}

fn shutting_down(read: u64) -> ApiError {
    ApiError::new(
        Code::Unavailable,
        "SHUTTING_DOWN",
        format!(
            "the server is shutting down; the {read} requests read were answered, later ones were \
             not read: send them again once the server is back"
        ),
    )
    .with("requests_read", read)
}

fn slow_reader(api: &Api, read: u64) -> ApiError {
    ApiError::new(
        Code::ResourceExhausted,
        "SLOW_READER",
        format!(
            "the client took no answer for {} ms while answers waited; the stream is ended and \
             its waiting answers dropped. The {read} requests read were decided: retry them with \
             the same idempotency keys to learn their outcome",
            api.config.stream_stall_timeout_ms
        ),
    )
    .with("requests_read", read)
}

/// A frame that does not decode ends the stream: what follows it cannot be trusted to be framed.
fn malformed(status: &Status, read: u64) -> ApiError {
    let code = match status.code() {
        Code::OutOfRange => Code::OutOfRange,
        _ => Code::InvalidArgument,
    };
    ApiError::new(
        code,
        "MALFORMED_STREAM",
        format!(
            "request {} of the stream could not be read ({}); the {read} requests before it were \
             answered, it and any later ones were not read",
            read + 1,
            crate::status::quote(status.message()),
        ),
    )
    .with("requests_read", read)
}

impl Api {
    /// Converts a request read from a stream and adds it to its event's group; a request that
    /// does not convert is answered at once.
    async fn gather(
        &self,
        item: v1::ReserveStreamRequest,
        mut charge: Charge,
        slot: OwnedSemaphorePermit,
        gathered: &mut Gathered,
        answers: &Answers,
    ) {
        let request_id = item.request_id;
        let converted = item
            .reserve
            .ok_or_else(|| ApiError::invalid("reserve is required"))
            .and_then(convert::reserve_request);
        match converted {
            Ok((event, request)) => {
                // The slot is given back with the answer (see `dispatch`).
                let group = gathered.groups.entry(event).or_default();
                group.0.push(Read {
                    request_id,
                    charge,
                    slot,
                });
                group.1.push(request);
                gathered.count += 1;
            }
            Err(e) => {
                telemetry::rpc_many("ReserveStream", Duration::ZERO, e.reason, 1);
                let answer = refused(request_id, &e);
                charge.shrink_to(answer_bytes(&answer));
                let _ = answers.send(answer, charge).await;
                drop(slot);
            }
        }
    }

    fn stream_stall_timeout(&self) -> Duration {
        Duration::from_millis(self.config.stream_stall_timeout_ms)
    }

    /// Hands every gathered group to its actor, each in a task of its own that queues the
    /// answers and gives back one read-ahead slot per answer queued.
    fn dispatch(&self, gathered: &mut Gathered, answers: &Answers) {
        let received = Instant::now();
        gathered.count = 0;
        for (event, (reads, requests)) in gathered.groups.drain() {
            let (api, answers) = (self.clone(), answers.clone());
            tokio::spawn(async move {
                let results: Vec<Result<Hold, ApiError>> = match api.engine.event(event) {
                    Ok(handle) => match handle.reserve_many(requests).await {
                        Ok(results) => results
                            .into_iter()
                            .map(|r| r.map_err(ApiError::from))
                            .collect(),
                        Err(e) => vec![Err(ApiError::from(e)); reads.len()],
                    },
                    Err(e) => vec![Err(ApiError::from(e)); reads.len()],
                };
                let elapsed = received.elapsed();
                // One count and one latency sample per outcome of the group.
                let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
                for result in &results {
                    *outcomes.entry(outcome(result)).or_default() += 1;
                }
                for (outcome, count) in outcomes {
                    telemetry::rpc_many("ReserveStream", elapsed, outcome, count);
                }
                for (read, result) in reads.into_iter().zip(results) {
                    let answer = match result {
                        Ok(hold) => v1::ReserveStreamResponse {
                            request_id: read.request_id,
                            result: Some(v1::reserve_stream_response::Result::Hold(
                                convert::hold_to_proto(&hold),
                            )),
                        },
                        Err(e) => refused(read.request_id, &e),
                    };
                    let mut charge = read.charge;
                    charge.shrink_to(answer_bytes(&answer));
                    // A client gone or stalled still frees every slot: the stream is ending.
                    let _ = answers.send(answer, charge).await;
                    drop(read.slot);
                }
            });
        }
    }
}

/// What a decoded message takes in memory for each byte of its encoding, as charged to the
/// answer budget: strings and vectors of a decoded message are separate allocations, each with
/// its header and the allocator's rounding.
const MEMORY_PER_ENCODED_BYTE: usize = 2;

/// Bytes an answer is charged while it waits for its client.
fn answer_bytes(answer: &v1::ReserveStreamResponse) -> usize {
    MEMORY_PER_ENCODED_BYTE * answer.encoded_len()
}

/// The most a request read from a stream can take until its answer goes: the request itself,
/// and the largest answer it can get (a hold naming every ticket's seat with labels of the
/// longest allowed strings, or a refusal, whose message and metadata are capped).
fn answer_charge(item: &v1::ReserveStreamRequest, limits: &engine::inventory::Limits) -> usize {
    let max_string = limits.max_string_bytes as usize;
    let seat_bytes = 3 * (max_string + 8) + 8;
    let (mut tickets, mut lines) = (0usize, 0usize);
    if let Some(reserve) = &item.reserve {
        for it in &reserve.items {
            lines += 64 + it.tier_code.len().min(max_string);
            tickets += match &it.selection {
                Some(v1::reserve_item::Selection::Seats(s)) => s.seats.len(),
                Some(v1::reserve_item::Selection::BestAvailable(n)) => *n as usize,
                _ => 0,
            };
        }
    }
    let tickets = tickets.min(limits.max_tickets_per_request as usize);
    let hold = 256 + 2 * max_string + lines + tickets * seat_bytes;
    let answer = hold.max(crate::status::MAX_DETAIL_BYTES);
    MEMORY_PER_ENCODED_BYTE * (item.encoded_len() + answer)
}

/// What a seat listing of `tier` (or of every seated tier) takes at its peak, while it exists as
/// the engine's list and as the message built from it: per seat, two copies of its labels and
/// tier code, each as four strings with their headers.
fn seat_listing_bytes(spec: &engine::inventory::EventSpec, tier: Option<&str>) -> usize {
    const PER_SEAT_OVERHEAD: usize = 4 * 24 + 16;
    let mut bytes = 1024;
    for t in &spec.tiers {
        if tier.is_some_and(|code| code != t.code) {
            continue;
        }
        if let engine::inventory::Stock::Seated { sections } = &t.stock {
            for section in sections {
                for row in &section.rows {
                    let labels = section.name.len() + row.name.len() + t.code.len();
                    for number in &row.seats {
                        bytes += 2 * (PER_SEAT_OVERHEAD + labels + number.len());
                    }
                }
            }
        }
    }
    bytes
}

/// The largest request of the Reservations service that the limits allow (a reserve with every
/// item, every ticket a named seat and every string at its longest, plus protobuf's tags and
/// lengths): its decoding limit, and what a stream charges before reading a request.
pub fn max_reservation_request_bytes(limits: &engine::inventory::Limits) -> usize {
    let max_string = limits.max_string_bytes as usize + 6;
    64 + 4 * max_string
        + limits.max_items_per_request as usize * (max_string + 24)
        + limits.max_tickets_per_request as usize * (3 * max_string + 6)
}

#[tonic::async_trait]
impl v1::availability_server::Availability for Api {
    async fn get_availability(
        &self,
        request: Request<v1::GetAvailabilityRequest>,
    ) -> Result<Response<v1::GetAvailabilityResponse>, Status> {
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            let id = convert::event_id(&request.event_id)?;
            let event = self.engine.event(id)?;
            let tier = (!request.seats_tier_code.is_empty()).then_some(request.seats_tier_code);
            // A seat listing can be tens of MB: it is charged to the answer budget before it is
            // built, and holds its charge until its body is sent (see `answers::HeldCharge`).
            let charge = if request.include_seats {
                let bytes = seat_listing_bytes(event.spec(), tier.as_deref());
                Some(self.answer_budget.try_charge(bytes).ok_or_else(|| {
                    ApiError::new(
                        Code::ResourceExhausted,
                        "OVERLOADED",
                        format!(
                            "seat listings and stream answers waiting for their clients fill the \
                             server's answer buffer (api.max_answer_buffer_mib = {}); retry later",
                            self.config.max_answer_buffer_mib
                        ),
                    )
                    .retry_after(SEAT_LISTING_RETRY_AFTER)
                })?)
            } else {
                None
            };
            let summary = event.summary().await?;
            let seats = match &charge {
                Some(_) => convert::seats_to_proto(&event.seats(tier).await?),
                None => Vec::new(),
            };
            let answer = v1::GetAvailabilityResponse {
                event_id: id.to_string(),
                status: convert::status_to_proto(summary.status) as i32,
                tiers: convert::tiers_to_proto(&summary.tiers),
                seats,
            };
            let charge = charge.map(|mut c| {
                c.shrink_to(MEMORY_PER_ENCODED_BYTE * answer.encoded_len());
                c
            });
            Ok((answer, charge))
        }
        .await;
        telemetry::rpc("GetAvailability", started, outcome(&result));
        let (answer, charge) = result.map_err(Status::from)?;
        let mut response = Response::new(answer);
        if let Some(charge) = charge {
            response.extensions_mut().insert(HeldCharge::new(charge));
        }
        Ok(response)
    }

    type WatchAvailabilityStream = ReceiverStream<Result<v1::WatchAvailabilityResponse, Status>>;

    async fn watch_availability(
        &self,
        request: Request<v1::WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        let started = Instant::now();
        let opened = (|| {
            let id = convert::event_id(&request.get_ref().event_id)?;
            let event = self.engine.event(id)?;
            let permit = self.watchers.clone().try_acquire_owned().map_err(|_| {
                ApiError::new(
                    Code::ResourceExhausted,
                    "OVERLOADED",
                    format!(
                        "the server has {} availability watchers, its limit; retry later",
                        self.config.max_watchers
                    ),
                )
            })?;
            Ok((event, permit))
        })();
        telemetry::rpc("WatchAvailability", started, outcome(&opened));
        let (event, permit) = opened.map_err(Status::from)?;
        let (tx, rx) = mpsc::channel(1);
        let interval = Duration::from_millis(self.config.watch_interval_ms);
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut changes = event.changes();
            loop {
                let version = *changes.borrow_and_update();
                let summary = match event.summary().await {
                    Ok(summary) => summary,
                    Err(engine::Error::Overloaded { .. }) => {
                        // The event is saturated; the next read will see the latest counts.
                        tokio::time::sleep(WATCH_OVERLOAD_BACKOFF).await;
                        changes.mark_changed();
                        continue;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(ApiError::from(e).into())).await;
                        return;
                    }
                };
                let message = v1::WatchAvailabilityResponse {
                    event_id: summary.id.to_string(),
                    status: convert::status_to_proto(summary.status) as i32,
                    tiers: convert::tiers_to_proto(&summary.tiers),
                    version,
                };
                tokio::select! {
                    sent = tx.send(Ok(message)) => if sent.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                }
                // Coalesce: whatever changes in the interval goes out as one message.
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tx.closed() => return,
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
