//! `boxoffice-bench check-in`: durable scans at the gates over gRPC. boxoffice serves in this
//! process; the tickets are bought over gRPC (reserve and confirm, four per order) and paid in
//! process through the engine's own payment path (no broker: the scans are what is measured);
//! then callers send one `CheckIn` per ticket, each waiting for its answer, which comes once the
//! admission is durable. Every ticket must be let in once, and `GetCheckInStats` must count them
//! all, or the run fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use engine::inventory::{Currency, OrderId, PaymentOutcome, PaymentResult};
use proto::v1;
use tonic::transport::Channel;

use crate::grpc::{connect, with_key};
use crate::in_process::machine;
use crate::results::histogram;

#[derive(clap::Args)]
pub struct CheckInArgs {
    /// Tickets to issue and scan (a multiple of 4: four per order).
    #[arg(long, default_value_t = 100_000)]
    tickets: u32,
    /// Scans in flight, one per caller.
    #[arg(long, default_value_t = 1_000)]
    concurrency: u32,
    /// gRPC connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: u32,
    /// Gates the scans are spread over.
    #[arg(long, default_value_t = 16)]
    gates: u32,
    /// Server runtime threads.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Where the sled files go (default: a temporary directory on the working disk).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
}

const PER_ORDER: u32 = 4;

pub fn check_in(args: CheckInArgs) -> Result<()> {
    ensure!(
        args.tickets >= PER_ORDER && args.tickets.is_multiple_of(PER_ORDER),
        "--tickets must be a positive multiple of {PER_ORDER}"
    );
    ensure!(
        args.concurrency >= 1 && args.connections >= 1,
        "--concurrency and --connections must be at least 1"
    );
    ensure!(
        (1..=engine::inventory::MAX_GATES_PER_EVENT as u32).contains(&args.gates),
        "--gates must be 1..={}",
        engine::inventory::MAX_GATES_PER_EVENT
    );
    let crate::run::Runtimes { servers, clients } =
        crate::run::Runtimes::build(args.server_threads)?;
    let temp = tempfile::tempdir_in(".").context("temporary data directory")?;
    let dir = args.data_dir.clone().unwrap_or(temp.path().to_path_buf());
    let mut config = crate::run::engine_config(dir)?;
    config.engine.max_in_flight_per_event = 1_000_000;
    println!("machine: {}", machine());
    println!(
        "command: boxoffice-bench check-in --tickets {} --concurrency {} --connections {} --gates {}",
        args.tickets, args.concurrency, args.connections, args.gates
    );
    let running = servers.block_on(server::serve::start(&config))?;
    let grpc = running.grpc_addr;
    let engine = running.engine().clone();
    let result = clients.block_on(async {
        let event =
            crate::payments::create_ga_event(grpc, "Check-in bench", args.tickets, PER_ORDER)
                .await?;
        let started = Instant::now();
        let tokens = issue(grpc, &engine, &event, &args).await?;
        println!(
            "issued {} tickets in {:.2} s",
            tokens.len(),
            started.elapsed().as_secs_f64()
        );
        scan_all(grpc, &event, tokens, &args).await
    });
    servers.block_on(running.stop())?;
    result
}

/// Buys every ticket over gRPC and pays each order in process; the tokens.
async fn issue(
    grpc: SocketAddr,
    engine: &Arc<engine::Engine>,
    event: &str,
    args: &CheckInArgs,
) -> Result<Vec<String>> {
    let event_id = server::convert::event_id(event).map_err(|e| anyhow::anyhow!(e.message))?;
    let orders = args.tickets / PER_ORDER;
    let next = Arc::new(AtomicUsize::new(0));
    let channel = connect(grpc).await?;
    let mut buyers = Vec::new();
    for _ in 0..64 {
        let (next, event, engine) = (next.clone(), event.to_string(), engine.clone());
        let mut client = v1::reservations_client::ReservationsClient::new(channel.clone());
        buyers.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= orders as usize {
                    return anyhow::Ok(tokens);
                }
                let order =
                    crate::payments::place(&mut client, &event, format!("fan-{n}"), PER_ORDER)
                        .await?;
                let result = PaymentResult {
                    order_id: OrderId(order.order_id.parse()?),
                    provider: "test".into(),
                    outcome: PaymentOutcome::Approved {
                        provider_ref: format!("bench-{n}"),
                        amount_minor: order.total_minor,
                        currency: Currency::parse("EUR").context("currency")?,
                    },
                };
                let (_, paid) = engine.event(event_id)?.settle_payment(result).await?;
                tokens.extend(paid.tickets.into_iter().map(|t| t.token));
            }
        }));
    }
    let mut tokens = Vec::with_capacity(args.tickets as usize);
    for buyer in buyers {
        tokens.extend(buyer.await??);
    }
    Ok(tokens)
}

/// One CheckIn per token, `--concurrency` in flight; prints the figures and audits.
async fn scan_all(
    grpc: SocketAddr,
    event: &str,
    tokens: Vec<String>,
    args: &CheckInArgs,
) -> Result<()> {
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..args.connections {
        channels.push(connect(grpc).await?);
    }
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut callers = Vec::new();
    for caller in 0..args.concurrency as usize {
        let mut client =
            v1::check_in_client::CheckInClient::new(channels[caller % channels.len()].clone());
        let (tokens, next, event) = (tokens.clone(), next.clone(), event.to_string());
        let gates = args.gates as usize;
        callers.push(tokio::spawn(async move {
            let mut latency = histogram(3);
            let mut refused = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(n) else {
                    return (latency, refused);
                };
                let sent = Instant::now();
                let answer = client
                    .check_in(with_key(v1::CheckInRequest {
                        event_id: event.clone(),
                        token: token.clone(),
                        gate_id: format!("gate-{}", n % gates),
                        scan_id: format!("scan-{n}"),
                    }))
                    .await;
                latency.saturating_record(sent.elapsed().as_micros() as u64);
                if answer.is_err() {
                    refused += 1;
                }
            }
        }));
    }
    let mut latency = histogram(3);
    let mut refused = 0;
    for caller in callers {
        let (h, r) = caller.await?;
        latency.add(&h)?;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1_000.0;
    println!(
        "scanned {} tickets in {elapsed:.2} s: {:.0} durable check-ins/s",
        tokens.len(),
        tokens.len() as f64 / elapsed
    );
    println!(
        "check-in latency: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        latency.max() as f64 / 1_000.0
    );
    let mut client = v1::check_in_client::CheckInClient::new(channels[0].clone());
    let stats = client
        .get_check_in_stats(with_key(v1::GetCheckInStatsRequest {
            event_id: event.to_string(),
        }))
        .await?
        .into_inner();
    ensure!(
        refused == 0 && stats.admitted == tokens.len() as u64,
        "audit failed: {refused} scans refused; {} of {} tickets counted in",
        stats.admitted,
        tokens.len()
    );
    println!(
        "audit: every ticket let in once; {} admitted over {} gates",
        stats.admitted,
        stats.gates.len()
    );
    Ok(())
}
