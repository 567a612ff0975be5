//! `boxoffice-bench run`: one scenario against one or more targets, one after another with the
//! same seed, then the figures side by side, the audits, and the JSON and HTML reports. A failed
//! audit fails the command after the reports are written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::baseline::{self, Postgres, Redis};
use crate::in_process::machine;
use crate::load;
use crate::order_events::{self, OrderEventTap};
use crate::report;
use crate::results::{ReportFile, RunReport};
use crate::scenario::{BUILT_IN, Load, Scenario};
use crate::target::{Connection, EngineTarget, GrpcTarget, TARGET_HELP, Target, TargetSpec};

#[derive(clap::Args)]
pub struct RunArgs {
    /// A built-in scenario (hot-drop, throughput, many-events, seat-map, availability) or a
    /// scenario TOML file (see bench/scenarios/).
    #[arg(long, default_value = "hot-drop")]
    scenario: String,
    /// A target; repeat to measure several side by side: noop, noop-stream, embedded,
    /// embedded-stream, engine, grpc=http[s]://HOST:PORT, grpc-stream=http[s]://HOST:PORT,
    /// postgres=postgres://USER@HOST:PORT/DB, redis=redis://HOST:PORT.
    #[arg(long = "target", value_name = "TARGET", default_value = "embedded")]
    targets: Vec<TargetSpec>,
    /// Overrides the scenario's measured duration.
    #[arg(long)]
    duration_seconds: Option<f64>,
    /// Overrides the scenario's warm-up.
    #[arg(long)]
    warmup_seconds: Option<f64>,
    /// Stop after this many measured visits.
    #[arg(long)]
    requests: Option<u64>,
    /// Overrides the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Closed loop with this many shoppers (overrides the scenario's load).
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<u32>,
    /// Open loop at this many visits per second (overrides the scenario's load).
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: visits running at once, at most.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: u32,
    /// API key for gRPC targets (a storefront and admin key; the development key by default).
    #[arg(long, env = "BOXOFFICE_BENCH_API_KEY", default_value = config::DEV_API_KEY, hide_env_values = true)]
    api_key: String,
    /// For `https://` gRPC targets: a PEM file of the CA that signed the server's certificate
    /// (default: the system's trusted roots).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// For `https://` gRPC targets: the name the server's certificate must carry (default: the
    /// address's host).
    #[arg(long)]
    tls_domain: Option<String>,
    /// Connections per gRPC target (each carries one ReserveStream in stream mode).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Connections to Redis: like application workers, each carries one script at a time.
    #[arg(long, default_value_t = 64)]
    redis_connections: usize,
    /// Let every shopper's script share the Redis connections (pipelining), so Redis fsyncs many
    /// at once: the strongest Redis setup, not how a pool of application workers talks to it.
    #[arg(long)]
    redis_pipelined: bool,
    /// Connections to PostgreSQL: like application workers, each carries one transaction at a
    /// time.
    #[arg(long, default_value_t = 64)]
    pg_connections: usize,
    /// Worker threads of the runtime that hosts the servers and the engine started in this
    /// process (embedded, noop, engine targets).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Where in-process targets keep their sled files (default: a temporary directory here).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Kafka bootstrap brokers for the `+relay` targets (`scripts/broker.sh start DIR` prints
    /// one); each such target publishes to a topic of its own, which a consumer in this process
    /// follows to time confirm-to-consumer.
    #[arg(long, value_name = "HOST:PORT")]
    kafka: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// The engine's configuration for in-process targets: limits wide enough for any scenario.
pub fn engine_config(data_dir: PathBuf) -> Result<config::Config> {
    let mut config = config::Config::default();
    config.storage.data_dir = data_dir;
    config.api.listen = "127.0.0.1:0".parse()?;
    config.metrics.listen = "127.0.0.1:0".parse()?;
    config.limits.max_capacity_per_tier = 1_000_000_000;
    config.limits.max_open_holds_per_event = 100_000_000;
    config.limits.max_open_holds_per_customer = 1_000_000;
    config.engine.max_in_flight_per_event = 1_000_000;
    Ok(config)
}

fn apply_overrides(scenario: &mut Scenario, args: &RunArgs) -> Result<()> {
    if let Some(d) = args.duration_seconds {
        scenario.duration_seconds = d;
    }
    if let Some(w) = args.warmup_seconds {
        scenario.warmup_seconds = w;
    }
    if args.requests.is_some() {
        scenario.requests = args.requests;
    }
    if let Some(s) = args.seed {
        scenario.seed = s;
    }
    if let Some(c) = args.concurrency {
        scenario.load = Load::Closed { concurrency: c };
    }
    if let Some(r) = args.rate {
        scenario.load = Load::Open {
            rate_per_second: r,
            max_in_flight: args.max_in_flight,
        };
    }
    scenario
        .validate()
        .context("after the command line's overrides")
}

/// What a target started in this process needs stopped after its run.
enum Started {
    Nothing,
    Server(server::Running, Option<tokio::task::JoinHandle<()>>),
    Noop(watch::Sender<bool>, tokio::task::JoinHandle<()>),
    Engine(Arc<engine::Engine>),
}

/// The servers' runtime (`server_threads` workers) and the load generator's, apart so that one
/// never steals the other's threads.
pub(crate) struct Runtimes {
    pub servers: Runtime,
    pub clients: Runtime,
}

impl Runtimes {
    pub fn build(server_threads: usize) -> Result<Runtimes> {
        Ok(Runtimes {
            servers: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(server_threads.max(1))
                .thread_name("bench-server")
                .enable_all()
                .build()?,
            clients: tokio::runtime::Builder::new_multi_thread()
                .thread_name("bench-client")
                .enable_all()
                .build()?,
        })
    }
}

fn data_dir_for(args: &RunArgs, n: usize, temp: &mut Vec<tempfile::TempDir>) -> Result<PathBuf> {
    match &args.data_dir {
        Some(dir) => {
            let dir = dir.join(format!("target-{n}"));
            std::fs::create_dir_all(&dir)?;
            Ok(dir)
        }
        None => {
            let dir = tempfile::tempdir_in(".").context("temporary data directory")?;
            let path = dir.path().to_path_buf();
            temp.push(dir);
            Ok(path)
        }
    }
}

fn start(
    spec: &TargetSpec,
    n: usize,
    args: &RunArgs,
    rt: &Runtimes,
    temp: &mut Vec<tempfile::TempDir>,
) -> Result<(Target, Started)> {
    let how = Connection {
        connections: args.connections,
        api_key: args.api_key.clone(),
        tls_ca_pem: match &args.tls_ca {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("read --tls-ca {}", path.display()))?,
            ),
            None => None,
        },
        tls_domain: args.tls_domain.clone(),
    };
    Ok(match spec {
        TargetSpec::Noop { stream } => {
            let (listener, addr) = rt.servers.block_on(server::noop::bind())?;
            let (stop, stopped) = watch::channel(false);
            let serving = rt.servers.spawn(async move {
                let _ = server::noop::serve(listener, stopped).await;
            });
            let target = rt.clients.block_on(GrpcTarget::connect(
                &format!("http://{addr}"),
                *stream,
                true,
                &how,
            ))?;
            (Target::Grpc(target), Started::Noop(stop, serving))
        }
        TargetSpec::Embedded { stream, relay } => {
            let mut config = engine_config(data_dir_for(args, n, temp)?)?;
            let mut consumer = None;
            let mut tap = None;
            if *relay {
                let Some(brokers) = &args.kafka else {
                    bail!(
                        "`{}` publishes order events: give --kafka HOST:PORT",
                        spec.label()
                    );
                };
                let k = &mut config.kafka;
                k.brokers = brokers.clone();
                k.orders_topic = format!("boxoffice.bench.{}", uuid::Uuid::new_v4().simple());
                // The topic exists before the consumer is assigned its partitions.
                rt.clients
                    .block_on(kafka::ensure_topic(
                        &k.brokers,
                        &k.properties,
                        &k.orders_topic,
                        k.orders_topic_partitions as i32,
                        k.orders_topic_replication as i32,
                    ))
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("the order-event topic on {brokers}"))?;
                let t = Arc::new(OrderEventTap::default());
                consumer = Some(rt.clients.spawn(order_events::follow(
                    k.brokers.clone(),
                    k.orders_topic.clone(),
                    k.orders_topic_partitions as i32,
                    t.clone(),
                )));
                tap = Some(t);
            }
            let running = rt.servers.block_on(server::start(&config))?;
            let mut target = rt.clients.block_on(GrpcTarget::connect(
                &format!("http://{}", running.grpc_addr),
                *stream,
                false,
                &how,
            ))?;
            target.order_events = tap;
            (Target::Grpc(target), Started::Server(running, consumer))
        }
        TargetSpec::Grpc { url, stream } => (
            Target::Grpc(
                rt.clients
                    .block_on(GrpcTarget::connect(url, *stream, false, &how))?,
            ),
            Started::Nothing,
        ),
        TargetSpec::Engine => {
            let config = engine_config(data_dir_for(args, n, temp)?)?;
            let engine = Arc::new(rt.servers.block_on(engine::Engine::open(&config))?);
            (
                Target::Engine(EngineTarget {
                    engine: engine.clone(),
                }),
                Started::Engine(engine),
            )
        }
        TargetSpec::Postgres { url } => (
            Target::Postgres(
                rt.clients
                    .block_on(Postgres::connect(url, args.pg_connections))?,
            ),
            Started::Nothing,
        ),
        TargetSpec::Redis { url } => (
            Target::Redis(rt.clients.block_on(Redis::connect(
                url,
                args.redis_connections,
                args.redis_pipelined,
            ))?),
            Started::Nothing,
        ),
    })
}

