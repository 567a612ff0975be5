//! Connections that hold the server without asking anything of it: more than
//! `api.max_connections`, silent after connecting, dead without a word, or with a huge header
//! list. Each is bounded or closed, and the server keeps answering everyone else.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::Code;

use crate::support::*;

const MAX: usize = 20;

fn limited() -> [(&'static str, &'static str); 4] {
    [
        ("BOXOFFICE_API__MAX_CONNECTIONS", "20"),
        ("BOXOFFICE_API__HANDSHAKE_TIMEOUT_MS", "1000"),
        ("BOXOFFICE_API__KEEPALIVE_INTERVAL_MS", "300"),
        ("BOXOFFICE_API__KEEPALIVE_TIMEOUT_MS", "300"),
    ]
}

/// One availability call on a new connection.
async fn call_on_new_connection(server: &Server) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut c = Clients::new(channel, DEV_KEY);
    let req = c.req(proto::v1::ListEventsRequest::default());
    c.admin.list_events(req).await.map(drop)
}

/// Waits until `socket` is closed by the server; how long that took.
async fn closed_within(socket: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut byte = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, socket.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue, // the server's preface or settings
            Err(_) => panic!("the server kept the connection for {within:?}"),
        }
    }
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_silent_ones_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &limited());
    assert_eq!(server.metric("boxoffice_connections_open").await, 0.0);

    // Every slot taken by a connection that says nothing.
    let mut silent = Vec::new();
    for _ in 0..MAX {
        silent.push(TcpStream::connect(server.grpc).await.unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("boxoffice_connections_open").await != MAX as f64 {
        assert!(
            Instant::now() < deadline,
            "the silent connections were not all counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more is closed at once: the caller's connection ends (tonic reports it as Unknown,
    // Unavailable or Cancelled, by when it noticed), and the server counts it.
    let refused = call_on_new_connection(&server).await.unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Code::Unknown | Code::Unavailable | Code::Cancelled
        ),
        "{refused:?}"
    );
    assert!(server.metric("boxoffice_connections_refused_total").await >= 1.0);

    // The silent ones are closed after api.handshake_timeout_ms, and calls get through again.
    for socket in &mut silent {
        let took = closed_within(socket, Duration::from_secs(10)).await;
        assert!(took < Duration::from_secs(10));
    }
    assert_eq!(
        server.metric("boxoffice_connections_timed_out_total").await,
        MAX as f64
    );
    call_on_new_connection(&server).await.unwrap();
    assert_eq!(
        server.health().await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &limited());
    // An HTTP/2 client whose connection is never driven after the handshake: the server's pings
    // go unanswered, as from a peer that vanished.
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let (send, mut connection) = h2::client::handshake(tcp).await.unwrap();
    // Drive it just long enough for the server to see the settings acknowledged.
    let _ = tokio::time::timeout(Duration::from_millis(100), &mut connection).await;
    assert_eq!(server.metric("boxoffice_connections_open").await, 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("boxoffice_connections_open").await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "a peer that answers no ping still holds its connection after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop((send, connection));
}

#[tokio::test]
async fn a_header_list_past_the_limit_is_refused_and_the_server_answers_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.clients().await;
    // An authorization header of 64 KiB, four times api.max_header_list_bytes.
    let mut req = tonic::Request::new(proto::v1::ListEventsRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", "k".repeat(64 << 10)).parse().unwrap(),
    );
    let refused = c.admin.list_events(req).await.unwrap_err();
    assert_ne!(refused.code(), Code::Ok);
    assert_ne!(
        refused.code(),
        Code::Unauthenticated,
        "the header reached the service"
    );
    // Other calls, on this connection or a new one, are answered.
    let mut c = server.clients().await;
    let req = c.req(proto::v1::ListEventsRequest::default());
    c.admin.list_events(req).await.unwrap();
    assert_eq!(
        server.health().await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}
