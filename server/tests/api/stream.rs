//! ReserveStream: many reservations over one call, each answer tagged with its request id.

use std::collections::HashMap;

use futures_util::StreamExt;
use proto::v1;
use proto::v1::reserve_stream_response::Result as Answer;

use crate::support::*;

#[tokio::test]
async fn a_stream_answers_every_request_once_and_never_oversells() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            ("BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_CUSTOMER", "100000"),
            ("BOXOFFICE_API__MAX_STREAM_IN_FLIGHT", "64"),
        ],
    );
    let mut c = server.clients().await;
    let first = c.create(event_request(3_000, 1)).await.event_id;
    let second = c.create(event_request(500, 1)).await.event_id;

    // 5,000 requests over two events, a few malformed; more than the read-ahead of 64, so the
    // server must pace itself by its answers.
    let total = 5_000u64;
    let requests: Vec<v1::ReserveStreamRequest> = (0..total)
        .map(|i| {
            let event = if i % 4 == 0 { &second } else { &first };
            let mut reserve = ga(event, &format!("s{}", i % 300), 1, "");
            if i % 1_000 == 7 {
                reserve.items.clear();
            }
            v1::ReserveStreamRequest {
                request_id: i,
                reserve: Some(reserve),
            }
        })
        .collect();
    let req = c.req(tokio_stream::iter(requests));
    let mut answers = c
        .reservations
        .reserve_stream(req)
        .await
        .unwrap()
        .into_inner();
    let mut seen: HashMap<u64, Answer> = HashMap::new();
    while let Some(answer) = answers.next().await {
        let answer = answer.expect("stream item");
        let result = answer.result.expect("a hold or an error");
        assert!(
            seen.insert(answer.request_id, result).is_none(),
            "answered twice"
        );
    }
    assert_eq!(seen.len() as u64, total, "every request is answered");
    let mut held: HashMap<bool, u32> = HashMap::new();
    for (id, result) in &seen {
        match result {
            Answer::Hold(hold) => {
                let event = if id % 4 == 0 { &second } else { &first };
                assert_eq!(&hold.event_id, event);
                *held.entry(id % 4 == 0).or_default() += 1;
            }
            Answer::Error(e) if id % 1_000 == 7 => {
                assert_eq!(e.reason, "INVALID_ARGUMENT");
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
            }
            Answer::Error(e) => assert_eq!(e.reason, "SOLD_OUT", "request {id}: {e:?}"),
        }
    }
    let held_second = held.get(&true).copied().unwrap_or(0);
    let held_first = held.get(&false).copied().unwrap_or(0);
    // 3,750 asks for 3,000 in the first event, 1,250 for 500 in the second (5 malformed).
    assert_eq!(held_first, 3_000);
    assert_eq!(held_second, 500);
    assert_eq!(counts(&c.tiers(&first).await, "GA"), (0, 3_000, 0));
    assert_eq!(counts(&c.tiers(&second).await, "GA"), (0, 500, 0));
}
