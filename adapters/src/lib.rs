//! boxoffice's adapters: services that act on the order events boxoffice publishes on Kafka and
//! report back over Kafka, each with durable state of its own. They never read or write the
//! engine's files. `payments` is the payment adapter (the `boxoffice-payments` binary),
//! `tickets` the ticket-file adapter (`boxoffice-tickets`), `mail` the email adapter
//! (`boxoffice-email`); `api_keys` guards their gRPC services; `files` keeps the ticket files, in
//! a directory or an S3 bucket, for the last two. What every adapter's binary does the same way
//! (logs, signals, Kafka properties) is here.

pub mod api_keys;
pub mod files;
pub mod mail;
pub mod payments;
pub mod tickets;

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `ms` since the Unix epoch as a protobuf timestamp.
pub fn timestamp(ms: u64) -> proto::Timestamp {
    proto::Timestamp {
        seconds: (ms / 1_000) as i64,
        nanos: ((ms % 1_000) * 1_000_000) as i32,
    }
}

/// Logs to stderr as `tracing` events, filtered by the environment variable `filter_env`
/// (`warn`, `info,adapters=debug`, ...), coloured only on a terminal.
pub fn init_logging(filter_env: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env(filter_env))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// A channel that turns true at SIGTERM or Ctrl-C: how every adapter is told to stop.
pub fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = stop_tx.send(true);
    });
    stop
}

/// Parses a `--kafka-property KEY=VALUE` flag.
pub fn kafka_property(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

/// Serves the process's Prometheus metrics on `listen` at `/metrics`; returns the bound address.
pub async fn serve_metrics(listen: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the metrics port {listen}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// How an adapter makes a topic it finds missing (`--topic-partitions`, `--topic-replication`):
/// as boxoffice would (`kafka.orders_topic_partitions`, `kafka.orders_topic_replication`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicShape {
    pub partitions: i32,
    pub replication: i32,
}

/// Makes sure each of `topics` exists, making it with `shape` if missing (retrying while the
/// cluster is not ready), then a consumer in `group` with the static member id `instance_id`,
/// subscribed to `subscribe`. `None` if `stop` turned true first.
pub async fn subscribed_consumer(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, String>,
    (group, instance_id): (&str, &str),
    (topics, shape): (&[&str], TopicShape),
    subscribe: &[&str],
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<kafka::rdkafka::consumer::StreamConsumer>> {
    use anyhow::Context;
    use kafka::rdkafka::consumer::Consumer;
    for topic in topics {
        let mut stop = stop.clone();
        while let Err(e) = kafka::ensure_topic(
            brokers,
            properties,
            topic,
            shape.partitions,
            shape.replication,
        )
        .await
        {
            tracing::warn!(error = %e, topic, "topic not ready; retrying");
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(None),
                () = tokio::time::sleep(kafka::RETRY_BACKOFF) => {}
            }
        }
    }
    // Static membership (`kafka::instance_id`): a restarted adapter takes its old place at once.
    let mut properties = properties.clone();
    properties.insert("group.instance.id".into(), instance_id.to_string());
    let consumer = kafka::consumer(brokers, group, &properties).context("consumer")?;
    consumer
        .subscribe(subscribe)
        .with_context(|| format!("subscribe to {}", subscribe.join(", ")))?;
    Ok(Some(consumer))
}

/// Binds `listen` and serves `routes` (one gRPC service: `Routes::new(service)`) from a task of
/// its own; the bound address. `what` names the service in errors.
pub async fn serve_grpc(
    listen: std::net::SocketAddr,
    routes: tonic::service::Routes,
    what: &'static str,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind the {what} port {listen}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        if let Err(e) = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "the {what} service stopped");
        }
    });
    Ok(addr)
}
