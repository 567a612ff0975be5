//! The same Reserve under the same key, sent twice at once and again after a crash, is one hold.

use crate::support::*;

#[tokio::test]
async fn a_repeated_reserve_yields_one_hold_also_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    let c = server.clients().await;
    let mut admin = c.clone();
    let id = admin.create(event_request(50, 2)).await.event_id;

    let request = ga(&id, "alice", 4, "checkout-7f3a");
    let (mut a, mut b) = (c.clone(), c.clone());
    let (first, second) = tokio::join!(a.reserve(request.clone()), b.reserve(request.clone()));
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(first, second, "both callers must get the same hold");
    let mut c2 = c.clone();
    assert_eq!(counts(&c2.tiers(&id).await, "GA"), (46, 4, 0));

    // SIGKILL: no graceful flush; the hold was acknowledged, so it is durable.
    server.kill();
    server.restart();
    let mut c = server.clients().await;
    let third = c.reserve(request.clone()).await.expect("after restart");
    assert_eq!(third, first);
    assert_eq!(counts(&c.tiers(&id).await, "GA"), (46, 4, 0));

    // The same key from another customer is another request.
    let other = c.reserve(ga(&id, "bob", 4, "checkout-7f3a")).await.unwrap();
    assert_ne!(other.hold_id, first.hold_id);
    assert_eq!(counts(&c.tiers(&id).await, "GA"), (42, 8, 0));
}
