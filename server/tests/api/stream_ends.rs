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
