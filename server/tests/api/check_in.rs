//! Check-in over gRPC against a real `boxoffice serve`: tickets issued by paying orders through
//! the payments topic of a real tansu broker, then scanned online and uploaded offline, with the
//! server SIGKILLed and restarted in between.

use std::collections::BTreeMap;

use proto::v1;
use proto::v1::check_in_client::CheckInClient;
use proto::v1::scan_result::Outcome;
use tonic::Code;
use tonic::transport::Channel;

use crate::order_events::Broker;
use crate::payments::{PAYMENTS, approved, confirmed_orders, order_until, send};
use crate::support::*;

struct Gate {
    client: CheckInClient<Channel>,
    clients: Clients,
    event: String,
}

impl Gate {
    async fn open(server: &Server, event: &str) -> Gate {
        Gate {
            client: CheckInClient::new(server.channel().await),
            clients: server.clients().await,
            event: event.to_string(),
        }
    }

    async fn scan(
        &mut self,
        token: &str,
        gate: &str,
        scan_id: &str,
    ) -> Result<v1::Admission, tonic::Status> {
        let req = self.clients.req(v1::CheckInRequest {
            event_id: self.event.clone(),
            token: token.into(),
            gate_id: gate.into(),
            scan_id: scan_id.into(),
        });
        Ok(self
            .client
            .check_in(req)
            .await?
            .into_inner()
            .admission
            .unwrap())
    }

    async fn leave(
        &mut self,
        token: &str,
        gate: &str,
        scan_id: &str,
    ) -> Result<v1::Exit, tonic::Status> {
        let req = self.clients.req(v1::CheckOutRequest {
            event_id: self.event.clone(),
            token: token.into(),
            gate_id: gate.into(),
            scan_id: scan_id.into(),
        });
        Ok(self.client.check_out(req).await?.into_inner().exit.unwrap())
    }

    async fn upload(&mut self, scans: &[(&str, &str, &str, i64)]) -> Vec<v1::ScanResult> {
        let req = self.clients.req(v1::UploadScansRequest {
            event_id: self.event.clone(),
            scans: scans
                .iter()
                .map(|(token, gate, scan_id, at)| v1::OfflineScan {
                    token: token.to_string(),
                    gate_id: gate.to_string(),
                    scan_id: scan_id.to_string(),
                    scanned_at: Some(prost_types::Timestamp {
                        seconds: *at,
                        nanos: 0,
                    }),
                })
                .collect(),
        });
        self.client
            .upload_scans(req)
            .await
            .unwrap()
            .into_inner()
            .results
    }

    async fn stats(&mut self) -> v1::GetCheckInStatsResponse {
        let req = self.clients.req(v1::GetCheckInStatsRequest {
            event_id: self.event.clone(),
        });
        self.client
            .get_check_in_stats(req)
            .await
            .unwrap()
            .into_inner()
    }
}

