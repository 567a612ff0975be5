//! Over gRPC on loopback: the real server (engine, sled with fsync, auth, metrics) against a no-op
//! tonic service with the same `Reserve` surface, measured in one run on one machine, so the
//! ratio says what boxoffice costs on top of the transport. Both servers share a runtime of their
//! own; the load generator runs on another, in the same process and on the same cores.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hdrhistogram::Histogram;
use proto::v1;
use proto::v1::reservations_client::ReservationsClient;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::in_process::{machine, print_latency};

#[derive(clap::Args)]
pub struct GrpcArgs {
    /// Measured duration of each mode, after its warm-up.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Modes to run, in order: `noop` (unary Reserve on the no-op server), `unary` (unary Reserve
    /// on boxoffice), `stream` (ReserveStream on boxoffice).
    #[arg(long, value_delimiter = ',', default_value = "noop,unary,stream")]
    modes: Vec<String>,
    /// Client connections (HTTP/2) for the unary modes.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Unary calls in flight over all connections.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// ReserveStream calls, each on its own connection.
    #[arg(long, default_value_t = 2)]
    streams: usize,
    /// Reservations in flight per stream.
    #[arg(long, default_value_t = 8_192)]
    stream_window: usize,
    /// Worker threads of the servers' runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Where the sled files go (default: a temporary directory on the working disk).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Outcome {
    ok: u64,
    refused: BTreeMap<String, u64>,
    latency_us: Option<Histogram<u64>>,
    elapsed: Duration,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        match (&mut self.latency_us, other.latency_us) {
            (Some(h), Some(o)) => h.add(o).expect("same bounds"),
            (h @ None, o) => *h = o,
            _ => {}
        }
        self.elapsed = self.elapsed.max(other.elapsed);
    }

    fn print(&self, label: &str) -> f64 {
        let rate = self.ok as f64 / self.elapsed.as_secs_f64();
        println!(
            "{label}: {rate:.0} ok/s ({} ok in {:.2} s)",
            self.ok,
            self.elapsed.as_secs_f64()
        );
        if !self.refused.is_empty() {
            println!("{label} refused: {:?}", self.refused);
        }
        if let Some(h) = &self.latency_us {
            print_latency(label, h);
        }
        rate
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

fn reserve_request(event_id: &str, n: u64) -> v1::ReserveRequest {
    v1::ReserveRequest {
        event_id: event_id.to_string(),
        customer_id: format!("shopper-{}", n % 1_000_000),
        items: vec![v1::ReserveItem {
            tier_code: "GA".into(),
            selection: Some(v1::reserve_item::Selection::Quantity(1)),
        }],
        hold_ttl_seconds: None,
        idempotency_key: String::new(),
    }
}

pub(crate) fn with_key<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", config::DEV_API_KEY)
            .parse()
            .expect("ascii"),
    );
    request
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map_or_else(|| format!("{:?}", status.code()), |i| i.reason.clone())
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to {addr}"))
}

/// `concurrency` callers, each with one unary Reserve in flight, for warm-up plus `seconds`.
async fn unary(addr: SocketAddr, event_id: &str, args: &GrpcArgs) -> Result<Outcome> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(connect(addr).await?);
    }
    let started = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup_seconds);
    let until = warmup + Duration::from_secs_f64(args.seconds);
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..args.concurrency {
        let mut client = ReservationsClient::new(channels[i % channels.len()].clone());
        let event_id = event_id.to_string();
        callers.spawn(async move {
            let mut out = Outcome {
                latency_us: Some(histogram()),
                ..Outcome::default()
            };
            let mut n = i as u64 * 1_000_003;
            loop {
                let sent = Instant::now();
                let since = sent - started;
                if since >= until {
                    break;
                }
                n += 1;
                let answer = client
                    .reserve(with_key(reserve_request(&event_id, n)))
                    .await;
                if since < warmup {
                    continue;
                }
                let us = sent.elapsed().as_micros() as u64;
                out.latency_us
                    .as_mut()
                    .expect("set")
                    .saturating_record(us.max(1));
                match answer {
                    Ok(_) => out.ok += 1,
                    Err(status) => *out.refused.entry(reason(&status)).or_default() += 1,
                }
            }
            out.elapsed = started.elapsed().saturating_sub(warmup);
            out
        });
    }
    let mut total = Outcome::default();
    while let Some(out) = callers.join_next().await {
        total.merge(out?);
    }
    Ok(total)
}

