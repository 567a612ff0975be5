//! Starting and stopping the whole server: the engine, the gRPC API (with health, reflection and
//! authentication), the metrics endpoint and the gauge refresher.
//!
//! `launch` binds the ports first (a port in use is reported at once), takes the data
//! directory's lock and opens the log, and serves at once: health says NOT_SERVING and every call
//! gets UNAVAILABLE `RECOVERING` with a retry hint while the events come back from disk in the
//! background; then health turns SERVING. `stop` is the graceful path: report NOT_SERVING, stop
//! accepting, let in-flight calls finish (up to `api.shutdown_grace_ms`), end the streams, then
//! drain every event actor and flush the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use config::{Config, Role};
use engine::Engine;
use futures_util::future::join_all;
use metrics::gauge;
use proto::v1::availability_server::AvailabilityServer;
use proto::v1::check_in_server::CheckInServer;
use proto::v1::event_admin_server::EventAdminServer;
use proto::v1::reservations_server::ReservationsServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::answers::{AnswerBudget, ChargedBodies};
use crate::api::{Api, max_reservation_request_bytes};
use crate::auth::Authenticator;
use crate::telemetry;

/// The gRPC services this server offers, as health checking and reflection name them.
pub const SERVICE_NAMES: &[&str] = &[
    "boxoffice.v1.EventAdmin",
    "boxoffice.v1.Reservations",
    "boxoffice.v1.Availability",
    "boxoffice.v1.CheckIn",
];

/// A started server.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    engine: Arc<Engine>,
    health: HealthReporter,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
    /// The recovery under way, until `ready` has seen it end.
    recovery: Option<JoinHandle<Result<(), engine::Error>>>,
    /// The relay and the payment-result consumer, once recovery has started them.
    kafka: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    grace: Duration,
}

/// How long a stopping server waits for the relay and the payment-result consumer to end.
const KAFKA_STOP_WITHIN: Duration = Duration::from_secs(20);

/// Starts the server and waits until every event is recovered and it is SERVING.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    let mut running = launch(config).await?;
    running.ready().await?;
    Ok(running)
}

/// Binds the ports, opens the engine's log and serves at once; the events are recovered in the
/// background (see the module's comment). `ready` waits for that.
pub async fn launch(config: &Config) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on api.listen = {}", config.api.listen))?;
    let grpc_addr = listener.local_addr()?;
    let metrics_listener = match config.metrics.enabled {
        true => Some(
            TcpListener::bind(config.metrics.listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on metrics.listen = {}",
                        config.metrics.listen
                    )
                })?,
        ),
        false => None,
    };
    let engine = Arc::new(Engine::new(config).with_context(|| {
        format!(
            "cannot open the engine in {}",
            config.storage.data_dir.display()
        )
    })?);
    let (stop, stop_rx) = watch::channel(false);
    let mut background = Vec::new();
    let answer_budget = AnswerBudget::new((config.api.max_answer_buffer_mib << 20) as usize);

    let mut metrics_addr = None;
    let mut handle = None;
    if let Some(metrics_listener) = metrics_listener {
        metrics_addr = Some(metrics_listener.local_addr()?);
        handle = telemetry::install();
        match &handle {
            Some(h) => {
                let (h, rx) = (h.clone(), stop_rx.clone());
                background.push(tokio::spawn(async move {
                    if let Err(e) = telemetry::serve(metrics_listener, h, rx).await {
                        tracing::error!(error = %e, "metrics endpoint stopped");
                    }
                }));
            }
            None => tracing::warn!("a metrics recorder is installed already; using it"),
        }
    }
    background.push(tokio::spawn(telemetry::refresh(
        engine.clone(),
        answer_budget.clone(),
        handle,
        Duration::from_millis(config.metrics.refresh_interval_ms),
        stop_rx.clone(),
    )));

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1 and, for older tools, v1alpha.
    let reflection_v1 = reflection()
        .build_v1()
        .context("cannot build the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("cannot build the reflection service")?;

    let auth = Authenticator::new(&config.auth);
    let api = Api::new(engine.clone(), config, answer_budget, stop_rx.clone());
    let max_bytes = config.api.max_request_bytes as usize;
    // No valid request of Reservations is larger; a stream charges this much before each read.
    let max_reservation_bytes = max_bytes.min(max_reservation_request_bytes(
        &engine::inventory::Limits::from(config),
    ));
    let admin = InterceptedService::new(
        EventAdminServer::new(api.clone()).max_decoding_message_size(max_bytes),
        auth.require(Role::Admin),
    );
    let reservations = InterceptedService::new(
        ReservationsServer::new(api.clone()).max_decoding_message_size(max_reservation_bytes),
        auth.require(Role::Storefront),
    );
    let availability = InterceptedService::new(
        AvailabilityServer::new(api.clone()).max_decoding_message_size(max_bytes),
        auth.require(Role::Storefront),
    );
    let check_in = InterceptedService::new(
        CheckInServer::new(api).max_decoding_message_size(max_bytes),
        auth.require(Role::Scanner),
    );
    let incoming = crate::connections::bounded(
        TcpIncoming::from(listener).with_nodelay(Some(true)),
        config.api.max_connections,
        Duration::from_millis(config.api.handshake_timeout_ms),
    );
    let mut stopping = stop_rx.clone();
    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&config.api.tls_cert_path, &config.api.tls_key_path) {
        let read = |key_name: &str, path: &std::path::Path| {
            std::fs::read(path)
                .with_context(|| format!("cannot read {key_name} = {}", path.display()))
        };
        let identity = Identity::from_pem(
            read("api.tls_cert_path", cert)?,
            read("api.tls_key_path", key)?,
        );
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .context("api.tls_cert_path / api.tls_key_path: not a usable certificate and key")?;
    }
    let server = tokio::spawn(
        builder
            .max_concurrent_streams(config.api.max_concurrent_streams_per_connection)
            .http2_keepalive_interval(Some(Duration::from_millis(
                config.api.keepalive_interval_ms,
            )))
            .http2_keepalive_timeout(Some(Duration::from_millis(config.api.keepalive_timeout_ms)))
            .http2_max_header_list_size(config.api.max_header_list_bytes)
            .layer(ChargedBodies)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(admin)
            .add_service(reservations)
            .add_service(availability)
            .add_service(check_in)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopping.wait_for(|s| *s).await;
            }),
    );
    let kafka_tasks = Arc::new(std::sync::Mutex::new(Vec::new()));
    background.push(tokio::spawn(watch_storage(
        engine.clone(),
        health.clone(),
        stop_rx.clone(),
    )));
    let recovery = {
        let (engine, health) = (engine.clone(), health.clone());
        let (kafka, stop_rx) = (config.kafka.clone(), stop_rx.clone());
        let tasks = kafka_tasks.clone();
        tokio::spawn(async move {
            engine.recover().await?;
            // After recovery, which writes again any outbox entry a crash kept from disk. Both
            // stop by themselves when `stop` turns true; `Running::stop` waits for them.
            let started = [
                crate::relay::start(engine.clone(), &kafka, stop_rx.clone()),
                crate::payments::start(engine.clone(), &kafka, stop_rx),
            ];
            tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(started.into_iter().flatten());
            set_health(&health, ServingStatus::Serving).await;
            Ok(())
        })
    };
    Ok(Running {
        grpc_addr,
        metrics_addr,
        engine,
        health,
        stop,
        server,
        background,
        recovery: Some(recovery),
        kafka: kafka_tasks,
        grace: Duration::from_millis(config.api.shutdown_grace_ms),
    })
}

