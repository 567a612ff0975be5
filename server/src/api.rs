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
use futures_util::StreamExt;
use proto::v1;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::coalesce::Coalescer;
use crate::convert;
use crate::status::ApiError;
use crate::telemetry;

/// `ListEvents` page size when the request names none, and the largest one allowed.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1_000;
/// How long a watcher waits before reading an overloaded event's counts again.
const WATCH_OVERLOAD_BACKOFF: Duration = Duration::from_millis(50);

/// The services' shared state. Cheap to clone.
#[derive(Clone)]
pub struct Api {
    engine: Arc<Engine>,
    config: Arc<ApiConfig>,
    /// Requests of one stream batch, at most: within the stream's read-ahead and the event's
    /// in-flight limit, so a batch is never refused for its size alone.
    stream_batch: usize,
    watchers: Arc<Semaphore>,
    /// Unary Reserve calls go through here, gathered per event into batches.
    coalescer: Arc<Coalescer>,
    stop: watch::Receiver<bool>,
}

impl Api {
    /// `stop` turns true when the server begins to shut down: streams then end.
    pub fn new(engine: Arc<Engine>, config: &config::Config, stop: watch::Receiver<bool>) -> Api {
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
        Api {
            engine,
            coalescer,
            config: Arc::new(api.clone()),
            stream_batch,
            watchers: Arc::new(Semaphore::new(api.max_watchers as usize)),
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
            let spec = convert::event_spec(request.into_inner())?;
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

    type ReserveStreamStream = ReceiverStream<Result<v1::ReserveStreamResponse, Status>>;

    async fn reserve_stream(
        &self,
        request: Request<Streaming<v1::ReserveStreamRequest>>,
    ) -> Result<Response<Self::ReserveStreamStream>, Status> {
        let read_ahead = self.config.max_stream_in_flight as usize;
        let (answers, rx) = mpsc::channel(read_ahead);
        tokio::spawn(stream_reservations(
            self.clone(),
            request.into_inner(),
            answers,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Answers = mpsc::Sender<Result<v1::ReserveStreamResponse, Status>>;

fn refused(request_id: u64, error: &ApiError) -> v1::ReserveStreamResponse {
    v1::ReserveStreamResponse {
        request_id,
        result: Some(v1::reserve_stream_response::Result::Error(
            error.to_detail(),
        )),
    }
}

/// Reads a `ReserveStream` in batches of whatever has arrived, groups each batch by event and
/// hands every group to its actor as one `reserve_many` (one actor turn, one commit). Answers go
/// back as they are decided. At most `api.max_stream_in_flight` requests are read ahead of their
/// answers: past that, reading waits, and HTTP/2 flow control slows the client.
async fn stream_reservations(
    api: Api,
    inbound: Streaming<v1::ReserveStreamRequest>,
    answers: Answers,
) {
    let budget = Arc::new(Semaphore::new(api.config.max_stream_in_flight as usize));
    let mut batches = inbound.ready_chunks(api.stream_batch);
    let mut stop = api.stop.clone();
    loop {
        let batch = tokio::select! {
            batch = batches.next() => batch,
            _ = stop.wait_for(|s| *s) => None,
        };
        let Some(batch) = batch else {
            break;
        };
        let received = Instant::now();
        let mut groups: HashMap<EventId, (Vec<u64>, Vec<ReserveRequest>)> = HashMap::new();
        for item in batch {
            let item = match item {
                Ok(item) => item,
                Err(status) => {
                    tracing::debug!(%status, "reserve stream broken by the client");
                    return;
                }
            };
            let converted = item
                .reserve
                .ok_or_else(|| ApiError::invalid("reserve is required"))
                .and_then(convert::reserve_request);
            match converted {
                Ok((event, request)) => {
                    let group = groups.entry(event).or_default();
                    group.0.push(item.request_id);
                    group.1.push(request);
                }
                Err(e) => {
                    telemetry::rpc_many("ReserveStream", received.elapsed(), e.reason, 1);
                    if answers
                        .send(Ok(refused(item.request_id, &e)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        for (event, (ids, requests)) in groups {
            let Ok(permits) = budget.clone().acquire_many_owned(ids.len() as u32).await else {
                return;
            };
            let handle = match api.engine.event(event) {
                Ok(handle) => handle,
                Err(e) => {
                    let e = ApiError::from(e);
                    telemetry::rpc_many(
                        "ReserveStream",
                        received.elapsed(),
                        e.reason,
                        ids.len() as u64,
                    );
                    for id in ids {
                        if answers.send(Ok(refused(id, &e))).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            let answers = answers.clone();
            tokio::spawn(async move {
                let decided = handle.reserve_many(requests).await;
                let elapsed = received.elapsed();
                let results: Vec<Result<Hold, ApiError>> = match decided {
                    Ok(results) => results
                        .into_iter()
                        .map(|r| r.map_err(ApiError::from))
                        .collect(),
                    Err(e) => vec![Err(ApiError::from(e)); ids.len()],
                };
                let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
                let responses: Vec<v1::ReserveStreamResponse> = ids
                    .into_iter()
                    .zip(results)
                    .map(|(request_id, result)| {
                        *outcomes.entry(outcome(&result)).or_default() += 1;
                        match result {
                            Ok(hold) => v1::ReserveStreamResponse {
                                request_id,
                                result: Some(v1::reserve_stream_response::Result::Hold(
                                    convert::hold_to_proto(&hold),
                                )),
                            },
                            Err(e) => refused(request_id, &e),
                        }
                    })
                    .collect();
                // One count and one latency sample per outcome of the group.
                for (outcome, count) in outcomes {
                    telemetry::rpc_many("ReserveStream", elapsed, outcome, count);
                }
                for response in responses {
                    if answers.send(Ok(response)).await.is_err() {
                        break;
                    }
                }
                drop(permits);
            });
        }
    }
}

#[tonic::async_trait]
impl v1::availability_server::Availability for Api {
    async fn get_availability(
        &self,
        request: Request<v1::GetAvailabilityRequest>,
    ) -> Result<Response<v1::GetAvailabilityResponse>, Status> {
        self.unary("GetAvailability", async {
            let request = request.into_inner();
            let id = convert::event_id(&request.event_id)?;
            let event = self.engine.event(id)?;
            let summary = event.summary().await?;
            let seats = if request.include_seats {
                let tier = (!request.seats_tier_code.is_empty()).then_some(request.seats_tier_code);
                convert::seats_to_proto(&event.seats(tier).await?)
            } else {
                Vec::new()
            };
            Ok(v1::GetAvailabilityResponse {
                event_id: id.to_string(),
                status: convert::status_to_proto(summary.status) as i32,
                tiers: convert::tiers_to_proto(&summary.tiers),
                seats,
            })
        })
        .await
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
