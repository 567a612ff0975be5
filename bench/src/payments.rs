//! `boxoffice-bench payments`: confirm to paid, end to end. boxoffice serves in this process with
//! its relay and payment-result consumer on `--kafka`; the payment adapter (`boxoffice-payments`,
//! test provider) runs as a process of its own on the same broker; clients reserve one ticket and
//! confirm it over gRPC with the reference `test:approve`; a consumer follows the order topic by
//! assignment and times each order from the moment its Confirm was answered to the moment its
//! `OrderPaid` was read (HDR). Every order must be paid once: an order paid twice, cancelled, or
//! not paid within `--timeout-seconds` fails the run.
//!
//! The path of one order crosses the broker three times: `OrderConfirmed` (relay to adapter),
//! `PaymentResult` (adapter to engine), `OrderPaid` (relay to the consumer here).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use kafka::rdkafka::Message;
use kafka::rdkafka::consumer::StreamConsumer;
use prost::Message as _;
use proto::v1;
use proto::v1::order_event::Change;

use crate::grpc::{connect, with_key};
use crate::in_process::machine;
use crate::results::histogram;

#[derive(clap::Args)]
pub struct PaymentsArgs {
    /// Kafka bootstrap brokers (`scripts/broker.sh start DIR` prints one).
    #[arg(long, value_name = "HOST:PORT")]
    kafka: String,
    /// Orders to confirm and see paid.
    #[arg(long, default_value_t = 20_000)]
    orders: u32,
    /// Reserve-and-confirm callers, each with one order in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: u32,
    /// Orders confirmed per second, spread evenly (an open loop, so that latency is measured at
    /// a load the path keeps up with); 0: as fast as the callers go.
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// gRPC connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Charges the adapter makes at once (`boxoffice-payments run --max-in-flight`).
    #[arg(long, default_value_t = 256)]
    adapter_in_flight: u32,
    /// `fetch.wait.max.ms` of boxoffice's payment consumer and the adapter's order consumer:
    /// how long a fetch waits at the broker. 500 is librdkafka's default and theirs; tansu 0.6.0
    /// answers a fetch only once the wait has passed, so it is also the latency of each hop.
    #[arg(long, default_value_t = 500)]
    fetch_wait_ms: u32,
    /// The payment adapter's binary; default: `boxoffice-payments` beside this one.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// How long to wait for the last order to be paid, from the first confirm.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Server runtime threads (boxoffice's gRPC and its actors' async side).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Where the sled files of boxoffice and the adapter go (default: a temporary directory on
    /// the working disk).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// An adapter process; killed when dropped.
pub(crate) struct Adapter(Child);

impl Adapter {
    /// Starts `command` with its stdout piped and waits for its first line, which must start
    /// with `ready` (the adapter binds its ports and joins its topics before it prints it); the
    /// process and that line.
    pub(crate) fn spawn(mut command: Command, ready: &str) -> Result<(Adapter, String)> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", command.get_program().display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("adapter stdout")?).read_line(&mut line)?;
        let adapter = Adapter(child);
        ensure!(
            line.starts_with(ready),
            "the adapter did not start: {line:?}"
        );
        Ok((adapter, line))
    }

    fn start(binary: &Path, dir: &Path, args: &PaymentsArgs, topics: &Topics) -> Result<Adapter> {
        let mut command = Command::new(binary);
        command
            .args(["run", "--brokers", &args.kafka])
            .args(["--orders-topic", &topics.orders])
            .args(["--payments-topic", &topics.payments])
            .args(["--group", &topics.adapter_group])
            .args(["--max-in-flight", &args.adapter_in_flight.to_string()])
            .arg("--kafka-property")
            .arg(format!("fetch.wait.max.ms={}", args.fetch_wait_ms))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .env("BOXOFFICE_PAYMENTS_LOG", "warn");
        Ok(Adapter::spawn(command, "boxoffice-payments running ")?.0)
    }