/// `streams` ReserveStream calls, each keeping `stream_window` reservations in flight.
async fn stream(addr: SocketAddr, event_id: &str, args: &GrpcArgs) -> Result<Outcome> {
    let started = Instant::now();
    let warmup = Duration::from_secs_f64(args.warmup_seconds);
    let until = warmup + Duration::from_secs_f64(args.seconds);
    let mut streams = tokio::task::JoinSet::new();
    for s in 0..args.streams.max(1) {
        let mut client = ReservationsClient::new(connect(addr).await?);
        let event_id = event_id.to_string();
        let window = args.stream_window.max(1);
        streams.spawn(async move {
            let (tx, rx) = mpsc::channel::<v1::ReserveStreamRequest>(window);
            let credit = Arc::new(Semaphore::new(window));
            let done = Arc::new(AtomicBool::new(false));
            let sender = {
                let (credit, done, event_id) = (credit.clone(), done.clone(), event_id.clone());
                tokio::spawn(async move {
                    let mut last_id = 0u64;
                    let mut n = s as u64 * 1_000_003;
                    while started.elapsed() < until && !done.load(Ordering::Relaxed) {
                        let Ok(permit) = credit.acquire().await else {
                            break;
                        };
                        permit.forget();
                        // The id is the send time (ns since start, kept unique), so the answer
                        // carries its own latency.
                        let id = (started.elapsed().as_nanos() as u64).max(last_id + 1);
                        last_id = id;
                        n += 1;
                        let request = v1::ReserveStreamRequest {
                            request_id: id,
                            reserve: Some(reserve_request(&event_id, n)),
                        };
                        if tx.send(request).await.is_err() {
                            break;
                        }
                    }
                })
            };
            let mut answers = client
                .reserve_stream(with_key(ReceiverStream::new(rx)))
                .await?
                .into_inner();
            let mut out = Outcome {
                latency_us: Some(histogram()),
                ..Outcome::default()
            };
            while let Some(answer) = answers.message().await? {
                credit.add_permits(1);
                let now = started.elapsed();
                let sent = Duration::from_nanos(answer.request_id);
                if sent < warmup {
                    continue;
                }
                let us = now.saturating_sub(sent).as_micros() as u64;
                out.latency_us
                    .as_mut()
                    .expect("set")
                    .saturating_record(us.max(1));
                match answer.result {
                    Some(v1::reserve_stream_response::Result::Hold(_)) => out.ok += 1,
                    Some(v1::reserve_stream_response::Result::Error(e)) => {
                        *out.refused.entry(e.reason).or_default() += 1
                    }
                    None => *out.refused.entry("EMPTY".into()).or_default() += 1,
                }
            }
            done.store(true, Ordering::Relaxed);
            sender.await?;
            out.elapsed = started.elapsed().saturating_sub(warmup);
            anyhow::Ok(out)
        });
    }
    let mut total = Outcome::default();
    while let Some(out) = streams.join_next().await {
        total.merge(out??);
    }
    Ok(total)
}

/// Runs the modes; returns an error if the audit finds a hold the server does not have.
pub fn run(args: GrpcArgs) -> Result<()> {
    let crate::run::Runtimes { servers, clients } =
        crate::run::Runtimes::build(args.server_threads)?;
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir_in(".").context("temporary data directory")?),
    };
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("temp").path().to_path_buf());
    let config = crate::run::engine_config(data_dir)?;

    let running = servers.block_on(server::start(&config))?;
    let (noop_stop, noop_stop_rx) = watch::channel(false);
    let (noop_listener, noop_addr) = servers.block_on(server::noop::bind())?;
    let noop = servers.spawn(server::noop::serve(noop_listener, noop_stop_rx));
    let grpc = running.grpc_addr;
    println!("machine: {}", machine());
    println!(
        "servers: {} worker threads; load generator: {} connections x {} unary calls in flight, {} streams x {} in flight",
        args.server_threads, args.connections, args.concurrency, args.streams, args.stream_window
    );

    let event_id = clients.block_on(async {
        let mut admin = v1::event_admin_client::EventAdminClient::new(connect(grpc).await?);
        let mut scenario = crate::scenario::Scenario::built_in("throughput")?;
        scenario.events.hold_ttl_seconds = 3_600;
        let request = crate::target::create_event_request(&scenario, 0);
        let event = admin
            .create_event(with_key(request))
            .await?
            .into_inner()
            .event
            .context("no event")?;
        anyhow::Ok(event.event_id)
    })?;

    let mut rates = BTreeMap::new();
    let mut held_acknowledged = 0u64;
    let commit = |engine: &engine::Engine| {
        let stats = engine.commit_stats();
        (
            stats.flushes.load(Ordering::Relaxed),
            stats.records.load(Ordering::Relaxed),
            stats.flush_nanos_total.load(Ordering::Relaxed),
        )
    };
    for mode in &args.modes {
        let before = commit(running.engine());
        let outcome = match mode.as_str() {
            "noop" => clients.block_on(unary(noop_addr, &event_id, &args))?,
            "unary" => clients.block_on(unary(grpc, &event_id, &args))?,
            "stream" => clients.block_on(stream(grpc, &event_id, &args))?,
            other => anyhow::bail!("unknown mode `{other}`; use noop, unary, stream"),
        };
        rates.insert(mode.clone(), outcome.print(mode));
        let after = commit(running.engine());
        let flushes = (after.0 - before.0).max(1);
        if mode != "noop" {
            println!(
                "{mode} commit: {} flushes, {:.0} records per flush, {:.2} ms per flush (write + fsync)",
                after.0 - before.0,
                (after.1 - before.1) as f64 / flushes as f64,
                (after.2 - before.2) as f64 / flushes as f64 / 1e6
            );
        }
        if mode != "noop" {
            held_acknowledged += outcome.ok;
        }
    }
    if let (Some(noop), Some(unary)) = (rates.get("noop"), rates.get("unary")) {
        println!(
            "unary Reserve / no-op Reserve: {:.1}%",
            100.0 * unary / noop
        );
    }

    // Audit: every acknowledged hold (warm-up ones too) is held at the server, nothing more.
    let held = clients.block_on(async {
        let mut client = v1::availability_client::AvailabilityClient::new(connect(grpc).await?);
        let answer = client
            .get_availability(with_key(v1::GetAvailabilityRequest {
                event_id: event_id.clone(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        let tier = answer.tiers.first().context("no tier")?.clone();
        ensure!(
            tier.available + tier.held + tier.sold == tier.capacity,
            "counts do not add up: {tier:?}"
        );
        anyhow::Ok(u64::from(tier.held))
    })?;
    ensure!(
        held >= held_acknowledged,
        "audit failed: {held_acknowledged} holds acknowledged in the measured windows but only {held} held"
    );
    println!(
        "audit: {held} tickets held at the server (>= {held_acknowledged} acknowledged in the measured windows)"
    );

    noop_stop.send_replace(true);
    servers.block_on(async {
        let _ = noop.await;
        running.stop().await
    })?;
    Ok(())
}
