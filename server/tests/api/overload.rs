//! Far more concurrent requests than the admission bound: some are told OVERLOADED at once, the
//! admitted ones are answered (no timeouts), nothing is oversold, and the server stays healthy.

use std::collections::HashSet;

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::support::*;

#[tokio::test]
async fn overload_is_refused_fast_and_nothing_is_oversold() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BOXOFFICE_ENGINE__MAX_IN_FLIGHT_PER_EVENT", "8"),
            ("BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_CUSTOMER", "100000"),
        ],
    );
    let mut admin = server.clients().await;
    let capacity = 1_500u32;
    let id = admin.create(event_request(capacity, 1)).await.event_id;

    // 4 connections, 4,000 concurrent calls of 1 ticket each.
    let mut connections = Vec::new();
    for _ in 0..4 {
        connections.push(server.clients().await);
    }
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..4_000u32 {
        let mut c = connections[i as usize % 4].clone();
        let id = id.clone();
        calls.spawn(async move { c.reserve(ga(&id, &format!("c{}", i % 500), 1, "")).await });
    }
    let (mut held, mut overloaded, mut sold_out) = (0u32, 0u32, 0u32);
    let mut hold_ids = HashSet::new();
    while let Some(result) = calls.join_next().await {
        match result.unwrap() {
            Ok(hold) => {
                held += 1;
                assert!(hold_ids.insert(hold.hold_id));
            }
            Err(status) => match reason(&status).as_str() {
                "OVERLOADED" => {
                    assert_eq!(status.code(), Code::ResourceExhausted);
                    let retry = status.get_error_details().retry_info().cloned();
                    assert!(retry.and_then(|r| r.retry_delay).is_some(), "{status:?}");
                    overloaded += 1;
                }
                "SOLD_OUT" => sold_out += 1,
                other => panic!("unexpected refusal {other}: {status:?}"),
            },
        }
    }
    println!("held {held}, overloaded {overloaded}, sold out {sold_out}");
    assert!(
        overloaded > 0,
        "4,000 calls against a bound of 8 must overload"
    );
    assert!(held > 0);
    assert!(held <= capacity);
    assert_eq!(held + overloaded + sold_out, 4_000);
    let tiers = admin.tiers(&id).await;
    assert_eq!(counts(&tiers, "GA"), (capacity - held, held, 0));

    let mut health = HealthClient::new(server.channel().await);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status, ServingStatus::Serving as i32);
}
