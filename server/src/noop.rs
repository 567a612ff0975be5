//! A `Reservations` service that answers without touching an engine: the transport's ceiling on
//! a machine. Its answers have the shape and about the size of real ones (a hold with one line),
//! and it does no authentication, no durability and no bookkeeping, so a benchmark of the real
//! service against it shows what boxoffice itself costs. For benchmarks only.

use std::net::SocketAddr;

use proto::v1;
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

fn unimplemented() -> Status {
    Status::new(
        Code::Unimplemented,
        "the no-op server only answers Reserve and ReserveStream",
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
        _: Request<v1::ConfirmRequest>,
    ) -> Result<Response<v1::ConfirmResponse>, Status> {
        Err(unimplemented())
    }

    async fn release(
        &self,
        _: Request<v1::ReleaseRequest>,
    ) -> Result<Response<v1::ReleaseResponse>, Status> {
        Err(unimplemented())
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

/// Serves the no-op service on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .add_service(ReservationsServer::new(NoopReservations))
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
