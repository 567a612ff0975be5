//! `boxoffice-email`: the email adapter. `run` sends each paid order's tickets once they are
//! rendered, and a notice when an order is cancelled or refunded; `sends` lists its ledger.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use adapters::files::{Bucket, Files, S3Settings};
use adapters::mail::compose::Templates;
use adapters::mail::ledger::Ledger;
use adapters::mail::{ROLES, Security, Settings, SmtpSettings};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "boxoffice-email", version, about = "boxoffice's email adapter")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume ticket files and order events and send emails, until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print every send in the ledger, one per line, and exit (the adapter must be stopped; a
    /// running one answers the same through its Mail service).
    Sends {
        /// The adapter's data directory.
        #[arg(long, env = "BOXOFFICE_EMAIL_DATA_DIR", default_value = "./data-email")]
        data_dir: PathBuf,
    },
    /// Check the templates (the built-in set overlaid with DIR) and exit.
    CheckTemplates {
        #[arg(long, env = "BOXOFFICE_EMAIL_TEMPLATES_DIR")]
        templates_dir: Option<PathBuf>,
        #[arg(long, env = "BOXOFFICE_EMAIL_DEFAULT_LANGUAGE", default_value = "en")]
        default_language: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Bootstrap brokers, host:port[,host:port...].
    #[arg(long, env = "BOXOFFICE_EMAIL_BROKERS")]
    brokers: String,
    /// Where the ledger lives (every send, and what it was made from).
    #[arg(long, env = "BOXOFFICE_EMAIL_DATA_DIR", default_value = "./data-email")]
    data_dir: PathBuf,
    /// boxoffice's order events (kafka.orders_topic): cancellations and refunds.
    #[arg(
        long,
        env = "BOXOFFICE_EMAIL_ORDERS_TOPIC",
        default_value = "boxoffice.orders.v1"
    )]
    orders_topic: String,
    /// The ticket-file adapter's announcements.
    #[arg(
        long,
        env = "BOXOFFICE_EMAIL_TICKETS_TOPIC",
        default_value = "boxoffice.tickets.v1"
    )]
    tickets_topic: String,
    /// The adapter's consumer group.
    #[arg(long, env = "BOXOFFICE_EMAIL_GROUP", default_value = "boxoffice-email")]
    group: String,
    /// This adapter's static member id in the group, one per running adapter; empty: derived
    /// from the data directory.
    #[arg(long, env = "BOXOFFICE_EMAIL_INSTANCE_ID", default_value = "")]
    instance_id: String,
    /// The SMTP server's host.
    #[arg(long, env = "BOXOFFICE_EMAIL_SMTP_HOST", default_value = "127.0.0.1")]
    smtp_host: String,
    /// The SMTP server's port.
    #[arg(long, env = "BOXOFFICE_EMAIL_SMTP_PORT", default_value_t = 587)]
    smtp_port: u16,
    /// starttls (upgrade, refused if the server cannot), tls (SMTPS) or none (plain text: a
    /// relay on this host or a test server only).
    #[arg(long, env = "BOXOFFICE_EMAIL_SMTP_SECURITY", default_value = "starttls", value_parser = security)]
    smtp_security: Security,
    /// A PEM file of certificates to trust for the SMTP server's, beside the system's roots (a
    /// relay with a private CA); only with starttls or tls.
    #[arg(long, env = "BOXOFFICE_EMAIL_SMTP_CA_FILE")]
    smtp_ca_file: Option<PathBuf>,
    /// SMTP user; empty: no authentication.
    #[arg(long, env = "BOXOFFICE_EMAIL_SMTP_USERNAME", default_value = "")]
    smtp_username: String,
    /// SMTP password (prefer the environment variable to the flag).
    #[arg(
        long,
        env = "BOXOFFICE_EMAIL_SMTP_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    smtp_password: String,
    /// One SMTP conversation at most, ms (100 ..= 600000).
    #[arg(long, env = "BOXOFFICE_EMAIL_SMTP_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    smtp_timeout_ms: u64,
    /// The sender, e.g. `Box office <tickets@example.com>`.
    #[arg(long, env = "BOXOFFICE_EMAIL_FROM")]
    from: String,
    /// A directory of templates, `<language>/<kind>.{subject,txt,html}` with kinds tickets,
    /// cancelled, unpaid, refunded; each file replaces the built-in one. Unset: built-in only.
    #[arg(long, env = "BOXOFFICE_EMAIL_TEMPLATES_DIR")]
    templates_dir: Option<PathBuf>,
    /// The language of a contact without one, or with one that has no templates.
    #[arg(long, env = "BOXOFFICE_EMAIL_DEFAULT_LANGUAGE", default_value = "en")]
    default_language: String,
    /// Emails handed to the SMTP server at once, at most (1 ..= 256).
    #[arg(long, env = "BOXOFFICE_EMAIL_MAX_PARALLEL_SENDS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    max_parallel_sends: u32,
    /// Attempts at one email before it is parked (1 ..= 100).
    #[arg(long, env = "BOXOFFICE_EMAIL_MAX_ATTEMPTS", default_value_t = 6,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// The first retry's wait, ms; each next doubles, up to a minute (10 ..= 60000).
    #[arg(long, env = "BOXOFFICE_EMAIL_RETRY_BASE_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    retry_base_ms: u64,
    /// Messages taken per batch, at most (1 ..= 10000); offsets are committed per batch.
    #[arg(long, env = "BOXOFFICE_EMAIL_MAX_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_batch: u32,
    /// Where the Mail gRPC service (boxoffice.v1.Mail) listens.
    #[arg(
        long,
        env = "BOXOFFICE_EMAIL_LISTEN",
        default_value = "127.0.0.1:50063"
    )]
    listen: SocketAddr,
    /// An API key of the Mail service, `<sha256 hex>:mail-operator`; repeatable (space separated
    /// in the environment). None: the service refuses every call.
    #[arg(long = "api-key", env = "BOXOFFICE_EMAIL_API_KEYS", value_delimiter = ' ',
          value_parser = |s: &str| adapters::api_keys::ApiKey::parse(s, ROLES))]
    api_keys: Vec<adapters::api_keys::ApiKey>,
    /// Prometheus metrics at http://ADDR/metrics.
    #[arg(
        long,
        env = "BOXOFFICE_EMAIL_METRICS_LISTEN",
        default_value = "127.0.0.1:9467"
    )]
    metrics_listen: SocketAddr,
    /// Partitions of a topic this adapter finds missing and makes (1 ..= 10000); match
    /// boxoffice's kafka.orders_topic_partitions.
    #[arg(long, env = "BOXOFFICE_EMAIL_TOPIC_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    topic_partitions: i32,
    /// Replicas of a topic this adapter finds missing and makes (1 ..= 16); match boxoffice's
    /// kafka.orders_topic_replication.
    #[arg(long, env = "BOXOFFICE_EMAIL_TOPIC_REPLICATION", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=16))]
    topic_replication: i32,
    /// A librdkafka property for every client, KEY=VALUE (repeatable): TLS, SASL, ...
    #[arg(long = "kafka-property", value_parser = adapters::kafka_property)]
    properties: Vec<(String, String)>,
    /// The bucket of an S3-compatible store the ticket-file adapter keeps its files in
    /// (its --files-s3-bucket), checked at start; an `s3://` location in another bucket is
    /// parked. Credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the other standard
    /// AWS variables). `file://` locations are read from this host's disk either way.
    #[arg(long, env = "BOXOFFICE_EMAIL_FILES_S3_BUCKET")]
    files_s3_bucket: Option<String>,
    /// The URL of an S3-compatible server (plain http only on a loopback address); unset: AWS
    /// (or AWS_ENDPOINT).
    #[arg(
        long,
        env = "BOXOFFICE_EMAIL_FILES_S3_ENDPOINT",
        requires = "files_s3_bucket"
    )]
    files_s3_endpoint: Option<String>,
    /// The bucket's region; unset: AWS_REGION, else us-east-1.
    #[arg(
        long,
        env = "BOXOFFICE_EMAIL_FILES_S3_REGION",
        requires = "files_s3_bucket"
    )]
    files_s3_region: Option<String>,
}

