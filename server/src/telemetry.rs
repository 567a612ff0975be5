//! Prometheus metrics: the recorder, the `/metrics` endpoint on its own port, the per-RPC
//! counters and histograms, and a refresher for per-event gauges. Names follow Prometheus
//! conventions: `boxoffice_` prefix, `_total` for counters, base units (`_seconds`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use engine::Engine;
use engine::inventory::EventId;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::answers::AnswerBudget;

/// Latency buckets, seconds: from 50 µs (an answer from memory) to 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Records per flush.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1_024.0, 4_096.0, 16_384.0, 65_536.0,
];

/// Installs the process-wide recorder. `None` if one is installed already (a second server in
/// the same process, as in the bench); that server then records into the first one's.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_string()),
            LATENCY_BUCKETS_SECONDS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("boxoffice_log_flush_batch_records".to_string()),
                BATCH_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("boxoffice_reserve_coalesced_batch_requests".to_string()),
                BATCH_BUCKETS,
            )
        })
        .ok()?
        .install_recorder()
        .ok()
}

/// One finished call: its count and latency by RPC and outcome (`OK` or the error reason).
pub fn rpc(rpc: &'static str, started: Instant, outcome: &'static str) {
    rpc_many(rpc, started.elapsed(), outcome, 1);
}

/// `count` answers of a streamed call that shared one decision taking `elapsed`.
pub fn rpc_many(rpc: &'static str, elapsed: Duration, outcome: &'static str, count: u64) {
    counter!("boxoffice_rpc_requests_total", "rpc" => rpc, "outcome" => outcome).increment(count);
    histogram!("boxoffice_rpc_duration_seconds", "rpc" => rpc, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
    if outcome == "OVERLOADED" {
        counter!("boxoffice_admission_rejections_total", "rpc" => rpc).increment(count);
    }
}

/// One scan, by event, gate and outcome (`admitted`, `conflict`, `exited`, `repeated`,
/// `refused`). `event` is the id of an event that exists, or empty (a scan refused before its event
/// was found). Scans that were recorded carry their gate, of which an event counts at most
/// `engine::inventory::MAX_GATES_PER_EVENT`, and so do repeated ones (a repeat is a scan recorded
/// before, at its gate); a refused scan's gate may be anything a client sent, so it is left out.
pub fn scan(event: &str, gate: &str, outcome: &'static str) {
    let gate = match outcome {
        "admitted" | "conflict" | "exited" | "repeated" => gate.to_string(),
        _ => String::new(),
    };
    counter!(
        "boxoffice_check_in_scans_total",
        "event" => event.to_string(),
        "gate" => gate,
        "outcome" => outcome
    )
    .increment(1);
}

/// Serves `GET /metrics` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

/// Refreshes the per-event gauges every `interval` until `stop` turns true: tickets per tier and
/// state, open holds and in-flight requests per event, holds expired, and the exporter's upkeep.
/// An event's counts are read (through its actor) only when it changed since the last refresh.
pub async fn refresh(
    engine: Arc<Engine>,
    answers: AnswerBudget,
    handle: Option<PrometheusHandle>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: HashMap<EventId, watch::Receiver<u64>> = HashMap::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        counter!("boxoffice_holds_expired_total")
            .absolute(engine.stats().holds_expired.load(Ordering::Relaxed));
        counter!("boxoffice_orders_unpaid_cancelled_total").absolute(
            engine
                .stats()
                .orders_unpaid_cancelled
                .load(Ordering::Relaxed),
        );
        gauge!("boxoffice_state_memory_bytes").set(engine.memory().used_bytes() as f64);
        gauge!("boxoffice_state_memory_limit_bytes").set(engine.memory().limit_bytes() as f64);
        gauge!("boxoffice_answer_buffer_bytes").set(answers.in_use() as f64);
        gauge!("boxoffice_answer_buffer_limit_bytes").set(answers.bytes() as f64);
        let ids = engine.event_ids();
        gauge!("boxoffice_events").set(ids.len() as f64);
        for id in ids {
            let Ok(event) = engine.event(id) else {
                continue;
            };
            let label = id.to_string();
            gauge!("boxoffice_event_in_flight_requests", "event_id" => label.clone())
                .set(f64::from(event.in_flight()));
            let changes = seen.entry(id).or_insert_with(|| {
                let mut rx = event.changes();
                rx.mark_changed();
                rx
            });
            if !changes.has_changed().unwrap_or(false) {
                continue;
            }
            changes.mark_unchanged();
            let Ok(summary) = event.summary().await else {
                // Busy or stopping: counted again at the next tick.
                changes.mark_changed();
                continue;
            };
            gauge!("boxoffice_event_open_holds", "event_id" => label.clone())
                .set(f64::from(summary.open_holds));
            for tier in &summary.tiers {
                for (state, value) in [
                    ("available", tier.available),
                    ("held", tier.held),
                    ("sold", tier.sold),
                ] {
                    gauge!(
                        "boxoffice_tier_tickets",
                        "event_id" => label.clone(),
                        "tier" => tier.code.clone(),
                        "state" => state
                    )
                    .set(f64::from(value));
                }
            }
        }
        if let Some(handle) = &handle {
            handle.run_upkeep();
        }
    }
}