#[tokio::test]
async fn tickets_are_let_in_once_refused_when_forged_or_void_and_offline_scans_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let mut server = Server::start(
        &dir.path().join("data"),
        &[("BOXOFFICE_KAFKA__BROKERS", &broker.addr)],
    );
    let mut c = server.clients().await;
    let event = c.create(event_request(100, 4)).await.event_id;
    let other_event = c.create(event_request(100, 4)).await.event_id;
    let orders = confirmed_orders(&mut c, &event, 3).await;
    let others = confirmed_orders(&mut c, &other_event, 1).await;
    let tickets = pay(&mut c, &broker, orders.iter().chain(&others)).await;
    let token = |order: usize, n: usize| tickets[order][n].token.clone();

    let mut gate = Gate::open(&server, &event).await;
    let first = gate.scan(&token(0, 0), "north", "n-1").await.unwrap();
    assert_eq!(first.ticket_id, tickets[0][0].ticket_id);
    assert_eq!(
        (first.gate_id.as_str(), first.scan_id.as_str()),
        ("north", "n-1")
    );
    // The same scan retried: the same admission.
    assert_eq!(
        gate.scan(&token(0, 0), "north", "n-1").await.unwrap(),
        first
    );
    // Another scan of it: refused with the first admission.
    let again = gate.scan(&token(0, 0), "south", "s-1").await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "ALREADY_CHECKED_IN");
    assert_eq!(info(&again, "gate_id"), "north");
    assert_eq!(info(&again, "scan_id"), "n-1");
    assert!(info(&again, "checked_in_at").ends_with('Z'));

    // Two gates scanning one ticket at the same instant: one admission.
    let mut east = Gate::open(&server, &event).await;
    let mut west = Gate::open(&server, &event).await;
    let t01 = token(0, 1);
    let (a, b) = tokio::join!(
        east.scan(&t01, "east", "e-1"),
        west.scan(&t01, "west", "w-1")
    );
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    let refused = a.err().or(b.err()).unwrap();
    assert_eq!(reason(&refused), "ALREADY_CHECKED_IN");

    // Forged, truncated, re-signed, other-event and garbage tokens: INVALID_TICKET.
    let mut forged = token(1, 0);
    let flipped = if forged.ends_with('A') { 'B' } else { 'A' };
    forged.pop();
    forged.push(flipped);
    let truncated = token(1, 0)[..40].to_string();
    let other = others_token(&tickets);
    for (what, bad) in [
        ("forged", forged.as_str()),
        ("truncated", truncated.as_str()),
        ("other event", other.as_str()),
        ("not base64", "not a token!"),
        ("empty", ""),
    ] {
        let e = gate.scan(bad, "north", "bad").await.unwrap_err();
        assert_eq!(
            (e.code(), reason(&e).as_str()),
            (Code::InvalidArgument, "INVALID_TICKET"),
            "{what}"
        );
    }
    let e = gate.scan(&token(1, 0), "", "x").await.unwrap_err();
    assert_eq!(reason(&e), "INVALID_ARGUMENT");

    // A refunded order's ticket is refused at the gate.
    c.admin
        .refund_order(c.req(v1::RefundOrderRequest {
            event_id: event.clone(),
            order_id: orders[2].order_id.clone(),
            reason: "asked".into(),
            idempotency_key: String::new(),
        }))
        .await
        .unwrap();
    let void = gate.scan(&token(2, 0), "north", "v-1").await.unwrap_err();
    assert_eq!(
        (reason(&void).as_str(), info(&void, "status").as_str()),
        ("TICKET_VOID", "ORDER_STATUS_REFUNDED")
    );

    // Offline scans uploaded later: one lets a ticket in, one conflicts with an admission made
    // online, a bad one is refused alone; the upload sent again changes nothing.
    let t10 = token(1, 0);
    let t00 = token(0, 0);
    let upload = [
        (t10.as_str(), "gate-7", "off-1", 1_800_000_000),
        (t00.as_str(), "gate-7", "off-2", 1_800_000_001),
        ("garbage", "gate-7", "off-3", 1_800_000_002),
    ];
    let results = gate.upload(&upload).await;
    let outcomes: Vec<i32> = results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Admitted as i32,
            Outcome::Conflict as i32,
            Outcome::Refused as i32
        ]
    );
    assert_eq!(results[1].admission.as_ref().unwrap().scan_id, "n-1");
    assert_eq!(results[2].error.as_ref().unwrap().reason, "INVALID_TICKET");
    let results = gate.upload(&upload).await;
    let outcomes: Vec<i32> = results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Repeated as i32,
            Outcome::Repeated as i32,
            Outcome::Refused as i32
        ]
    );

    let stats = gate.stats().await;
    // 3 orders of 2 tickets, one refunded.
    assert_eq!(
        (stats.tickets_live, stats.admitted, stats.conflicts),
        (4, 3, 1)
    );
    let per_gate: Vec<(String, u64, u64)> = stats
        .gates
        .iter()
        .map(|g| (g.gate_id.clone(), g.admitted, g.conflicts))
        .collect();
    assert!(per_gate.contains(&("north".into(), 1, 0)), "{per_gate:?}");
    assert!(per_gate.contains(&("gate-7".into(), 1, 1)), "{per_gate:?}");
    let scans = server
        .metric(&format!(
            "boxoffice_check_in_scans_total{{event=\"{event}\",gate=\"gate-7\",outcome=\"conflict\"}}"
        ))
        .await;
    assert_eq!(scans, 1.0);

    // Killed and restarted: every admission is still there.
    server.kill();
    server.restart();
    let mut gate = Gate::open(&server, &event).await;
    assert_eq!(gate.stats().await, stats);
    let e = gate.scan(&t10, "north", "after-restart").await.unwrap_err();
    assert_eq!(reason(&e), "ALREADY_CHECKED_IN");
    assert_eq!(info(&e, "scan_id"), "off-1");
    gate.scan(&token(1, 1), "north", "n-2").await.unwrap();
}