fn stop(started: Started, rt: &Runtimes) -> Result<()> {
    match started {
        Started::Nothing => Ok(()),
        Started::Server(running, consumer) => {
            if let Some(consumer) = consumer {
                consumer.abort();
            }
            rt.servers.block_on(running.stop())
        }
        Started::Noop(stop, serving) => {
            stop.send_replace(true);
            let _ = rt.servers.block_on(serving);
            Ok(())
        }
        Started::Engine(engine) => {
            rt.servers.block_on(engine.shutdown());
            Ok(())
        }
    }
}

fn run_one(
    spec: &TargetSpec,
    n: usize,
    scenario: &Scenario,
    args: &RunArgs,
    rt: &Runtimes,
    temp: &mut Vec<tempfile::TempDir>,
) -> Result<RunReport> {
    let label = spec.label();
    let (target, started) =
        start(spec, n, args, rt, temp).with_context(|| format!("start {label}"))?;
    let target = Arc::new(target);
    let engine = match &started {
        Started::Server(running, _) => Some(running.engine().clone()),
        Started::Engine(engine) => Some(engine.clone()),
        Started::Nothing | Started::Noop(..) => None,
    };
    // The baselines expire holds as the platforms they model do: a job every second.
    let expiry_job = target.has_expiry_job().then(|| {
        let target = target.clone();
        rt.clients.spawn(async move {
            loop {
                tokio::time::sleep(baseline::SWEEP_INTERVAL).await;
                if let Err(e) = target.settle().await {
                    eprintln!("expiry job: {e:#}");
                }
            }
        })
    });
    let result = rt.clients.block_on(async {
        target.check_scenario(scenario)?;
        let events = target
            .create_events(scenario)
            .await
            .context("create the scenario's events")?;
        load::drive(&label, target.clone(), scenario, events).await
    });
    if let Some(job) = expiry_job {
        job.abort();
    }
    let result = result.map(|mut report| {
        if let Some(engine) = engine {
            report.notes.push(commit_note(engine.commit_stats()));
        }
        report
    });
    drop(target);
    // Stop what was started even when the run failed, then report the failure.
    stop(started, rt).with_context(|| format!("stop {label}"))?;
    result.with_context(|| format!("run against {label}"))
}

