//! Memory stays under its configured bounds while clients attack it: streams that never read
//! their answers, stalled seat listings, endless idempotency keys, events and holds past
//! `engine.max_state_mib`. The server's RSS and its own accounting are watched during each
//! attack, and it stays SERVING throughout.

use std::time::{Duration, Instant};

use proto::v1;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::raw::*;
use crate::support::*;

const MIB: u64 = 1 << 20;

/// Samples RSS and the answer buffer until `done` resolves; returns the peaks.
async fn watch<T>(server: &Server, done: impl std::future::Future<Output = T>) -> (T, u64, f64) {
    let mut done = std::pin::pin!(done);
    let (mut rss, mut buffered) = (0u64, 0f64);
    loop {
        rss = rss.max(server.rss_bytes());
        buffered = buffered.max(server.metric("boxoffice_answer_buffer_bytes").await);
        tokio::select! {
            value = &mut done => return (value, rss, buffered),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Waits until no answer bytes are charged: every charge came back.
async fn answer_buffer_given_back(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("boxoffice_answer_buffer_bytes").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the answer buffer was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn streams_that_never_read_their_answers_are_held_to_the_answer_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BOXOFFICE_API__MAX_ANSWER_BUFFER_MIB", "4"),
            ("BOXOFFICE_API__STREAM_STALL_TIMEOUT_MS", "4000"),
            ("BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_CUSTOMER", "1000000"),
        ],
    );
    let mut c = server.clients().await;
    let event = c.create(event_request(1_000, 1)).await.event_id;
    let before = server.rss_bytes();

    // 3 connections × 20 streams × 5,000 requests, none of whose answers is read past the first
    // 1 KiB window. Unbounded, this buffered about 2.4 MB per stream.
    let mut calls = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(server.grpc, 1024).await;
        for s in 0..20u64 {
            let mut call = raw.call(RESERVE_STREAM).await;
            let bytes: Vec<u8> = (0..5_000u64)
                .flat_map(|i| {
                    frame(&v1::ReserveStreamRequest {
                        request_id: i,
                        reserve: Some(ga(&event, &format!("slow-{s}-{i}"), 1, "")),
                    })
                })
                .collect();
            call.write(bytes, true).unwrap();
            calls.push(call);
        }
        connections.push(raw);
    }
    // While they stall, the server keeps serving others.
    let (_, rss, buffered) = watch(&server, async {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(server.health().await, ServingStatus::Serving);
        let (available, held, sold) = counts(&c.clone().tiers(&event).await, "GA");
        assert_eq!(available + held + sold, 1_000);
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    let limit = server.metric("boxoffice_answer_buffer_limit_bytes").await;
    println!("peaks: RSS {rss} B (from {before} B), answers buffered {buffered} B");
    assert_eq!(limit, (4 * MIB) as f64);
    assert!(
        buffered > 0.0,
        "the attack buffered nothing: it did not run"
    );
    assert!(
        buffered <= limit,
        "{buffered} buffered over the limit {limit}"
    );
    assert!(
        rss < before + 64 * MIB,
        "RSS grew from {before} to {rss} bytes"
    );

    // Past the stall timeout a stream whose answer queue stayed full ends SLOW_READER, its
    // waiting answers dropped and their budget given back. One that was still waiting for budget
    // when its client began to read is answered in full and ends OK; none ends OK short.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut slow = 0;
    for call in calls {
        let (answers, status) = call.finish::<v1::ReserveStreamResponse>().await;
        match status.code() {
            Code::Ok => assert_eq!(answers.len(), 5_000, "OK with requests unanswered"),
            _ => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "SLOW_READER", "{status:?}");
                assert!(answers.len() < 5_000, "SLOW_READER after every answer");
                slow += 1;
            }
        }
    }
    assert!(slow > 0, "no stream was ended as a slow reader");
    answer_buffer_given_back(&server).await;
    // Nothing was sold twice while streams were dropped.
    let (available, held, sold) = counts(&c.tiers(&event).await, "GA");
    assert_eq!(available + held + sold, 1_000);
    assert_eq!(server.health().await, ServingStatus::Serving);
}

