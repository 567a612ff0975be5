//! `boxoffice-bench relay`: how fast the relay drains a backlog. The engine in process makes
//! order events with the relay off (confirmed orders over a few events), then the relay is
//! started against `--kafka` and timed until the outbox is empty; the topic's offsets then show
//! that every entry is there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use engine::inventory::ConfirmRequest;
use kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::watch;

use crate::in_process::{bench_config, hot_event, machine, reserve};

#[derive(clap::Args)]
pub struct RelayArgs {
    /// Kafka bootstrap brokers (`scripts/broker.sh start DIR` prints one).
    #[arg(long, value_name = "HOST:PORT")]
    kafka: String,
    /// Confirmed orders to make while the relay is off; each is one outbox entry.
    #[arg(long, default_value_t = 200_000)]
    orders: u32,
    /// Events the orders are spread over (the message key is the event id, so one event's
    /// entries go to one partition).
    #[arg(long, default_value_t = 12)]
    events: u32,
    /// Outbox entries per relay round (`kafka.batch_entries`).
    #[arg(long, default_value_t = config::KafkaConfig::default().batch_entries)]
    batch_entries: u32,
    /// Produce requests in flight per broker connection (`kafka.max_in_flight`).
    #[arg(long, default_value_t = config::KafkaConfig::default().max_in_flight)]
    max_in_flight: u32,
    /// Partitions of the topic the bench creates (`kafka.orders_topic_partitions`).
    #[arg(long, default_value_t = config::KafkaConfig::default().orders_topic_partitions)]
    partitions: u32,
    /// A librdkafka producer property, `KEY=VALUE`, as in `[kafka.properties]`; repeatable.
    #[arg(long = "property", value_name = "KEY=VALUE")]
    properties: Vec<String>,
    /// Where the sled files go (default: a temporary directory on the working disk).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Confirms in flight while the backlog is made.
const CONFIRMERS: u32 = 64;

pub async fn relay(args: RelayArgs) -> Result<()> {
    ensure!(
        args.events >= 1 && args.orders >= 1,
        "--events and --orders must be at least 1"
    );
    let temp = tempfile::tempdir_in(".").context("temporary data directory")?;
    let mut config = bench_config(args.data_dir.as_deref().unwrap_or(temp.path()));
    let k = &mut config.kafka;
    k.brokers = args.kafka.clone();
    k.orders_topic = format!("boxoffice.bench.{}", uuid::Uuid::new_v4().simple());
    k.orders_topic_partitions = args.partitions;
    k.batch_entries = args.batch_entries;
    k.max_in_flight = args.max_in_flight;
    for p in &args.properties {
        let (key, value) = p
            .split_once('=')
            .with_context(|| format!("--property `{p}`: use KEY=VALUE"))?;
        k.properties.insert(key.to_string(), value.to_string());
    }
    config
        .validate()
        .context("the relay's settings from the command line")?;
    println!("machine: {}", machine());
    println!(
        "command: boxoffice-bench relay --kafka {} --orders {} --events {} --batch-entries {} --max-in-flight {} --partitions {}{}",
        args.kafka,
        args.orders,
        args.events,
        args.batch_entries,
        args.max_in_flight,
        args.partitions,
        args.properties
            .iter()
            .map(|p| format!(" --property {p}"))
            .collect::<String>()
    );

    // The backlog, made with the relay off.
    let engine = Arc::new(engine::Engine::open(&config).await?);
    let started = Instant::now();
    let per_event = args.orders.div_ceil(args.events);
    let mut makers = Vec::new();
    for e in 0..args.events {
        let count = per_event.min(args.orders - (e * per_event).min(args.orders));
        let spec = hot_event(count.max(1));
        let id = spec.id;
        engine.create_event(spec).await?;
        let handle = engine.event(id)?;
        makers.push(tokio::spawn(async move {
            let mut holds = Vec::with_capacity(count as usize);
            for chunk in 0..count.div_ceil(512) {
                let n = 512.min(count - chunk * 512);
                let requests = (0..n)
                    .map(|i| reserve(format!("e{e}-{chunk}-{i}"), 1))
                    .collect();
                for answer in handle.reserve_many(requests).await? {
                    holds.push(answer?.id);
                }
            }
            let holds = Arc::new(std::sync::Mutex::new(holds));
            let mut confirmers = Vec::new();
            for _ in 0..CONFIRMERS.div_ceil(args.events).max(4) {
                let (handle, holds) = (handle.clone(), holds.clone());
                confirmers.push(tokio::spawn(async move {
                    loop {
                        let Some(hold_id) = holds.lock().expect("holds").pop() else {
                            return Ok::<_, engine::Error>(());
                        };
                        handle
                            .confirm(ConfirmRequest {
                                hold_id,
                                payment_ref: format!("bench-{hold_id}"),
                                idempotency_key: None,
                                contact: None,
                            })
                            .await?;
                    }
                }));
            }
            for c in confirmers {
                c.await.expect("confirmer")?;
            }
            Ok::<_, engine::Error>(())
        }));
    }
    for m in makers {
        m.await.expect("maker")?;
    }
    let backlog = engine.outbox_pending();
    println!(
        "backlog: {backlog} outbox entries ({} orders, {} event creations) made in {:.1} s",
        args.orders,
        args.events,
        started.elapsed().as_secs_f64()
    );

    // The topic first, so that the drain's time is publishing only.
    let k = &config.kafka;
    kafka::ensure_topic(
        &k.brokers,
        &k.properties,
        &k.orders_topic,
        k.orders_topic_partitions as i32,
        k.orders_topic_replication as i32,
    )
    .await
    .map_err(anyhow::Error::msg)
    .context("create the topic")?;
    let offsets_before = topic_messages(k)?;

    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let relay = server::relay::start(engine.clone(), k, stopped).context("the relay is off")?;
    let mut last_report = started;
    while engine.outbox_pending() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "  {:>5.1} s: {} entries pending",
                started.elapsed().as_secs_f64(),
                engine.outbox_pending()
            );
        }
    }
    let drained = started.elapsed();
    stop.send_replace(true);
    relay.await.context("the relay task")?;
    let on_topic = topic_messages(k)? - offsets_before;
    println!(
        "drained {backlog} entries in {:.2} s: {:.0} entries/s to {} ({} partitions, {} per round)",
        drained.as_secs_f64(),
        backlog as f64 / drained.as_secs_f64(),
        k.brokers,
        k.orders_topic_partitions,
        k.batch_entries
    );
    println!("topic {}: {on_topic} messages", k.orders_topic);
    ensure!(
        on_topic >= backlog,
        "the topic has {on_topic} messages, fewer than the {backlog} entries acknowledged"
    );
    Arc::into_inner(engine)
        .context("engine still shared")?
        .shutdown()
        .await;
    Ok(())
}

/// Messages in the topic: the sum over its partitions of high minus low watermark.
fn topic_messages(k: &config::KafkaConfig) -> Result<u64> {
    let consumer: BaseConsumer = kafka::rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &k.brokers)
        .create()
        .context("a client for the watermarks")?;
    let mut total = 0;
    for p in 0..k.orders_topic_partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(&k.orders_topic, p, Duration::from_secs(10))
            .with_context(|| format!("watermarks of partition {p}"))?;
        total += (high - low).max(0) as u64;
    }
    Ok(total)
}