    /// CPU seconds it used so far (user + system).
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.0.id()))
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The adapter binary `given`, or `name` beside this bench's binary; `what` names it in the
/// error if it is not there.
pub(crate) fn adapter_binary(given: Option<&Path>, name: &str, what: &str) -> Result<PathBuf> {
    let binary = match given {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("the bench's directory")?
            .join(name),
    };
    ensure!(
        binary.is_file(),
        "no {what} at {}: build it (cargo build --release -p adapters) or pass --adapter",
        binary.display()
    );
    Ok(binary)
}

/// User + system CPU seconds of the process whose `/proc/<pid>/stat` is `stat`.
pub(crate) fn cpu_seconds(stat: &str) -> f64 {
    let ticks = std::fs::read_to_string(stat).ok().and_then(|s| {
        // The fields after the command, which is in parentheses and may hold spaces.
        let rest = s.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
    });
    // USER_HZ is 100 on Linux.
    ticks.map_or(0.0, |t| t as f64 / 100.0)
}

struct Topics {
    orders: String,
    payments: String,
    adapter_group: String,
}

/// What the clients were told and what the consumer read.
#[derive(Default)]
struct Tally {
    /// Order id -> when its Confirm was answered.
    confirmed: HashMap<String, Instant>,
    /// Order id -> when its first `OrderPaid` was read.
    paid: HashMap<String, Instant>,
    paid_twice: u64,
    cancelled: u64,
}

pub fn payments(args: PaymentsArgs) -> Result<()> {
    ensure!(
        args.orders >= 1 && args.concurrency >= 1 && args.connections >= 1,
        "--orders, --concurrency and --connections must be at least 1"
    );
    let adapter_binary = adapter_binary(
        args.adapter.as_deref(),
        "boxoffice-payments",
        "payment adapter",
    )?;
    let crate::run::Runtimes { servers, clients } =
        crate::run::Runtimes::build(args.server_threads)?;
    let temp = tempfile::tempdir_in(".").context("temporary data directory")?;
    let dir = args.data_dir.clone().unwrap_or(temp.path().to_path_buf());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let topics = Topics {
        orders: format!("boxoffice.bench.{run}"),
        payments: format!("boxoffice.bench.payments.{run}"),
        adapter_group: format!("bench-payments-{run}"),
    };
    let mut config = crate::run::engine_config(dir.join("boxoffice"))?;
    config.kafka.brokers = args.kafka.clone();
    config.kafka.orders_topic = topics.orders.clone();
    config.kafka.payments_topic = topics.payments.clone();
    config.kafka.payments_group = format!("bench-engine-{run}");
    config
        .kafka
        .properties
        .insert("fetch.wait.max.ms".into(), args.fetch_wait_ms.to_string());
    config
        .validate()
        .context("boxoffice's settings for the bench")?;

    println!("machine: {}", machine());
    println!(
        "command: boxoffice-bench payments --kafka {} --orders {} --concurrency {} --rate {} --connections {} --adapter-in-flight {} --fetch-wait-ms {}",
        args.kafka,
        args.orders,
        args.concurrency,
        args.rate,
        args.connections,
        args.adapter_in_flight,
        args.fetch_wait_ms
    );
    let running = servers.block_on(server::serve::start(&config))?;
    let adapter = Adapter::start(&adapter_binary, &dir.join("payments"), &args, &topics)?;
    let grpc = running.grpc_addr;
    let tally = Arc::new(Mutex::new(Tally::default()));

    let outcome = clients.block_on(async {
        // One ticket more for the warm-up order.
        let event_id = create_ga_event(grpc, "Payments bench", args.orders + 1, 1).await?;
        let consumer = tap(&args.kafka, &topics.orders).await?;
        let reader = tokio::spawn(read_paid(consumer, tally.clone()));
        warm_up(grpc, &event_id, args.orders, &tally).await?;
        let cpu_before = (cpu_seconds("/proc/self/stat"), adapter.cpu_seconds());
        let started = Instant::now();
        let confirmed = confirm_all(grpc, &event_id, &args, &tally, started).await?;
        let confirms_done = started.elapsed();
        let deadline = started + Duration::from_secs(args.timeout_seconds);
        loop {
            let (paid, cancelled) = {
                let t = tally.lock().expect("tally");
                (t.paid.len(), t.cancelled)
            };
            if paid as u32 >= confirmed || cancelled > 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu_after = (cpu_seconds("/proc/self/stat"), adapter.cpu_seconds());
        reader.abort();
        anyhow::Ok((confirmed, confirms_done, started, cpu_before, cpu_after))
    });
    let (confirmed, confirms_done, started, cpu_before, cpu_after) = outcome?;
    let t = tally.lock().expect("tally");
    let mut latency = histogram(3);
    let mut last_paid = started;
    for (order, answered) in &t.confirmed {
        if let Some(read) = t.paid.get(order) {
            latency.saturating_record(read.saturating_duration_since(*answered).as_micros() as u64);
            last_paid = last_paid.max(*read);
        }
    }
    let settled = last_paid.duration_since(started).as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "confirmed {confirmed} orders in {:.2} s ({:.0}/s)",
        confirms_done.as_secs_f64(),
        f64::from(confirmed) / confirms_done.as_secs_f64()
    );
    println!(
        "paid {} of {confirmed} in {settled:.2} s from the first confirm: {:.0} orders/s confirm-to-paid",
        t.paid.len(),
        t.paid.len() as f64 / settled.max(1e-9)
    );
    println!(
        "confirm-to-paid latency: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        latency.max() as f64 / 1_000.0
    );
    println!(
        "CPU during the run: bench process (boxoffice + callers + consumer) {:.1} s, adapter {:.1} s",
        cpu_after.0 - cpu_before.0,
        cpu_after.1 - cpu_before.1
    );
    drop(adapter);
    servers.block_on(running.stop())?;
    if t.paid_twice > 0 || t.cancelled > 0 || t.paid.len() < confirmed as usize {
        bail!(
            "audit failed: {} paid twice, {} cancelled, {} of {confirmed} not paid within {} s",
            t.paid_twice,
            t.cancelled,
            confirmed as usize - t.paid.len().min(confirmed as usize),
            args.timeout_seconds
        );
    }
    println!("audit: every order paid once, none cancelled");
    Ok(())
}