#[tokio::test]
async fn stalled_seat_listings_are_refused_past_the_answer_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[("BOXOFFICE_API__MAX_ANSWER_BUFFER_MIB", "16")],
    );
    let mut c = server.clients().await;
    // 2 rows of 10,000 seats: a listing of some MB.
    let event = c.create(event_request(10, 10_000)).await.event_id;
    let before = server.rss_bytes();

    let listing = frame(&v1::GetAvailabilityRequest {
        event_id: event.clone(),
        include_seats: true,
        ..Default::default()
    });
    let mut connections = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut raw = Raw::connect(server.grpc, 1024).await;
        for _ in 0..25 {
            let mut call = raw.call(GET_AVAILABILITY).await;
            call.write(listing.clone(), true).unwrap();
            calls.push(call);
        }
        connections.push(raw);
    }
    // Each call either is refused at once, OVERLOADED, or waits for its reader with its charge.
    let ((refused, waiting), rss, buffered) = watch(&server, async {
        let (mut refused, mut waiting) = (0, Vec::new());
        for mut call in calls {
            match tokio::time::timeout(Duration::from_millis(500), call.read()).await {
                Ok(None) => {
                    let (_, status) = call.finish::<v1::GetAvailabilityResponse>().await;
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    assert_eq!(reason(&status), "OVERLOADED", "{status:?}");
                    refused += 1;
                }
                // The first window of a listing, or nothing yet: a stalled answer.
                Ok(Some(_)) | Err(_) => waiting.push(call),
            }
        }
        assert_eq!(server.health().await, ServingStatus::Serving);
        (refused, waiting)
    })
    .await;
    let limit = server.metric("boxoffice_answer_buffer_limit_bytes").await;
    println!(
        "{refused} refused, {} waiting; peaks: RSS {rss} B (from {before} B), answers buffered \
         {buffered} B",
        waiting.len()
    );
    assert!(refused > 0, "every stalled listing was taken on");
    assert!(!waiting.is_empty(), "no listing was taken on");
    assert!(
        buffered <= limit,
        "{buffered} buffered over the limit {limit}"
    );
    assert!(
        rss < before + 16 * MIB + 64 * MIB,
        "RSS grew from {before} to {rss} bytes"
    );

    // Once the stalled readers go, their budget comes back and listings are served again.
    drop(waiting);
    drop(connections);
    answer_buffer_given_back(&server).await;
    let req = c.req(v1::GetAvailabilityRequest {
        event_id: event,
        include_seats: true,
        ..Default::default()
    });
    let seats = c
        .availability
        .get_availability(req)
        .await
        .expect("a listing once the budget is back")
        .into_inner()
        .seats
        .len();
    assert_eq!(seats, 20_000);
}

#[tokio::test]
async fn idempotency_keys_are_kept_up_to_their_count_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        &[("BOXOFFICE_IDEMPOTENCY__MAX_KEYS_PER_EVENT", "1000")],
    );
    let mut c = server.clients().await;
    let event = c.create(event_request(10_000, 1)).await.event_id;
    let key = |i: u32| format!("cart-{i}");
    let mut first = Vec::new();
    for i in 0..3_000 {
        let hold = c.reserve(ga(&event, &format!("k{i}"), 1, &key(i))).await;
        first.push(hold.expect("a hold").hold_id);
    }
    // The newest 1,000 keys repeat their hold, also after a restart; the oldest are forgotten.
    server.kill();
    server.restart();
    let mut c = server.clients().await;
    for i in [2_000, 2_500, 2_999] {
        let again = c.reserve(ga(&event, &format!("k{i}"), 1, &key(i))).await;
        assert_eq!(again.unwrap().hold_id, first[i as usize], "key {i}");
    }
    let again = c.reserve(ga(&event, "k0", 1, &key(0))).await.unwrap();
    assert_ne!(again.hold_id, first[0], "a key past the count was kept");
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (6_999, 3_001, 0));
}

#[tokio::test]
async fn events_and_holds_past_the_state_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BOXOFFICE_ENGINE__MAX_STATE_MIB", "16"),
            ("BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_CUSTOMER", "1000000"),
        ],
    );
    let mut c = server.clients().await;
    let limit = server.metric("boxoffice_state_memory_limit_bytes").await;
    assert_eq!(limit, (16 * MIB) as f64);

    // An event of 50,000 tickets, whose tables are sized for them up front (about 11 MB).
    let event = c.create(event_request(50_000, 1)).await.event_id;
    // Keyed holds until they are refused; a refused request changes nothing.
    let mut held = 0u32;
    let status = loop {
        let key = format!("mem-{held}");
        match c.reserve(ga(&event, &format!("m{held}"), 1, &key)).await {
            Ok(_) => held += 1,
            Err(status) => break status,
        }
        assert!(held < 50_000, "holds never reached the limit");
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "MEMORY_LIMIT", "{status:?}");
    assert_eq!(info(&status, "limit_mib"), "16");
    assert!(held > 1_000, "only {held} holds fit");
    let used = server.metric("boxoffice_state_memory_bytes").await;
    assert!(
        used <= limit + MIB as f64,
        "{used} accounted over the limit {limit}"
    );
    assert_eq!(
        counts(&c.tiers(&event).await, "GA"),
        (50_000 - held, held, 0)
    );
    // A retried key still gets its hold.
    let again = c.reserve(ga(&event, "m0", 1, "mem-0")).await;
    assert!(again.is_ok(), "{again:?}");
    assert_eq!(
        counts(&c.tiers(&event).await, "GA"),
        (50_000 - held, held, 0)
    );

    // A new event of 20,000 seats (about 8 MB) does not fit either.
    let req = c.req(event_request(10, 10_000));
    let refused = c
        .admin
        .create_event(req)
        .await
        .expect_err("an event past the limit");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "MEMORY_LIMIT", "{refused:?}");
    assert_eq!(server.health().await, ServingStatus::Serving);
}
