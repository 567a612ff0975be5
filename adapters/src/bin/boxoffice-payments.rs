//! `boxoffice-payments`: the payment adapter. `run` consumes boxoffice's order events, charges the
//! provider of each confirmed order and reports the outcome on the payments topic; `charges`
//! lists what its ledger holds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use adapters::payments::{Settings, WebhookSettings, ledger::Ledger};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxoffice-payments",
    version,
    about = "boxoffice's payment adapter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume order events and charge, until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print every charge and refund in the ledger, one per line, and exit.
    Charges {
        /// The adapter's data directory.
        #[arg(
            long,
            env = "BOXOFFICE_PAYMENTS_DATA_DIR",
            default_value = "./data-payments"
        )]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Bootstrap brokers, host:port[,host:port...].
    #[arg(long, env = "BOXOFFICE_PAYMENTS_BROKERS")]
    brokers: String,
    /// Where the ledger lives (what was charged, published, refunded).
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_DATA_DIR",
        default_value = "./data-payments"
    )]
    data_dir: PathBuf,
    /// boxoffice's order events (kafka.orders_topic).
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_ORDERS_TOPIC",
        default_value = "boxoffice.orders.v1"
    )]
    orders_topic: String,
    /// Where results go (boxoffice's kafka.payments_topic).
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_PAYMENTS_TOPIC",
        default_value = "boxoffice.payments.v1"
    )]
    payments_topic: String,
    /// The adapter's consumer group.
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_GROUP",
        default_value = "boxoffice-payments"
    )]
    group: String,
    /// This adapter's static member id in the group (KIP-345), one per running adapter; empty:
    /// derived from the data directory, which holds one adapter's ledger.
    #[arg(long, env = "BOXOFFICE_PAYMENTS_INSTANCE_ID", default_value = "")]
    instance_id: String,
    /// Orders charged at once, at most (1 ..= 100000); also the most messages per batch.
    #[arg(long, env = "BOXOFFICE_PAYMENTS_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_in_flight: u32,
    /// Provider of a payment reference whose scheme names none (`test`).
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_DEFAULT_PROVIDER",
        default_value = "test"
    )]
    default_provider: String,
    /// Failures in a row that open a provider's circuit breaker (1 ..= 1000).
    #[arg(long, env = "BOXOFFICE_PAYMENTS_BREAKER_THRESHOLD", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    breaker_threshold: u32,
    /// How long an open breaker holds calls back, ms (10 ..= 3600000).
    #[arg(long, env = "BOXOFFICE_PAYMENTS_BREAKER_COOL_DOWN_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    breaker_cool_down_ms: u64,
    /// Where the Wallet gRPC service (boxoffice.v1.Wallet) listens.
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_LISTEN",
        default_value = "127.0.0.1:50061"
    )]
    listen: SocketAddr,
    /// An API key of the Wallet service, `<sha256 hex>:<role>[,<role>]` with roles
    /// wallet-operator (top-ups) and wallet-reader (balances, history); repeatable. The SHA-256
    /// of a key is what `boxoffice hash-key <KEY>` prints. None: the service refuses every call.
    #[arg(long = "api-key", env = "BOXOFFICE_PAYMENTS_API_KEYS", value_delimiter = ' ',
          value_parser = |s: &str| adapters::api_keys::ApiKey::parse(s, adapters::payments::wallet_api::ROLES))]
    api_keys: Vec<adapters::api_keys::ApiKey>,
    /// The webhook provider's API base URL (e.g. https://api.provider.example); unset: the
    /// `webhook` provider is off.
    #[arg(long, env = "BOXOFFICE_PAYMENTS_WEBHOOK_API")]
    webhook_api: Option<String>,
    /// The API key sent to the webhook provider (`Authorization: Bearer`).
    #[arg(long, env = "BOXOFFICE_PAYMENTS_WEBHOOK_API_KEY", default_value = "")]
    webhook_api_key: String,
    /// A secret that signs the provider's webhooks; repeatable (several during a rotation).
    #[arg(
        long = "webhook-secret",
        env = "BOXOFFICE_PAYMENTS_WEBHOOK_SECRETS",
        value_delimiter = ' '
    )]
    webhook_secrets: Vec<String>,
    /// How far a webhook signature's time may lie from now, s (1 ..= 3600).
    #[arg(long, env = "BOXOFFICE_PAYMENTS_WEBHOOK_TOLERANCE_S", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    webhook_tolerance_s: u64,
    /// Where the provider sends webhooks: POST http://ADDR/webhooks/payments.
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_WEBHOOK_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    webhook_listen: SocketAddr,
    /// A payment pending this long with no webhook is looked up at the provider, ms.
    #[arg(long, env = "BOXOFFICE_PAYMENTS_RECONCILE_AFTER_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    reconcile_after_ms: u64,
    /// How often pending payments are looked at, ms.
    #[arg(long, env = "BOXOFFICE_PAYMENTS_RECONCILE_EVERY_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    reconcile_every_ms: u64,
    /// Prometheus metrics at http://ADDR/metrics.
    #[arg(
        long,
        env = "BOXOFFICE_PAYMENTS_METRICS_LISTEN",
        default_value = "127.0.0.1:9465"
    )]
    metrics_listen: SocketAddr,
    /// Partitions of a topic this adapter finds missing and makes (1 ..= 10000); match
    /// boxoffice's kafka.orders_topic_partitions.
    #[arg(long, env = "BOXOFFICE_PAYMENTS_TOPIC_PARTITIONS", default_value_t = 6,
          value_parser = clap::value_parser!(i32).range(1..=10_000))]
    topic_partitions: i32,
    /// Replicas of a topic this adapter finds missing and makes (1 ..= 16); match boxoffice's
    /// kafka.orders_topic_replication.
    #[arg(long, env = "BOXOFFICE_PAYMENTS_TOPIC_REPLICATION", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=16))]
    topic_replication: i32,
    /// A librdkafka property for every client, KEY=VALUE (repeatable): TLS, SASL, ...
    #[arg(long = "kafka-property", value_parser = adapters::kafka_property)]
    properties: Vec<(String, String)>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    adapters::init_logging("BOXOFFICE_PAYMENTS_LOG");
    match cli.command {
        Command::Charges { data_dir } => {
            let ledger = Ledger::open(&data_dir.join("ledger"))?;
            for (order, charge) in ledger.charges()? {
                println!(
                    "charge order={order} event={} published={} result_bytes={}",
                    charge.event_id,
                    charge.published,
                    charge.result.len()
                );
            }
            for (key, refund) in ledger.refunds()? {
                println!(
                    "refund key={key} order={} provider={} reference={} amount_minor={}",
                    refund.order_id, refund.provider, refund.provider_ref, refund.amount_minor
                );
            }
            for (key, _) in ledger.provider_entries()? {
                println!("test-provider {key}");
            }
            Ok(())
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(run(*args))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = adapters::serve_metrics(args.metrics_listen).await?;
    let mut settings = Settings {
        brokers: args.brokers,
        orders_topic: args.orders_topic,
        payments_topic: args.payments_topic,
        group: args.group,
        instance_id: if args.instance_id.is_empty() {
            kafka::instance_id("payments", &args.data_dir)
        } else {
            args.instance_id
        },
        data_dir: args.data_dir,
        max_in_flight: args.max_in_flight as usize,
        default_provider: args.default_provider,
        breaker_threshold: args.breaker_threshold,
        breaker_cool_down: Duration::from_millis(args.breaker_cool_down_ms),
        properties: args.properties.into_iter().collect::<BTreeMap<_, _>>(),
        topics: adapters::TopicShape {
            partitions: args.topic_partitions,
            replication: args.topic_replication,
        },
        listen: args.listen,
        api_keys: args.api_keys,
        webhook: WebhookSettings {
            api: args.webhook_api,
            api_key: args.webhook_api_key,
            secrets: args.webhook_secrets,
            tolerance: Duration::from_secs(args.webhook_tolerance_s),
            listen: args.webhook_listen,
            reconcile_after: Duration::from_millis(args.reconcile_after_ms),
            reconcile_every: Duration::from_millis(args.reconcile_every_ms),
        },
    };
    settings.webhook.secrets.retain(|s| !s.is_empty());
    anyhow::ensure!(
        settings.webhook.api.is_none() || !settings.webhook.secrets.is_empty(),
        "--webhook-api needs at least one --webhook-secret"
    );
    anyhow::ensure!(
        settings
            .webhook
            .secrets
            .iter()
            .all(|s| s.len() >= adapters::payments::webhook::MIN_SECRET_BYTES),
        "a --webhook-secret must be at least {} bytes",
        adapters::payments::webhook::MIN_SECRET_BYTES
    );
    let stop = adapters::stop_on_signal();
    let data_dir = settings.data_dir.clone();
    adapters::payments::run(settings, stop, move |grpc, webhooks| {
        let webhooks = webhooks.map_or("off".to_string(), |w| format!("http://{w}/webhooks/payments"));
        println!(
            "boxoffice-payments running grpc={grpc} webhooks={webhooks} metrics=http://{metrics}/metrics data_dir={}",
            data_dir.display()
        );
    })
    .await
}
