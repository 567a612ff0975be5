//! Tests of check-in on the pure inventory: tickets issued with the real keys, scanned online and
//! uploaded offline, replayed from the log and restored from a snapshot.

use super::payment_tests::{approved, issuer, two_orders_of};
use super::tests::{T0, limits, oid, spec};
use super::*;

/// The two orders of `two_orders`, paid: four tickets; and the log that made them.
fn paid() -> (Inventory, Vec<Record>, Vec<Ticket>) {
    paid_of(spec())
}

/// `paid`, of an event that allows re-entry.
fn paid_with_reentry() -> (Inventory, Vec<Record>, Vec<Ticket>) {
    paid_of(EventSpec {
        allow_reentry: true,
        ..spec()
    })
}

fn paid_of(spec: EventSpec) -> (Inventory, Vec<Record>, Vec<Ticket>) {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer(&dir);
    let (mut inv, mut log) = two_orders_of(spec);
    let mut tickets = Vec::new();
    for (order, amount) in [(oid(1), 5_300), (oid(2), 8_400)] {
        let d = inv
            .settle_payment(&approved(order, "p", amount), T0, &limits(), &mut issuer)
            .unwrap();
        log.extend(d.record);
        tickets.extend(d.answer.1.tickets);
    }
    (inv, log, tickets)
}

fn scan(ticket: &Ticket, gate: &str, scan_id: &str) -> Scan {
    Scan {
        ticket_id: ticket.id,
        token: ticket.token.clone(),
        gate: gate.into(),
        scan_id: scan_id.into(),
    }
}

#[test]
fn a_ticket_is_let_in_once_and_a_retried_scan_repeats_its_admission() {
    let (mut inv, _, tickets) = paid();
    let first = inv
        .check_in(&scan(&tickets[0], "north", "s1"), T0 + 5)
        .unwrap();
    assert!(matches!(first.record, Some(Record::ScansRecorded { .. })));
    let (admission, made) = first.answer;
    assert!(made);
    assert_eq!(
        (
            admission.gate.as_str(),
            admission.scan_id.as_str(),
            admission.at_ms
        ),
        ("north", "s1", T0 + 5)
    );
    // The same scan again: the same admission, nothing recorded.
    let retry = inv
        .check_in(&scan(&tickets[0], "north", "s1"), T0 + 9)
        .unwrap();
    assert!(retry.record.is_none());
    assert_eq!(retry.answer, (admission, false));
    // The same scan id at another gate is another scan: refused.
    assert!(matches!(
        inv.check_in(&scan(&tickets[0], "east", "s1"), T0 + 9),
        Err(Rejection::AlreadyCheckedIn { .. })
    ));
    // Another scan, at another gate: refused with the first admission.
    assert_eq!(
        inv.check_in(&scan(&tickets[0], "south", "s2"), T0 + 10)
            .unwrap_err(),
        Rejection::AlreadyCheckedIn {
            ticket: tickets[0].id,
            gate: "north".into(),
            scan_id: "s1".into(),
            at_ms: T0 + 5,
        }
    );
    inv.check_in(&scan(&tickets[1], "south", "s3"), T0 + 11)
        .unwrap();
    let stats = inv.check_in_stats();
    assert_eq!(
        (stats.tickets_live, stats.admitted, stats.conflicts),
        (4, 2, 0)
    );
    assert_eq!(
        stats.gates,
        vec![
            GateCounts {
                gate: "north".into(),
                admitted: 1,
                conflicts: 0,
                exits: 0,
            },
            GateCounts {
                gate: "south".into(),
                admitted: 1,
                conflicts: 0,
                exits: 0,
            }
        ]
    );
    inv.audit();
}

