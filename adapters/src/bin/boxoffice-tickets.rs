//! `boxoffice-tickets`: the ticket-file adapter. `run` consumes boxoffice's order events, renders
//! one PDF per paid order and publishes where it is; `files` lists what it rendered and `parked`
//! what it could not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use adapters::files::{Bucket, Files, S3Settings};
use adapters::tickets::render::Paper;
use adapters::tickets::store::Store;
use adapters::tickets::{ROLES, Settings};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxoffice-tickets",
    version,
    about = "boxoffice's ticket-file adapter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume order events and render ticket files, until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print every rendered file, one per line, and exit.
    Files(Dirs),
    /// Print every order that could not be rendered, with why, and exit. A restart of `run`
    /// tries them again.
    Parked(Dirs),
}

#[derive(clap::Args)]
struct Dirs {
    /// The adapter's data directory.
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_DATA_DIR",
        default_value = "./data-tickets"
    )]
    data_dir: PathBuf,
    /// Where the PDF files go, unless --files-s3-bucket; default `<data-dir>/files`.
    #[arg(long, env = "BOXOFFICE_TICKETS_FILES_DIR")]
    files_dir: Option<PathBuf>,
}

impl Dirs {
    fn files(&self) -> PathBuf {
        self.files_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("files"))
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// Bootstrap brokers, host:port[,host:port...].
    #[arg(long, env = "BOXOFFICE_TICKETS_BROKERS")]
    brokers: String,
    #[command(flatten)]
    dirs: Dirs,
    /// boxoffice's order events (kafka.orders_topic).
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_ORDERS_TOPIC",
        default_value = "boxoffice.orders.v1"
    )]
    orders_topic: String,
    /// Where `TicketsRendered` go (the email adapter reads them).
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_TICKETS_TOPIC",
        default_value = "boxoffice.tickets.v1"
    )]
    tickets_topic: String,
    /// The adapter's consumer group.
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_GROUP",
        default_value = "boxoffice-tickets"
    )]
    group: String,
    /// This adapter's static member id in the group, one per running adapter; empty: derived
    /// from the data directory.
    #[arg(long, env = "BOXOFFICE_TICKETS_INSTANCE_ID", default_value = "")]
    instance_id: String,
    /// Paper size of the files: a4 or letter.
    #[arg(long, env = "BOXOFFICE_TICKETS_PAPER", default_value = "a4", value_parser = paper)]
    paper: Paper,
    /// Renders running at once, at most (1 ..= 64); each takes a thread of the blocking pool.
    #[arg(long, env = "BOXOFFICE_TICKETS_MAX_PARALLEL_RENDERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    max_parallel_renders: u32,
    /// Order events taken per batch, at most (1 ..= 10000); offsets are committed per batch.
    #[arg(long, env = "BOXOFFICE_TICKETS_MAX_BATCH", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_batch: u32,
    /// Where the TicketFiles gRPC service (boxoffice.v1.TicketFiles) listens.
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_LISTEN",
        default_value = "127.0.0.1:50062"
    )]
    listen: SocketAddr,
    /// An API key of the TicketFiles service, `<sha256 hex>:storefront`; repeatable (space
    /// separated in the environment). The SHA-256 of a key is what `boxoffice hash-key <KEY>`
    /// prints. None: the service refuses every call.
    #[arg(long = "api-key", env = "BOXOFFICE_TICKETS_API_KEYS", value_delimiter = ' ',
          value_parser = |s: &str| adapters::api_keys::ApiKey::parse(s, ROLES))]
    api_keys: Vec<adapters::api_keys::ApiKey>,
    /// Prometheus metrics at http://ADDR/metrics.
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_METRICS_LISTEN",
        default_value = "127.0.0.1:9466"
    )]
    metrics_listen: SocketAddr,
    /// Partitions of a topic this adapter finds missing and makes (1 ..= 10000); match
    /// boxoffice's kafka.orders_topic_partitions.
    #[arg(long, env = "BOXOFFICE_TICKETS_TOPIC_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    topic_partitions: i32,
    /// Replicas of a topic this adapter finds missing and makes (1 ..= 16); match boxoffice's
    /// kafka.orders_topic_replication.
    #[arg(long, env = "BOXOFFICE_TICKETS_TOPIC_REPLICATION", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=16))]
    topic_replication: i32,
    /// A librdkafka property for every client, KEY=VALUE (repeatable): TLS, SASL, ...
    #[arg(long = "kafka-property", value_parser = adapters::kafka_property)]
    properties: Vec<(String, String)>,
    /// Keep the files in this bucket of an S3-compatible store instead of --files-dir; checked
    /// at start. Credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the other
    /// standard AWS variables).
    #[arg(long, env = "BOXOFFICE_TICKETS_FILES_S3_BUCKET")]
    files_s3_bucket: Option<String>,
    /// Put before `<event id>/<order id>.pdf` in every key, e.g. `tickets/`.
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_FILES_S3_PREFIX",
        default_value = "",
        requires = "files_s3_bucket"
    )]
    files_s3_prefix: String,
    /// The URL of an S3-compatible server (plain http only on a loopback address); unset: AWS
    /// (or AWS_ENDPOINT).
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_FILES_S3_ENDPOINT",
        requires = "files_s3_bucket"
    )]
    files_s3_endpoint: Option<String>,
    /// The bucket's region; unset: AWS_REGION, else us-east-1.
    #[arg(
        long,
        env = "BOXOFFICE_TICKETS_FILES_S3_REGION",
        requires = "files_s3_bucket"
    )]
    files_s3_region: Option<String>,
}