/// How often the server looks whether a write to the data directory has failed.
const STORAGE_CHECK_EVERY: Duration = Duration::from_millis(200);

/// Once a write to the data directory has failed (a full disk, an i/o error), the engine refuses
/// every change until restarted and answers reads from what the disk holds. This says so: an
/// error in the log once, `boxoffice_storage_failed` 1, and health NOT_SERVING for the server
/// and every service but `boxoffice.v1.Availability`, which keeps serving. The way back is a
/// restart once the disk has room again (docs in the README, "When the disk fills").
async fn watch_storage(
    engine: Arc<Engine>,
    health: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    gauge!("boxoffice_storage_failed").set(0.0);
    let mut reported = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(STORAGE_CHECK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(failure) = engine.storage_failure() else {
            continue;
        };
        if !reported {
            reported = true;
            gauge!("boxoffice_storage_failed").set(1.0);
            tracing::error!(
                error = %failure,
                "a write to storage.data_dir failed: every change is refused with STORAGE and reads are answered from the disk's state; make room on the disk (or fix it), then restart boxoffice"
            );
        }
        // Again at every check: recovery ending after the failure turns everything SERVING.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in SERVICE_NAMES {
            let status = match *name {
                "boxoffice.v1.Availability" => ServingStatus::Serving,
                _ => ServingStatus::NotServing,
            };
            health.set_service_status(*name, status).await;
        }
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(*name, status).await;
    }
}

impl Running {
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Waits until every event is recovered and health says SERVING; an error is why recovery
    /// failed (a corrupt log, a disk error), and the server cannot take calls.
    pub async fn ready(&mut self) -> anyhow::Result<()> {
        let Some(recovery) = self.recovery.take() else {
            return Ok(());
        };
        recovery
            .await
            .context("the recovery task failed")?
            .context("cannot recover the events from disk")
    }

    /// Stops gracefully; everything acknowledged is durable when this returns.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        set_health(&self.health, ServingStatus::NotServing).await;
        if let Some(recovery) = self.recovery.take() {
            // Stopping while recovering: the actors spawned so far are drained below.
            recovery.abort();
            let _ = recovery.await;
        }
        self.stop.send_replace(true);
        match tokio::time::timeout(self.grace, self.server).await {
            Ok(Ok(served)) => served.context("the gRPC server failed")?,
            Ok(Err(e)) => return Err(e).context("the gRPC server task failed"),
            Err(_) => tracing::warn!(
                grace_ms = self.grace.as_millis() as u64,
                "calls still running after the shutdown grace period; stopping anyway"
            ),
        }
        for task in self.background {
            let _ = task.await;
        }
        // The relay's last acknowledgements and the consumer's last results settle before the
        // engine drains; a broker away does not hold the stop past the deadline.
        let kafka: Vec<_> =
            std::mem::take(&mut *self.kafka.lock().unwrap_or_else(|e| e.into_inner()));
        if tokio::time::timeout(KAFKA_STOP_WITHIN, join_all(kafka))
            .await
            .is_err()
        {
            tracing::warn!(
                within_s = KAFKA_STOP_WITHIN.as_secs(),
                "the order-event relay or the payment-result consumer did not stop in time; stopping anyway"
            );
        }
        self.engine.shutdown().await;
        Ok(())
    }
}