/// A one-tier GA event of `capacity` tickets, at most `max_per_order` per order, on sale.
pub(crate) async fn create_ga_event(
    grpc: SocketAddr,
    name: &str,
    capacity: u32,
    max_per_order: u32,
) -> Result<String> {
    let mut admin = v1::event_admin_client::EventAdminClient::new(connect(grpc).await?);
    let request = v1::CreateEventRequest {
        name: name.into(),
        venue: "Hall".into(),
        starts_at: Some(prost_types::Timestamp {
            seconds: 4_000_000_000,
            nanos: 0,
        }),
        status: v1::EventStatus::OnSale as i32,
        currency: "EUR".into(),
        default_hold_ttl_seconds: 600,
        tiers: vec![v1::Tier {
            code: "GA".into(),
            name: "Standing".into(),
            price_minor: 4_000,
            fee_minor: 200,
            max_per_order,
            sale_windows: vec![],
            stock: Some(v1::tier::Stock::GeneralAdmission(v1::GeneralAdmission {
                capacity,
            })),
        }],
        ..Default::default()
    };
    let event = admin
        .create_event(with_key(request))
        .await?
        .into_inner()
        .event
        .context("no event")?;
    Ok(event.event_id)
}

/// A consumer of every partition of `topic` from its first message (the relay creates the topic
/// at start), asking the broker to answer fetches within 5 ms.
async fn tap(brokers: &str, topic: &str) -> Result<StreamConsumer> {
    let properties = BTreeMap::from([("fetch.wait.max.ms".to_string(), "5".to_string())]);
    let group = format!("bench-tap-{}", uuid::Uuid::new_v4().simple());
    let consumer = kafka::consumer(brokers, &group, &properties)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let partitions = loop {
        match kafka::partition_count(&consumer, topic, Duration::from_secs(5)) {
            Ok(n) => break n,
            Err(e) if Instant::now() >= deadline => bail!("the order topic: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    kafka::assign_partitions(
        &consumer,
        topic,
        0..partitions,
        kafka::rdkafka::Offset::Beginning,
    )?;
    Ok(consumer)
}

async fn read_paid(consumer: StreamConsumer, tally: Arc<Mutex<Tally>>) {
    loop {
        let Ok(message) = consumer.recv().await else {
            continue;
        };
        let Ok(event) = v1::OrderEvent::decode(message.payload().unwrap_or_default()) else {
            continue;
        };
        let read = Instant::now();
        let mut t = tally.lock().expect("tally");
        match event.change {
            Some(Change::OrderPaid(p)) => {
                let order = p.order.map(|o| o.order_id).unwrap_or_default();
                if t.paid.insert(order, read).is_some() {
                    t.paid_twice += 1;
                }
            }
            Some(Change::OrderCancelled(_)) => t.cancelled += 1,
            _ => {}
        }
    }
}

/// Reserves `quantity` GA tickets for `customer` and confirms them with `test:approve`: the order.
pub(crate) async fn place(
    client: &mut v1::reservations_client::ReservationsClient<tonic::transport::Channel>,
    event_id: &str,
    customer: String,
    quantity: u32,
) -> Result<v1::Order> {
    let hold = client
        .reserve(with_key(v1::ReserveRequest {
            event_id: event_id.to_string(),
            customer_id: customer,
            items: vec![v1::ReserveItem {
                tier_code: "GA".into(),
                selection: Some(v1::reserve_item::Selection::Quantity(quantity)),
            }],
            hold_ttl_seconds: None,
            idempotency_key: String::new(),
        }))
        .await?
        .into_inner()
        .hold
        .context("no hold")?;
    client
        .confirm(with_key(v1::ConfirmRequest {
            event_id: event_id.to_string(),
            hold_id: hold.hold_id,
            payment: Some(v1::Payment {
                reference: "test:approve".into(),
            }),
            idempotency_key: String::new(),
            contact: None,
        }))
        .await?
        .into_inner()
        .order
        .context("no order")
}

/// One order placed and paid before the measurement, so that the adapter and the consumers
/// have joined and found their partitions; the tally forgets it.
async fn warm_up(grpc: SocketAddr, event_id: &str, n: u32, tally: &Mutex<Tally>) -> Result<()> {
    let mut client = v1::reservations_client::ReservationsClient::new(connect(grpc).await?);
    let order_id = place(&mut client, event_id, format!("payer-{n}"), 1)
        .await?
        .order_id;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !tally.lock().expect("tally").paid.contains_key(&order_id) {
        ensure!(
            Instant::now() < deadline,
            "the warm-up order was not paid within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *tally.lock().expect("tally") = Tally::default();
    Ok(())
}

/// Reserves and confirms `--orders` orders; how many were confirmed.
async fn confirm_all(
    grpc: SocketAddr,
    event_id: &str,
    args: &PaymentsArgs,
    tally: &Arc<Mutex<Tally>>,
    started: Instant,
) -> Result<u32> {
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(connect(grpc).await?);
    }
    let next = Arc::new(AtomicU32::new(0));
    let mut callers = Vec::new();
    for caller in 0..args.concurrency {
        let mut client = v1::reservations_client::ReservationsClient::new(
            channels[caller as usize % channels.len()].clone(),
        );
        let (next, tally, event_id) = (next.clone(), tally.clone(), event_id.to_string());
        let (orders, rate) = (args.orders, args.rate);
        callers.push(tokio::spawn(async move {
            let mut confirmed = 0u32;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= orders {
                    return anyhow::Ok(confirmed);
                }
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(f64::from(n) / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                }
                let order_id = place(&mut client, &event_id, format!("payer-{n}"), 1)
                    .await?
                    .order_id;
                tally
                    .lock()
                    .expect("tally")
                    .confirmed
                    .insert(order_id, Instant::now());
                confirmed += 1;
            }
        }));
    }
    let mut confirmed = 0;
    for caller in callers {
        confirmed += caller.await??;
    }
    Ok(confirmed)
}
