//! What the adapters' tests share: boxoffice serving in the test process on a real broker, and
//! requests with an API key.

use std::path::Path;
use std::time::Duration;

use testkit::Broker;
use tonic::Request;

/// The engine's development key: every role.
pub const KEY: &str = "boxoffice-dev-key";
/// How long boxoffice may take to start, and to stop.
pub const START_WITHIN: Duration = Duration::from_secs(60);
pub const STOP_WITHIN: Duration = Duration::from_secs(30);

/// boxoffice serving in this process, its files under `dir`, its relay and payment-result
/// consumer on `broker`.
pub async fn boxoffice(dir: &Path, broker: &Broker) -> server::serve::Running {
    let mut config = config::Config::default();
    config.storage.data_dir = dir.join("boxoffice");
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    config.kafka.brokers = broker.addr.clone();
    tokio::time::timeout(START_WITHIN, server::serve::start(&config))
        .await
        .unwrap_or_else(|_| panic!("boxoffice did not start within {START_WITHIN:?}"))
        .unwrap()
}

/// `server.stop()`, within `STOP_WITHIN`.
pub async fn stop_boxoffice(server: server::serve::Running) {
    tokio::time::timeout(STOP_WITHIN, server.stop())
        .await
        .unwrap_or_else(|_| panic!("boxoffice did not stop within {STOP_WITHIN:?}"))
        .unwrap();
}

/// `message` with `authorization: Bearer key` (none for an empty key).
pub fn keyed<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    if !key.is_empty() {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}