#[test]
fn forged_swapped_and_void_tickets_are_refused_and_change_nothing() {
    let (mut inv, _, tickets) = paid();
    let before = inv.check_in_stats();
    let mut forged = scan(&tickets[0], "north", "s1");
    let last = forged.token.pop().unwrap();
    forged.token.push(if last == 'A' { 'B' } else { 'A' });
    let mut swapped = scan(&tickets[0], "north", "s2");
    swapped.token = tickets[1].token.clone();
    let mut unknown = scan(&tickets[0], "north", "s3");
    unknown.ticket_id = TicketId(uuid::Uuid::from_u128(999));
    for bad in [&forged, &swapped] {
        assert_eq!(
            inv.check_in(bad, T0).unwrap_err(),
            Rejection::InvalidTicket(tickets[0].id)
        );
    }
    assert_eq!(
        inv.check_in(&unknown, T0).unwrap_err(),
        Rejection::InvalidTicket(unknown.ticket_id)
    );
    for (gate, scan_id) in [("", "s4"), ("north", ""), ("no\nrth", "s4")] {
        assert!(matches!(
            inv.check_in(&scan(&tickets[0], gate, scan_id), T0),
            Err(Rejection::Invalid(_))
        ));
    }
    // A refunded order's tickets are void.
    inv.refund_order(
        &RefundOrderRequest {
            order_id: oid(1),
            reason: "asked".into(),
            idempotency_key: None,
        },
        T0,
        &limits(),
    )
    .unwrap();
    assert_eq!(
        inv.check_in(&scan(&tickets[0], "north", "s5"), T0)
            .unwrap_err(),
        Rejection::TicketVoid {
            ticket: tickets[0].id,
            status: OrderStatus::Refunded
        }
    );
    let after = inv.check_in_stats();
    assert_eq!(
        (after.admitted, after.gates),
        (before.admitted, before.gates)
    );
    inv.audit();
}