/// What the group commit did over the whole run (warm-up, drain and audit included): how many
/// rounds, how much each wrote, how long a round's writes and flush took, and the checkpoints
/// between rounds.
fn commit_note(stats: &engine::commit::CommitStats) -> String {
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    let rounds = load(&stats.flushes).max(1) as f64;
    format!(
        "group commit: {} rounds, per round {:.0} records, {:.1} segments, {:.1} outbox entries, \
         {:.2} ms writing and flushing (max {:.1} ms); {} checkpoints, {:.1} ms each (max {:.1} ms)",
        load(&stats.flushes),
        load(&stats.records) as f64 / rounds,
        load(&stats.segments) as f64 / rounds,
        load(&stats.outbox_written) as f64 / rounds,
        load(&stats.flush_nanos_total) as f64 / rounds / 1e6,
        load(&stats.flush_nanos_max) as f64 / 1e6,
        load(&stats.checkpoints),
        load(&stats.checkpoint_nanos_total) as f64 / load(&stats.checkpoints).max(1) as f64 / 1e6,
        load(&stats.checkpoint_nanos_max) as f64 / 1e6,
    )
}

pub fn run(args: RunArgs) -> Result<()> {
    let mut scenario = Scenario::load(&args.scenario).with_context(|| {
        format!(
            "scenario `{}`; built in: {}",
            args.scenario,
            BUILT_IN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    apply_overrides(&mut scenario, &args)?;
    if args.targets.is_empty() {
        bail!("no target; use {TARGET_HELP}");
    }
    let rt = Runtimes::build(args.server_threads)?;
    let machine = machine();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    println!("machine: {machine}");
    println!("scenario {}: {}", scenario.name, scenario.description);
    let mut temp = Vec::new();
    let mut runs = Vec::new();
    for (n, spec) in args.targets.iter().enumerate() {
        let run = run_one(spec, n, &scenario, &args, &rt, &mut temp)?;
        report::print_run(&run);
        runs.push(run);
    }
    report::print_comparisons(&runs);
    let file = ReportFile {
        tool: "boxoffice-bench".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        machine,
        command,
        created_at_unix_seconds: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs(),
        runs,
    };
    if let Some(path) = &args.json {
        report::write_json(path, &file)?;
        println!("json report: {}", path.display());
    }
    if let Some(path) = &args.html {
        report::write_html(path, std::slice::from_ref(&file))?;
        println!("html report: {}", path.display());
    }
    let failed: Vec<_> = file
        .runs
        .iter()
        .filter(|r| !r.audit.passed)
        .map(|r| r.target.clone())
        .collect();
    if !failed.is_empty() {
        bail!("AUDIT FAILED for {}", failed.join(", "));
    }
    Ok(())
}
