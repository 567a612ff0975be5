//! `Reservations` and `Availability` services that answer without touching an engine: the
//! transport's ceiling on a machine. Reserve, ReserveStream, Confirm, Release and GetAvailability
//! answer with messages of the shape and about the size of real ones (a hold with one line, an
//! order, one tier's counts); the rest answer UNIMPLEMENTED. They do no authentication, no
//! durability and no bookkeeping, so a benchmark of the real service against them shows what
//! boxoffice itself costs. For benchmarks only.

use std::net::SocketAddr;

use proto::v1;
use proto::v1::availability_server::{Availability, AvailabilityServer};
use proto::v1::reservations_server::{Reservations, ReservationsServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status, Streaming};
use uuid::Uuid;

use crate::convert::timestamp;

#[derive(Clone, Copy, Default)]
pub struct NoopReservations;

fn hold_for(request: &v1::ReserveRequest) -> v1::Hold {
    let now_ms = engine::actor::wall_clock_ms();
    let quantity = match request.items.first().and_then(|i| i.selection.as_ref()) {
        Some(v1::reserve_item::Selection::Quantity(q)) => *q,
        _ => 1,
    };
    v1::Hold {
        hold_id: Uuid::now_v7().to_string(),
        event_id: request.event_id.clone(),
        customer_id: request.customer_id.clone(),
        lines: vec![v1::Line {
            tier_code: request
                .items
                .first()
                .map(|i| i.tier_code.clone())
                .unwrap_or_default(),
            quantity,
            seats: vec![],
            unit_price_minor: 5_000,
            unit_fee_minor: 250,
        }],
        currency: "EUR".into(),
        subtotal_minor: 5_000 * u64::from(quantity),
        fees_minor: 250 * u64::from(quantity),
        total_minor: 5_250 * u64::from(quantity),
        created_at: timestamp(now_ms),
        expires_at: timestamp(now_ms + 600_000),
    }
}

fn order_for(request: &v1::ConfirmRequest) -> v1::Order {
    let now_ms = engine::actor::wall_clock_ms();
    v1::Order {
        order_id: Uuid::now_v7().to_string(),
        event_id: request.event_id.clone(),
        hold_id: request.hold_id.clone(),
        customer_id: String::new(),
        lines: vec![v1::Line {
            tier_code: "GA".into(),
            quantity: 1,
            seats: vec![],
            unit_price_minor: 5_000,
            unit_fee_minor: 250,
        }],
        currency: "EUR".into(),
        subtotal_minor: 5_000,
        fees_minor: 250,
        total_minor: 5_250,
        payment_reference: request
            .payment
            .as_ref()
            .map(|p| p.reference.clone())
            .unwrap_or_default(),
        status: v1::OrderStatus::PendingPayment as i32,
        created_at: timestamp(now_ms),
        updated_at: timestamp(now_ms),
        payment_due_at: timestamp(now_ms + 900_000),
        ..Default::default()
    }
}

fn unimplemented() -> Status {
    Status::new(
        Code::Unimplemented,
        "the no-op server answers Reserve, ReserveStream, Confirm, Release and GetAvailability only",
    )
}

#[tonic::async_trait]
impl Reservations for NoopReservations {
    async fn reserve(
        &self,
        request: Request<v1::ReserveRequest>,
    ) -> Result<Response<v1::ReserveResponse>, Status> {
        Ok(Response::new(v1::ReserveResponse {
            hold: Some(hold_for(request.get_ref())),
        }))
    }

    async fn confirm(
        &self,
        request: Request<v1::ConfirmRequest>,
    ) -> Result<Response<v1::ConfirmResponse>, Status> {
        Ok(Response::new(v1::ConfirmResponse {
            order: Some(order_for(request.get_ref())),
        }))
    }

    async fn release(
        &self,
        request: Request<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseResponse>, Status> {
        let request = request.into_inner();
        let mut hold = hold_for(&v1::ReserveRequest {
            event_id: request.event_id,
            ..Default::default()
        });
        hold.hold_id = request.hold_id;
        Ok(Response::new(v1::ReleaseResponse { hold: Some(hold) }))
    }

    async fn get_hold(
        &self,
        _: Request<v1::GetHoldRequest>,
    ) -> Result<Response<v1::GetHoldResponse>, Status> {
        Err(unimplemented())
    }

    async fn get_order(
        &self,
        _: Request<v1::GetOrderRequest>,
    ) -> Result<Response<v1::GetOrderResponse>, Status> {
        Err(unimplemented())
    }

    async fn cancel_order(
        &self,
        _: Request<v1::CancelOrderRequest>,
    ) -> Result<Response<v1::CancelOrderResponse>, Status> {
        Err(unimplemented())
    }

    type ReserveStreamStream = ReceiverStream<Result<v1::ReserveStreamResponse, Status>>;

    async fn reserve_stream(
        &self,
        request: Request<Streaming<v1::ReserveStreamRequest>>,
    ) -> Result<Response<Self::ReserveStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1_024);
        tokio::spawn(async move {
            while let Ok(Some(item)) = inbound.message().await {
                let hold = item.reserve.as_ref().map(hold_for).unwrap_or_default();
                let answer = v1::ReserveStreamResponse {
                    request_id: item.request_id,
                    result: Some(v1::reserve_stream_response::Result::Hold(hold)),
                };
                if tx.send(Ok(answer)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[derive(Clone, Copy, Default)]
pub struct NoopAvailability;

#[tonic::async_trait]
impl Availability for NoopAvailability {
    async fn get_availability(
        &self,
        request: Request<v1::GetAvailabilityRequest>,
    ) -> Result<Response<v1::GetAvailabilityResponse>, Status> {
        Ok(Response::new(v1::GetAvailabilityResponse {
            event_id: request.into_inner().event_id,
            status: v1::EventStatus::OnSale as i32,
            tiers: vec![v1::TierAvailability {
                tier_code: "GA".into(),
                capacity: 1_000,
                available: 1_000,
                held: 0,
                sold: 0,
            }],
            seats: vec![],
        }))
    }

    type WatchAvailabilityStream = ReceiverStream<Result<v1::WatchAvailabilityResponse, Status>>;

    async fn watch_availability(
        &self,
        _: Request<v1::WatchAvailabilityRequest>,
    ) -> Result<Response<Self::WatchAvailabilityStream>, Status> {
        Err(unimplemented())
    }
}

/// Serves the no-op services on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .add_service(ReservationsServer::new(NoopReservations))
        .add_service(AvailabilityServer::new(NoopAvailability))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await
}

/// Binds a loopback port for the no-op server.
pub async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
