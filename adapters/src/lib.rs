//! boxoffice's adapters: services that act on the order events boxoffice publishes on Kafka and
//! report back over Kafka, each with durable state of its own. They never read or write the
//! engine's files. `payments` is the payment adapter (the `boxoffice-payments` binary).

pub mod payments;

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