#[tokio::test]
async fn a_ticket_leaves_and_comes_back_when_the_event_allows_reentry_also_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let mut server = Server::start(
        &dir.path().join("data"),
        &[("BOXOFFICE_KAFKA__BROKERS", &broker.addr)],
    );
    let mut c = server.clients().await;
    let festival = c
        .create(v1::CreateEventRequest {
            allow_reentry: true,
            ..event_request(100, 4)
        })
        .await;
    assert!(festival.allow_reentry);
    let event = festival.event_id;
    let concert = c.create(event_request(100, 4)).await.event_id;
    let orders = confirmed_orders(&mut c, &event, 1).await;
    let others = confirmed_orders(&mut c, &concert, 1).await;
    let tickets = pay(&mut c, &broker, orders.iter().chain(&others)).await;
    let t = tickets[0][0].token.clone();

    let mut gate = Gate::open(&server, &event).await;
    let e = gate.leave(&t, "north", "out-0").await.unwrap_err();
    assert_eq!(
        (reason(&e).as_str(), info(&e, "ticket_id")),
        ("NOT_CHECKED_IN", tickets[0][0].ticket_id.clone())
    );
    gate.scan(&t, "north", "in-1").await.unwrap();
    let exit = gate.leave(&t, "north", "out-1").await.unwrap();
    assert_eq!(
        (
            exit.ticket_id.as_str(),
            exit.gate_id.as_str(),
            exit.scan_id.as_str()
        ),
        (tickets[0][0].ticket_id.as_str(), "north", "out-1")
    );
    // Retried: the same exit. Left already: NOT_CHECKED_IN. An entry's scan id: SCAN_ID_TAKEN.
    assert_eq!(gate.leave(&t, "north", "out-1").await.unwrap(), exit);
    let e = gate.leave(&t, "south", "out-2").await.unwrap_err();
    assert_eq!(reason(&e), "NOT_CHECKED_IN");
    let e = gate.leave(&t, "north", "in-1").await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str(), info(&e, "scan_id").as_str()),
        (Code::FailedPrecondition, "SCAN_ID_TAKEN", "in-1")
    );
    // Back in at another gate, then refused while in.
    let back = gate.scan(&t, "south", "in-2").await.unwrap();
    assert_eq!(back.gate_id, "south");
    let e = gate.scan(&t, "east", "in-3").await.unwrap_err();
    assert_eq!(
        (reason(&e).as_str(), info(&e, "scan_id").as_str()),
        ("ALREADY_CHECKED_IN", "in-2")
    );
    let stats = gate.stats().await;
    assert_eq!((stats.admitted, stats.exits, stats.inside), (2, 1, 1));
    let exited = server
        .metric(&format!(
            "boxoffice_check_in_scans_total{{event=\"{event}\",gate=\"north\",outcome=\"exited\"}}"
        ))
        .await;
    assert_eq!(exited, 1.0);

    // An event without re-entry lets nobody out.
    let mut door = Gate::open(&server, &concert).await;
    let o = tickets[1][0].token.clone();
    door.scan(&o, "door", "in-1").await.unwrap();
    let e = door.leave(&o, "door", "out-1").await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "REENTRY_NOT_ALLOWED")
    );

    // Killed and restarted: who is in and out is still known.
    server.kill();
    server.restart();
    let mut gate = Gate::open(&server, &event).await;
    assert_eq!(gate.stats().await, stats);
    gate.leave(&t, "south", "out-3").await.unwrap();
    gate.scan(&t, "north", "in-4").await.unwrap();
    let stats = gate.stats().await;
    assert_eq!((stats.admitted, stats.exits, stats.inside), (3, 2, 1));
}

/// Pays `orders` through the payments topic; each one's tickets once it is paid.
async fn pay<'a>(
    c: &mut Clients,
    broker: &Broker,
    orders: impl Iterator<Item = &'a v1::Order> + Clone,
) -> Vec<Vec<v1::Ticket>> {
    kafka::ensure_topic(&broker.addr, &BTreeMap::new(), PAYMENTS, 6, 1)
        .await
        .unwrap();
    let producer = kafka::producer(&broker.addr, &BTreeMap::new(), 1).unwrap();
    for order in orders.clone() {
        send(&producer, &order.event_id, approved(order, "pay")).await;
    }
    let mut tickets = Vec::new();
    for order in orders {
        let paid = order_until(c, order, |o| o.status == v1::OrderStatus::Paid as i32).await;
        tickets.push(paid.tickets);
    }
    tickets
}

/// The token of the other event's order.
fn others_token(tickets: &[Vec<v1::Ticket>]) -> String {
    tickets.last().unwrap()[0].token.clone()
}