#[test]
fn uploaded_offline_scans_admit_or_conflict_once_and_a_repeated_upload_changes_nothing() {
    let (mut inv, _, tickets) = paid();
    inv.check_in(&scan(&tickets[0], "north", "online-1"), T0 + 100)
        .unwrap();
    let upload = vec![
        // Already in by the online scan: a conflict.
        (scan(&tickets[0], "east", "off-1"), T0 + 50),
        // In by this upload, then scanned again in the same upload: a conflict.
        (scan(&tickets[1], "east", "off-2"), T0 + 60),
        (scan(&tickets[1], "west", "off-3"), T0 + 70),
        // A scan time in the future is taken as now.
        (scan(&tickets[2], "east", "off-4"), T0 + 1_000_000),
    ];
    let d = inv.upload_scans(&upload, T0 + 200).unwrap();
    let Some(Record::ScansRecorded { scans }) = &d.record else {
        panic!("{:?}", d.record)
    };
    assert_eq!(scans.len(), 4);
    let outcomes: Vec<ScanOutcome> = d.answer.into_iter().map(Result::unwrap).collect();
    assert!(matches!(&outcomes[0], ScanOutcome::Conflict { first } if first.scan_id == "online-1"));
    assert!(matches!(&outcomes[1], ScanOutcome::Admitted(a) if a.at_ms == T0 + 60));
    assert!(matches!(&outcomes[2], ScanOutcome::Conflict { first } if first.scan_id == "off-2"));
    assert!(matches!(&outcomes[3], ScanOutcome::Admitted(a) if a.at_ms == T0 + 200));
    let stats = inv.check_in_stats();
    assert_eq!((stats.admitted, stats.conflicts), (3, 2));

    // The same upload again (its answer was lost): every scan a repeat, nothing recorded.
    let again = inv.upload_scans(&upload, T0 + 300).unwrap();
    assert!(again.record.is_none());
    let repeats: Vec<bool> = again
        .answer
        .into_iter()
        .map(|a| match a.unwrap() {
            ScanOutcome::Repeated { admitted, .. } => admitted,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(repeats, vec![false, true, false, true]);
    assert_eq!(inv.check_in_stats(), stats);
    // An online retry of a scan recorded as a conflict is still refused.
    assert!(matches!(
        inv.check_in(&scan(&tickets[0], "east", "off-1"), T0 + 400),
        Err(Rejection::AlreadyCheckedIn { .. })
    ));
    // A bad scan in an upload is refused alone; an empty upload as a whole.
    let mixed = vec![
        (scan(&tickets[3], "east", "off-5"), T0),
        (scan(&tickets[3], "", "off-6"), T0),
    ];
    let d = inv.upload_scans(&mixed, T0 + 500).unwrap();
    assert!(d.answer[0].is_ok() && d.answer[1].is_err());
    assert!(inv.upload_scans(&[], T0).is_err());
    inv.audit();
}

#[test]
fn check_ins_are_rebuilt_by_replay_and_from_a_snapshot() {
    let (mut inv, mut log, tickets) = paid();
    log.extend(
        inv.check_in(&scan(&tickets[0], "north", "s1"), T0 + 1)
            .unwrap()
            .record,
    );
    log.extend(
        inv.upload_scans(
            &[
                (scan(&tickets[0], "east", "s2"), T0 + 2),
                (scan(&tickets[3], "east", "s3"), T0 + 3),
            ],
            T0 + 4,
        )
        .unwrap()
        .record,
    );
    let mut replayed = Inventory::from_created(&log[0]);
    for r in &log[1..] {
        replayed.apply(r);
    }
    replayed.audit();
    assert_eq!(replayed.check_in_stats(), inv.check_in_stats());
    let bytes = postcard::to_allocvec(&inv).unwrap();
    let mut restored = postcard::from_bytes::<Inventory>(&bytes)
        .unwrap()
        .restored();
    restored.audit();
    assert_eq!(restored.check_in_stats(), inv.check_in_stats());
    assert_eq!(restored.text_bytes, inv.text_bytes, "strings counted alike");
    // The restored state still knows who is in.
    assert!(matches!(
        restored.check_in(&scan(&tickets[3], "west", "s4"), T0 + 5),
        Err(Rejection::AlreadyCheckedIn { .. })
    ));
}

#[test]
fn with_reentry_a_ticket_leaves_and_comes_back_and_retries_change_nothing() {
    let (mut inv, mut log, tickets) = paid_with_reentry();
    let t = &tickets[0];
    // Not in yet: nobody to let out.
    assert!(matches!(
        inv.check_out(&scan(t, "north", "x0"), T0 + 1),
        Err(Rejection::NotCheckedIn(id)) if id == t.id
    ));
    log.extend(
        inv.check_in(&scan(t, "north", "in-1"), T0 + 10)
            .unwrap()
            .record,
    );
    let out = inv.check_out(&scan(t, "north", "out-1"), T0 + 20).unwrap();
    assert_eq!((out.answer.0.at_ms, out.answer.1), (T0 + 20, true));
    log.extend(out.record);
    // A retried exit repeats it; a second exit with another scan id is refused: not in.
    let retry = inv.check_out(&scan(t, "north", "out-1"), T0 + 25).unwrap();
    assert!(retry.record.is_none());
    assert_eq!((retry.answer.0.at_ms, retry.answer.1), (T0 + 20, false));
    assert!(matches!(
        inv.check_out(&scan(t, "south", "out-2"), T0 + 26),
        Err(Rejection::NotCheckedIn(_))
    ));
    // An exit's scan id is not an entry's, nor an entry's an exit's.
    assert!(matches!(
        inv.check_in(&scan(t, "north", "out-1"), T0 + 27),
        Err(Rejection::ScanIdTaken { .. })
    ));
    assert!(matches!(
        inv.check_out(&scan(t, "north", "in-1"), T0 + 27),
        Err(Rejection::ScanIdTaken { .. })
    ));
    // Back in by another gate: a new admission; the first entry's retry still answers it.
    let back = inv.check_in(&scan(t, "south", "in-2"), T0 + 30).unwrap();
    let (admission, made) = back.answer.clone();
    assert!(made && admission.gate == "south" && admission.at_ms == T0 + 30);
    log.extend(back.record);
    let old = inv.check_in(&scan(t, "north", "in-1"), T0 + 31).unwrap();
    assert_eq!(
        (
            old.answer.0.scan_id.as_str(),
            old.answer.0.at_ms,
            old.answer.1
        ),
        ("in-1", T0 + 10, false)
    );
    // In again: a third scan is refused with the latest admission.
    assert!(matches!(
        inv.check_in(&scan(t, "east", "in-3"), T0 + 32),
        Err(Rejection::AlreadyCheckedIn { scan_id, .. }) if scan_id == "in-2"
    ));
    let stats = inv.check_in_stats();
    assert_eq!((stats.admitted, stats.exits, stats.inside), (2, 1, 1));
    let north = stats.gates.iter().find(|g| g.gate == "north").unwrap();
    assert_eq!((north.admitted, north.exits), (1, 1));
    inv.audit();

    // Replayed from the log and restored from a snapshot: the same, and still in.
    let mut replayed = Inventory::from_created(&log[0]);
    for r in &log[1..] {
        replayed.apply(r);
    }
    replayed.audit();
    assert_eq!(replayed.check_in_stats(), stats);
    let bytes = postcard::to_allocvec(&inv).unwrap();
    let mut restored = postcard::from_bytes::<Inventory>(&bytes)
        .unwrap()
        .restored();
    restored.audit();
    assert_eq!(restored.check_in_stats(), stats);
    assert_eq!(restored.text_bytes, inv.text_bytes, "strings counted alike");
    assert!(matches!(
        restored.check_in(&scan(t, "east", "in-3"), T0 + 40),
        Err(Rejection::AlreadyCheckedIn { .. })
    ));
    assert!(
        restored
            .check_out(&scan(t, "east", "out-3"), T0 + 40)
            .unwrap()
            .answer
            .1
    );
}

#[test]
fn without_reentry_nobody_is_let_out() {
    let (mut inv, _, tickets) = paid();
    inv.check_in(&scan(&tickets[0], "north", "in-1"), T0 + 10)
        .unwrap();
    let before = inv.check_in_stats();
    assert!(matches!(
        inv.check_out(&scan(&tickets[0], "north", "out-1"), T0 + 20),
        Err(Rejection::ReentryNotAllowed)
    ));
    // A bad token is refused as such first.
    let mut forged = scan(&tickets[0], "north", "out-2");
    forged.token.pop();
    assert!(matches!(
        inv.check_out(&forged, T0 + 20),
        Err(Rejection::InvalidTicket(_))
    ));
    assert_eq!(inv.check_in_stats(), before);
    assert_eq!(before.inside, 1);
    inv.audit();
}

#[test]
fn a_ticket_has_at_most_max_scans_entries_and_exits_together_and_may_always_leave() {
    let (mut inv, _, tickets) = paid_with_reentry();
    let t = &tickets[1];
    let mut now = T0;
    for i in 0..MAX_SCANS_PER_TICKET / 2 - 1 {
        now += 1;
        inv.check_in(&scan(t, "g", &format!("in-{i}")), now)
            .unwrap();
        inv.check_out(&scan(t, "g", &format!("out-{i}")), now)
            .unwrap();
    }
    // The 63rd scan lets it in, an offline scan uploaded late is the 64th (a conflict) ...
    inv.check_in(&scan(t, "g", "in-last"), now + 1).unwrap();
    let late = inv
        .upload_scans(&[(scan(t, "h", "offline"), now + 1)], now + 2)
        .unwrap();
    assert!(matches!(late.answer[0], Ok(ScanOutcome::Conflict { .. })));
    // ... and it may still leave, but not come back.
    inv.check_out(&scan(t, "g", "out-last"), now + 3).unwrap();
    let before = inv.check_in_stats();
    assert!(matches!(
        inv.check_in(&scan(t, "g", "one-more"), now + 4),
        Err(Rejection::CheckInLimit(_))
    ));
    assert_eq!(inv.check_in_stats(), before);
    assert_eq!(
        (
            before.admitted,
            before.conflicts,
            before.exits,
            before.inside
        ),
        (32, 1, 32, 0)
    );
    inv.audit();
}

#[test]
fn an_offline_scan_made_before_a_ticket_left_conflicts_and_one_made_after_lets_it_in_again() {
    let (mut inv, _, tickets) = paid_with_reentry();
    let t = &tickets[2];
    inv.check_in(&scan(t, "north", "in-1"), T0 + 10).unwrap();
    inv.check_out(&scan(t, "north", "out-1"), T0 + 20).unwrap();
    // Uploaded after the exit: one made while the ticket was in (a duplicate at another gate),
    // one made after it left, and one more after that.
    let d = inv
        .upload_scans(
            &[
                (scan(t, "east", "off-1"), T0 + 15),
                (scan(t, "west", "off-2"), T0 + 25),
                (scan(t, "west", "off-3"), T0 + 26),
            ],
            T0 + 40,
        )
        .unwrap();
    let outcomes: Vec<ScanOutcome> = d.answer.into_iter().map(Result::unwrap).collect();
    assert!(
        matches!(&outcomes[0], ScanOutcome::Conflict { first } if first.scan_id == "in-1"),
        "{outcomes:?}"
    );
    assert!(matches!(&outcomes[1], ScanOutcome::Admitted(a) if a.at_ms == T0 + 25));
    assert!(matches!(&outcomes[2], ScanOutcome::Conflict { first } if first.scan_id == "off-2"));
    let stats = inv.check_in_stats();
    assert_eq!(
        (stats.admitted, stats.conflicts, stats.exits, stats.inside),
        (2, 2, 1, 1)
    );
    inv.audit();
}