fn security(text: &str) -> Result<Security, String> {
    match text.to_ascii_lowercase().as_str() {
        "none" => Ok(Security::None),
        "starttls" => Ok(Security::StartTls),
        "tls" => Ok(Security::Tls),
        other => Err(format!("`{other}` is not starttls, tls or none")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    adapters::init_logging("BOXOFFICE_EMAIL_LOG");
    match cli.command {
        Command::Sends { data_dir } => {
            let ledger = Ledger::open(&data_dir.join("state"))?;
            let all = ledger.sends_in(
                &[
                    adapters::mail::ledger::State::Sending,
                    adapters::mail::ledger::State::Retrying,
                    adapters::mail::ledger::State::Sent,
                    adapters::mail::ledger::State::Parked,
                    adapters::mail::ledger::State::Unknown,
                ],
                usize::MAX,
            )?;
            for s in all {
                println!(
                    "send order={} kind={} to={} state={:?} attempts={} detail={}",
                    s.order_id, s.kind, s.to, s.state, s.attempts, s.detail
                );
            }
            Ok(())
        }
        Command::CheckTemplates {
            templates_dir,
            default_language,
        } => {
            Templates::load(templates_dir.as_deref(), &default_language)
                .map_err(anyhow::Error::msg)?;
            println!("templates ok");
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Runtime::new()?.block_on(run(*args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let templates = Templates::load(args.templates_dir.as_deref(), &args.default_language)
        .map_err(anyhow::Error::msg)?;
    let from = args
        .from
        .parse()
        .map_err(|e| anyhow::anyhow!("--from `{}` is not an address: {e}", args.from))?;
    // The start check lists the bucket's top: locations name whole keys, so no prefix is needed.
    let bucket = Bucket::connect_from_env(args.files_s3_bucket.map(|bucket| S3Settings {
        bucket,
        prefix: String::new(),
        endpoint: args.files_s3_endpoint,
        region: args.files_s3_region,
    }))
    .await?;
    let files = Arc::new(Files::new(None, bucket)?);
    let metrics = adapters::serve_metrics(args.metrics_listen).await?;
    let settings = Settings {
        brokers: args.brokers,
        orders_topic: args.orders_topic,
        tickets_topic: args.tickets_topic,
        group: args.group,
        instance_id: if args.instance_id.is_empty() {
            kafka::instance_id("email", &args.data_dir)
        } else {
            args.instance_id
        },
        data_dir: args.data_dir,
        properties: args.properties.into_iter().collect::<BTreeMap<_, _>>(),
        topics: adapters::TopicShape {
            partitions: args.topic_partitions,
            replication: args.topic_replication,
        },
        smtp: SmtpSettings {
            host: args.smtp_host,
            port: args.smtp_port,
            security: args.smtp_security,
            extra_roots: match &args.smtp_ca_file {
                None => None,
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| anyhow::anyhow!("--smtp-ca-file {}: {e}", path.display()))?,
                ),
            },
            username: args.smtp_username,
            password: args.smtp_password,
            timeout: Duration::from_millis(args.smtp_timeout_ms),
        },
        from,
        templates: Arc::new(templates),
        files,
        max_parallel_sends: args.max_parallel_sends as usize,
        max_attempts: args.max_attempts,
        retry_base: Duration::from_millis(args.retry_base_ms),
        max_batch: args.max_batch as usize,
        listen: args.listen,
        api_keys: args.api_keys,
    };
    let stop = adapters::stop_on_signal();
    let data_dir = settings.data_dir.clone();
    adapters::mail::run(settings, stop, move |grpc| {
        println!(
            "boxoffice-email running grpc={grpc} metrics=http://{metrics}/metrics data_dir={}",
            data_dir.display()
        );
    })
    .await
}
