//! How a ReserveStream ends when the client or the server stops it early, through raw HTTP/2
//! frames: a stream never ends OK while a request it carried went unanswered; every request read
//! gets its answer; the status names the cause and how many requests were read.

use std::time::Duration;

use proto::v1;
use proto::v1::reserve_stream_response::Result as Answer;
use tonic::Code;

use crate::raw::*;
use crate::support::*;

fn request(event: &str, id: u64) -> v1::ReserveStreamRequest {
    v1::ReserveStreamRequest {
        request_id: id,
        reserve: Some(ga(event, &format!("raw-{id}"), 1, "")),
    }
}

/// Frames of requests `ids`, written together.
fn frames(event: &str, ids: std::ops::Range<u64>) -> Vec<u8> {
    ids.flat_map(|id| frame(&request(event, id))).collect()
}

/// A frame whose message does not decode: field 2 claims 127 bytes, one follows.
fn malformed_frame() -> Vec<u8> {
    framed(&[0x12, 0x7f, 0x01])
}

#[track_caller]
fn assert_held(answers: &[v1::ReserveStreamResponse], ids: std::ops::Range<u64>) {
    let mut got: Vec<u64> = answers
        .iter()
        .map(|a| {
            assert!(
                matches!(a.result, Some(Answer::Hold(_))),
                "request {}: {:?}",
                a.request_id,
                a.result
            );
            a.request_id
        })
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        ids.collect::<Vec<_>>(),
        "every request read is answered once"
    );
}

#[track_caller]
fn assert_ended(status: &tonic::Status, code: Code, why: &str, read: u64) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(status), why, "{status:?}");
    assert_eq!(
        info(status, "requests_read"),
        read.to_string(),
        "{status:?}"
    );
    assert!(status.message().len() <= 512, "{status:?}");
}

#[tokio::test]
async fn a_malformed_frame_ends_the_stream_with_its_cause_after_answering_what_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.clients().await;
    let event = c.create(event_request(100, 1)).await.event_id;
    let mut raw = Raw::connect(server.grpc, 1 << 20).await;

    // Five requests and a malformed frame in one DATA frame, the stream left open.
    let mut call = raw.call(RESERVE_STREAM).await;
    let mut bytes = frames(&event, 0..5);
    bytes.extend(malformed_frame());
    call.write(bytes, false).unwrap();
    let (answers, status) = call.finish::<v1::ReserveStreamResponse>().await;
    assert_held(&answers, 0..5);
    assert_ended(&status, Code::InvalidArgument, "MALFORMED_STREAM", 5);
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (95, 5, 0));

    // The same, half-closed in the same frame.
    let mut call = raw.call(RESERVE_STREAM).await;
    let mut bytes = frames(&event, 10..15);
    bytes.extend(malformed_frame());
    call.write(bytes, true).unwrap();
    let (answers, status) = call.finish::<v1::ReserveStreamResponse>().await;
    assert_held(&answers, 10..15);
    assert_ended(&status, Code::InvalidArgument, "MALFORMED_STREAM", 5);
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (90, 10, 0));

    // Two requests answered, then a malformed frame, then three more in later writes: the later
    // ones are not read, and the status says so.
    let mut call = raw.call(RESERVE_STREAM).await;
    call.write(frames(&event, 20..22), false).unwrap();
    let mut early = Vec::new();
    for _ in 0..2 {
        let message = call.read().await.expect("an answer");
        early.push(prost::Message::decode(message).unwrap());
    }
    call.write(malformed_frame(), false).unwrap();
    for id in 22..25 {
        // The server may already have ended the call; then the write fails, as it should.
        let _ = call.write(frames(&event, id..id + 1), id == 24);
    }
    let (late, status) = call.finish::<v1::ReserveStreamResponse>().await;
    assert!(late.is_empty(), "answers after a malformed frame: {late:?}");
    assert_held(&early, 20..22);
    assert_ended(&status, Code::InvalidArgument, "MALFORMED_STREAM", 2);
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (88, 12, 0));

    // A frame that claims more than the largest request there can be.
    let mut call = raw.call(RESERVE_STREAM).await;
    let mut bytes = frames(&event, 30..33);
    bytes.extend([0, 0x10, 0, 0, 0]);
    call.write(bytes, false).unwrap();
    let (answers, status) = call.finish::<v1::ReserveStreamResponse>().await;
    assert_held(&answers, 30..33);
    assert_ended(&status, Code::OutOfRange, "MALFORMED_STREAM", 3);
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (85, 15, 0));

    // And a stream that is well formed ends OK, every request answered.
    let mut call = raw.call(RESERVE_STREAM).await;
    call.write(frames(&event, 40..45), true).unwrap();
    let (answers, status) = call.finish::<v1::ReserveStreamResponse>().await;
    assert_held(&answers, 40..45);
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (80, 20, 0));
}