fn paper(text: &str) -> Result<Paper, String> {
    match text.to_ascii_lowercase().as_str() {
        "a4" => Ok(Paper::A4),
        "letter" => Ok(Paper::Letter),
        other => Err(format!("paper `{other}` is not a4 or letter")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    adapters::init_logging("BOXOFFICE_TICKETS_LOG");
    match cli.command {
        Command::Files(dirs) => {
            let store = Store::open(&dirs.data_dir.join("state"))?;
            for (order, r) in store.all_rendered()? {
                // `path=` an absolute path, or an `s3://` URL.
                println!(
                    "file order={order} event={} tickets={} bytes={} sha256={} published={} path={}",
                    r.event_id, r.tickets, r.bytes, r.sha256, r.published, r.location
                );
            }
            Ok(())
        }
        Command::Parked(dirs) => {
            let store = Store::open(&dirs.data_dir.join("state"))?;
            for (order, p) in store.parked()? {
                println!(
                    "parked order={order} event={} at_ms={} why={}",
                    p.event_id, p.at_ms, p.why
                );
            }
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Runtime::new()?.block_on(run(*args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let bucket = Bucket::connect_from_env(args.files_s3_bucket.map(|bucket| S3Settings {
        bucket,
        prefix: args.files_s3_prefix,
        endpoint: args.files_s3_endpoint,
        region: args.files_s3_region,
    }))
    .await?;
    let files = Arc::new(Files::new(Some(&args.dirs.files()), bucket)?);
    let metrics = adapters::serve_metrics(args.metrics_listen).await?;
    let settings = Settings {
        brokers: args.brokers,
        orders_topic: args.orders_topic,
        tickets_topic: args.tickets_topic,
        group: args.group,
        instance_id: if args.instance_id.is_empty() {
            kafka::instance_id("tickets", &args.dirs.data_dir)
        } else {
            args.instance_id
        },
        files,
        data_dir: args.dirs.data_dir,
        paper: args.paper,
        max_parallel_renders: args.max_parallel_renders as usize,
        max_batch: args.max_batch as usize,
        properties: args.properties.into_iter().collect::<BTreeMap<_, _>>(),
        topics: adapters::TopicShape {
            partitions: args.topic_partitions,
            replication: args.topic_replication,
        },
        listen: args.listen,
        api_keys: args.api_keys,
    };
    let stop = adapters::stop_on_signal();
    let (data_dir, files) = (settings.data_dir.clone(), settings.files.target());
    adapters::tickets::run(settings, stop, move |grpc| {
        println!(
            "boxoffice-tickets running grpc={grpc} metrics=http://{metrics}/metrics data_dir={} files={files}",
            data_dir.display(),
        );
    })
    .await
}
