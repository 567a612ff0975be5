//! gRPC health checking and server reflection, as `grpcurl`-style tools use them.

use futures_util::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::*;

#[tokio::test]
async fn health_is_serving_and_reflection_lists_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let channel = server.channel().await;

    let mut health = HealthClient::new(channel.clone());
    for service in [
        "",
        "boxoffice.v1.EventAdmin",
        "boxoffice.v1.Reservations",
        "boxoffice.v1.Availability",
    ] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let symbol = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "boxoffice.v1.Reservations".into(),
        )),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([list, symbol]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(services)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = services.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "boxoffice.v1.EventAdmin",
        "boxoffice.v1.Reservations",
        "boxoffice.v1.Availability",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("no file for boxoffice.v1.Reservations");
    };
    assert!(!files.file_descriptor_proto.is_empty());

    server.stop(std::time::Duration::from_secs(30)).await;
}