#[tokio::test]
async fn a_stream_open_at_shutdown_ends_shutting_down_with_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.clients().await;
    let event = c.create(event_request(100, 1)).await.event_id;
    let mut raw = Raw::connect(server.grpc, 1 << 20).await;

    let mut call = raw.call(RESERVE_STREAM).await;
    call.write(frames(&event, 0..3), false).unwrap();
    let mut answers: Vec<v1::ReserveStreamResponse> = Vec::new();
    for _ in 0..3 {
        let message = call.read().await.expect("an answer");
        answers.push(prost::Message::decode(message).unwrap());
    }
    // The stream stays open, as a storefront's does between shoppers, when the server stops.
    let ((), (rest, status)) = tokio::join!(
        server.stop(Duration::from_secs(30)),
        call.finish::<v1::ReserveStreamResponse>()
    );
    assert!(rest.is_empty(), "{rest:?}");
    assert_held(&answers, 0..3);
    assert_ended(&status, Code::Unavailable, "SHUTTING_DOWN", 3);

    // What was answered was kept.
    server.restart();
    let mut c = server.clients().await;
    assert_eq!(counts(&c.tiers(&event).await, "GA"), (97, 3, 0));
}

/// A client that half-closes and then takes its answers too slowly: the stream must not end OK
/// short of answers.
#[tokio::test]
async fn a_half_closed_stream_whose_answers_are_not_taken_ends_slow_reader() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BOXOFFICE_API__MAX_STREAM_IN_FLIGHT", "1000"),
            ("BOXOFFICE_API__STREAM_STALL_TIMEOUT_MS", "500"),
            ("BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_CUSTOMER", "100000"),
        ],
    );
    let mut c = server.clients().await;
    let event = c.create(event_request(10_000, 1)).await.event_id;
    // A one-byte window: the server can send almost nothing until this client reads.
    let mut raw = Raw::connect(server.grpc, 1).await;
    let mut call = raw.call(RESERVE_STREAM).await;
    call.write(frames(&event, 0..1_500), true).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (answers, status) = call.finish::<v1::ReserveStreamResponse>().await;
    assert!(answers.len() < 1_500, "every answer was taken: {status:?}");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "SLOW_READER", "{status:?}");
    // The requests read were decided: their holds are there.
    let (_, held, _) = counts(&c.tiers(&event).await, "GA");
    assert!(
        held as usize >= answers.len(),
        "{held} held, {} answered",
        answers.len()
    );
}

/// A client that goes away gives back its stream and its share of the answer budget at once.
#[tokio::test]
async fn a_client_that_goes_away_gives_back_its_stream_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BOXOFFICE_API__MAX_RESERVE_STREAMS", "1"),
            ("BOXOFFICE_API__STREAM_STALL_TIMEOUT_MS", "600000"),
            ("BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_CUSTOMER", "100000"),
        ],
    );
    let mut c = server.clients().await;
    let event = c.create(event_request(100_000, 1)).await.event_id;
    let mut raw = Raw::connect(server.grpc, 1).await;
    let mut call = raw.call(RESERVE_STREAM).await;
    call.write(frames(&event, 0..5_000), false).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(call);
    drop(raw);
    // The one stream allowed is free again well before the ten-minute stall timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut raw = Raw::connect(server.grpc, 1 << 20).await;
        let mut call = raw.call(RESERVE_STREAM).await;
        call.write(frames(&event, 100_000..100_001), true).unwrap();
        let (answers, status) = call.finish::<v1::ReserveStreamResponse>().await;
        if status.code() == Code::Ok {
            assert_eq!(answers.len(), 1);
            break;
        }
        assert_eq!(reason(&status), "OVERLOADED", "{status:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "the stream slot was not given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
