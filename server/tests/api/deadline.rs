//! A deadline set by the client is honoured: the server gives up on the call when it passes. The
//! server's answer is tonic's, CANCELLED "Timeout expired"; clients that enforce their own
//! deadline report DEADLINE_EXCEEDED.

use std::time::{Duration, Instant};

use proto::v1;
use tonic::Code;

use crate::support::*;

#[tokio::test]
async fn a_call_past_its_deadline_is_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut c = server.clients().await;
    // 200,000 seats: listing them all takes the server far longer than 1 ms.
    let mut spec = event_request(10, 1);
    spec.tiers[1].stock = Some(v1::tier::Stock::SeatMap(v1::SeatMap {
        sections: vec![v1::Section {
            name: "Stalls".into(),
            rows: (0..200)
                .map(|r| v1::Row {
                    name: format!("R{r}"),
                    seats: (0..1_000).map(|n| n.to_string()).collect(),
                })
                .collect(),
        }],
    }));
    let id = c.create(spec).await.event_id;

    let mut req = c.req(v1::GetAvailabilityRequest {
        event_id: id.clone(),
        include_seats: true,
        seats_tier_code: String::new(),
    });
    req.set_timeout(Duration::from_millis(1));
    let started = Instant::now();
    let status = c
        .availability
        .get_availability(req)
        .await
        .expect_err("the deadline passes long before 200,000 seats are listed");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    println!("refused after {:?}", started.elapsed());

    // Without a deadline the same call completes, and the server is fine.
    let req = c.req(v1::GetAvailabilityRequest {
        event_id: id,
        include_seats: true,
        seats_tier_code: String::new(),
    });
    // About 6 MB: over gRPC's customary 4 MiB default, so this client takes more.
    let mut big = c.availability.clone().max_decoding_message_size(16 << 20);
    let all = big.get_availability(req).await.unwrap().into_inner();
    assert_eq!(all.seats.len(), 200_000);
}
