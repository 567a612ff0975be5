//! A repeated client key gets the first answer: concurrently, later, and after a restart.

use engine::inventory::ConfirmRequest;
use tests::{event, ga_tier, reserve_ga};

use crate::{create, fresh_engine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_yields_one_hold_even_across_restart() {
    let (engine, _dir, config) = fresh_engine(|_| {}).await;
    let spec = event(vec![ga_tier("GA", 100, 4)]);
    let id = spec.id;
    let handle = create(&engine, spec).await;
    let mut req = reserve_ga("alice", "GA", 2);
    req.idempotency_key = Some("cart-42".into());
    let (a, b) = tokio::join!(handle.reserve(req.clone()), handle.reserve(req.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    let confirm = ConfirmRequest {
        hold_id: a.id,
        payment_ref: "tok_1".into(),
        idempotency_key: Some("pay-42".into()),
        contact: None,
    };
    let (o1, o2) = tokio::join!(
        handle.confirm(confirm.clone()),
        handle.confirm(confirm.clone())
    );
    assert_eq!(o1.clone().unwrap(), o2.unwrap());
    engine.shutdown().await;

    let engine = engine::Engine::open(&config).await.unwrap();
    let handle = engine.event(id).unwrap();
    assert_eq!(handle.reserve(req.clone()).await.unwrap(), a);
    assert_eq!(handle.confirm(confirm).await.unwrap(), o1.unwrap());
    let tier = &handle.summary().await.unwrap().tiers[0];
    assert_eq!((tier.available, tier.held, tier.sold), (98, 0, 2));
    // A different request under the same key is refused and changes nothing.
    let mut other = req.clone();
    other.items = reserve_ga("alice", "GA", 1).items;
    assert!(matches!(
        handle.reserve(other).await,
        Err(engine::Error::Rejected(
            engine::inventory::Rejection::IdempotencyKeyReused
        ))
    ));
    assert_eq!(handle.summary().await.unwrap().tiers[0].available, 98);
    engine.shutdown().await;
}
