//! boxoffice configuration: parsed once from a TOML file plus `BOXOFFICE_*` environment overrides into
//! one validated struct that the binaries pass down. Nothing else in the workspace reads the
//! environment or a config file.
//!
//! Every knob is documented in `config/boxoffice.toml`, whose values are the defaults below; a test
//! keeps the two equal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file read when no path is given, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/boxoffice.toml";
/// The environment variable that names the config file.
pub const CONFIG_PATH_ENV: &str = "BOXOFFICE_CONFIG";
/// Prefix of the environment overrides: `BOXOFFICE_<SECTION>__<KEY>=<value>`.
pub const ENV_PREFIX: &str = "BOXOFFICE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error(
        "environment variable {var} is not a config override: expected {ENV_PREFIX}<SECTION>__<KEY>, e.g. BOXOFFICE_LIMITS__MAX_ITEMS_PER_REQUEST"
    )]
    EnvName { var: String },
    #[error("config key `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// The whole configuration. Every section has defaults, so an empty file is a valid config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub storage: StorageConfig,
    pub engine: EngineConfig,
    pub limits: LimitsConfig,
    pub holds: HoldsConfig,
    pub orders: OrdersConfig,
    pub idempotency: IdempotencyConfig,
    pub api: ApiConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
}

/// The API key accepted, with every role, when `auth.keys` is empty: for trying the server out on
/// a laptop. The server prints it at start; configure keys for anything else.
pub const DEV_API_KEY: &str = "boxoffice-dev-key";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the sled database that holds the write-ahead log and snapshots.
    pub data_dir: PathBuf,
    /// An event writes a snapshot after this many log records; restart replays at most this many
    /// records per event on top of its latest snapshot.
    pub snapshot_every_records: u64,
    /// sled's page cache, in MiB.
    pub cache_capacity_mib: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            snapshot_every_records: 1_000_000,
            cache_capacity_mib: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// How long a caller waits for an event actor's answer before giving up with a timeout.
    pub call_timeout_ms: u64,
    /// Requests admitted but not yet answered, per event; past it a request is refused as overloaded
    /// at once. This bounds each actor's mailbox and the group-commit queue.
    pub max_in_flight_per_event: u32,
    /// Events the engine will hold; `CreateEvent` past it is refused.
    pub max_events: u32,
    /// Holds released by one expiry record at most; more due holds take several records.
    pub max_holds_per_expiry_record: u32,
    /// Memory for the state of every event together (seats, holds, orders, client keys, notes),
    /// MiB, as the engine accounts it. Past it new holds and new events are refused with
    /// `MEMORY_LIMIT`; confirms, releases and cancels still work.
    pub max_state_mib: u64,
    /// Events recovered at once at start.
    pub recovery_parallelism: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            call_timeout_ms: 5_000,
            max_in_flight_per_event: 65_536,
            max_events: 10_000,
            max_holds_per_expiry_record: 4_096,
            max_state_mib: 4_096,
            recovery_parallelism: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Items (tier lines, named-seat lists, best-available asks) in one reserve request.
    pub max_items_per_request: u32,
    /// Tickets (sum of quantities and named seats) in one reserve request.
    pub max_tickets_per_request: u32,
    /// Live holds per event.
    pub max_open_holds_per_event: u32,
    /// Live holds per customer per event.
    pub max_open_holds_per_customer: u32,
    /// Tiers per event.
    pub max_tiers_per_event: u32,
    /// Seats per event, over all seated tiers.
    pub max_seats_per_event: u32,
    /// General-admission capacity per tier.
    pub max_capacity_per_tier: u32,
    /// Sale windows per tier.
    pub max_sale_windows_per_tier: u32,
    /// Bytes in any one name, code, customer id, seat label, payment reference or idempotency key.
    pub max_string_bytes: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_items_per_request: 16,
            max_tickets_per_request: 64,
            max_open_holds_per_event: 1_000_000,
            max_open_holds_per_customer: 8,
            max_tiers_per_event: 64,
            max_seats_per_event: 200_000,
            max_capacity_per_tier: 10_000_000,
            max_sale_windows_per_tier: 16,
            max_string_bytes: 128,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoldsConfig {
    /// Shortest hold TTL a request or an event may ask for.
    pub min_hold_ttl_ms: u64,
    /// Longest hold TTL a request or an event may ask for.
    pub max_hold_ttl_ms: u64,
    /// How long the engine remembers that a hold expired or was released, so that a late confirm
    /// or release is told so rather than "not found". Notes live between one and two of these.
    pub ended_hold_retention_ms: u64,
    /// At most this many such notes per event; the oldest are forgotten first.
    pub max_ended_hold_notes: u64,
}

impl Default for HoldsConfig {
    fn default() -> Self {
        HoldsConfig {
            min_hold_ttl_ms: 1_000,
            max_hold_ttl_ms: 3_600_000,
            ended_hold_retention_ms: 3_600_000,
            max_ended_hold_notes: 2_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// Time to pay of an event whose spec names none: an order still unpaid this long after its
    /// confirm is cancelled by the engine (`PAYMENT_TIMEOUT`) and its tickets go back on sale.
    pub default_payment_ttl_ms: u64,
    /// Shortest and longest time to pay an event may ask for.
    pub min_payment_ttl_ms: u64,
    pub max_payment_ttl_ms: u64,
    /// Directory of the keys that sign tickets. Empty: `<storage.data_dir>/ticket-keys`.
    pub ticket_keys_dir: PathBuf,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            default_payment_ttl_ms: 900_000,
            min_payment_ttl_ms: 1_000,
            max_payment_ttl_ms: 7 * 86_400_000,
            ticket_keys_dir: PathBuf::new(),
        }
    }
}

impl Config {
    /// Where the ticket signing keys are.
    pub fn ticket_keys_dir(&self) -> PathBuf {
        if self.orders.ticket_keys_dir.as_os_str().is_empty() {
            self.storage.data_dir.join("ticket-keys")
        } else {
            self.orders.ticket_keys_dir.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// How long a client key is remembered; a retry within it gets the first answer.
    pub retention_ms: u64,
    /// Client keys remembered per event at most; past it the oldest are forgotten first.
    pub max_keys_per_event: u32,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            retention_ms: 86_400_000,
            max_keys_per_event: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the gRPC API listens on (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// Largest request message accepted, bytes; a larger one is refused with OUT_OF_RANGE.
    pub max_request_bytes: u32,
    /// Requests one `ReserveStream` reads ahead of its answers; past it the server stops reading
    /// that stream until answers are taken.
    pub max_stream_in_flight: u32,
    /// Requests of one stream decided together in one actor turn, at most.
    pub max_stream_batch: u32,
    /// A `WatchAvailability` stream sends at most one message per this interval.
    pub watch_interval_ms: u64,
    /// Open `WatchAvailability` streams, over all events.
    pub max_watchers: u32,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams_per_connection: u32,
    /// Open `ReserveStream` calls over every connection; past it OVERLOADED.
    pub max_reserve_streams: u32,
    /// Open client connections; one accepted past it is closed at once.
    pub max_connections: u32,
    /// A connection that sends nothing for this long after it was accepted is closed, ms.
    pub handshake_timeout_ms: u64,
    /// How often the server pings a connection over HTTP/2, ms; a connection that does not answer
    /// within `keepalive_timeout_ms` is closed.
    pub keepalive_interval_ms: u64,
    /// How long a ping may go unanswered, ms.
    pub keepalive_timeout_ms: u64,
    /// Largest header list (metadata) of a request, bytes; a larger one is refused by HTTP/2.
    pub max_header_list_bytes: u32,
    /// Bytes, MiB, of requests read ahead and answers not yet taken by their clients, over every
    /// connection: stream requests and answers, and large unary answers (seat listings) until
    /// they are sent. Past it streams stop reading and seat listings are refused as OVERLOADED.
    pub max_answer_buffer_mib: u64,
    /// A stream whose client takes no answer for this long while answers wait is ended with
    /// RESOURCE_EXHAUSTED `SLOW_READER` and its waiting answers dropped.
    pub stream_stall_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long in-flight calls get to finish before the server stops anyway.
    pub shutdown_grace_ms: u64,
    /// Serve TLS with this PEM certificate chain; with `tls_key_path`, or neither (plaintext).
    pub tls_cert_path: Option<PathBuf>,
    /// The PEM private key of `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_request_bytes: 4 << 20,
            max_stream_in_flight: 8_192,
            max_stream_batch: 1_024,
            watch_interval_ms: 100,
            max_watchers: 10_000,
            max_concurrent_streams_per_connection: 1_024,
            max_reserve_streams: 4_096,
            max_connections: 10_000,
            handshake_timeout_ms: 10_000,
            keepalive_interval_ms: 20_000,
            keepalive_timeout_ms: 10_000,
            max_header_list_bytes: 16_384,
            max_answer_buffer_mib: 256,
            stream_stall_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            tls_cert_path: None,
            tls_key_path: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `http://<listen>/metrics`.
    pub enabled: bool,
    /// Address of the metrics endpoint (port 0: any free port, printed at start).
    pub listen: SocketAddr,
    /// How often per-event gauges (tickets per tier, holds, in-flight requests) are refreshed.
    pub refresh_interval_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            refresh_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or per-target directives (`info,engine=debug`).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".to_string(),
        }
    }
}

/// How order events are encoded in Kafka messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// `boxoffice.v1.OrderEvent`, binary protobuf (`content-type: application/protobuf`).
    Protobuf,
    /// The same message in the proto3 JSON mapping (`content-type: application/json`).
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`. Empty: the relay is off, and order events
    /// wait in the outbox on disk until a broker is configured.
    pub brokers: String,
    /// The topic of order and event changes.
    pub orders_topic: String,
    /// The topic the payment adapter reports payment results on; the engine reads every
    /// partition of it (when `brokers` is set), committing an offset only once the result is
    /// durable.
    pub payments_topic: String,
    /// The consumer group that keeps the engine's offsets in `payments_topic` (offsets only: the
    /// engine never joins it).
    pub payments_group: String,
    /// Partitions and replicas of `orders_topic` when the relay creates it (it does when the
    /// cluster does not have it; an existing topic is left as it is).
    pub orders_topic_partitions: u32,
    pub orders_topic_replication: u32,
    pub format: PayloadFormat,
    /// librdkafka properties of the relay's producer and the payment-result consumer, passed
    /// through as they are (`security.protocol`, `sasl.*`, `ssl.*`, `compression.type`,
    /// `fetch.wait.max.ms`, ...). The relay sets `enable.idempotence`, `acks` and
    /// `message.timeout.ms` itself; setting them here is refused.
    pub properties: std::collections::BTreeMap<String, String>,
    /// Outbox entries read and sent per round.
    pub batch_entries: u32,
    /// Produce requests in flight per broker connection (librdkafka's
    /// `max.in.flight.requests.per.connection`, at most 5 with the idempotent producer).
    pub max_in_flight: u32,
    /// Past this many entries waiting in the outbox, the relay logs a warning at each round.
    pub outbox_warn_entries: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            orders_topic: "boxoffice.orders.v1".to_string(),
            payments_topic: "boxoffice.payments.v1".to_string(),
            payments_group: "boxoffice-engine".to_string(),
            orders_topic_partitions: 6,
            orders_topic_replication: 1,
            format: PayloadFormat::Protobuf,
            properties: Default::default(),
            batch_entries: 10_000,
            max_in_flight: 1,
            outbox_warn_entries: 1_000_000,
        }
    }
}

/// Producer properties the relay sets itself: delivery in order, once per acknowledgement,
/// retried for as long as it takes.
pub const RELAY_OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
];

/// What an API key may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `EventAdmin`.
    Admin,
    /// `Reservations` and `Availability`.
    Storefront,
    /// Ticket check-in.
    Scanner,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The accepted keys. Empty: only `DEV_API_KEY`, with every role.
    pub keys: Vec<ApiKeyConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Who the key belongs to; shown in logs, never the key itself.
    pub name: String,
    /// SHA-256 of the key, 64 hex digits (`boxoffice hash-key <KEY>` prints it).
    pub sha256: String,
    pub roles: Vec<Role>,
}

impl Config {
    /// Loads the config the way the binaries do: the file named by `path`, else by
    /// `BOXOFFICE_CONFIG`, else `config/boxoffice.toml` if it exists, else the defaults; then the
    /// `BOXOFFICE_<SECTION>__<KEY>` overrides from `env`; then validation.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let env_path = env
            .iter()
            .find(|(k, _)| k == CONFIG_PATH_ENV)
            .map(|(_, v)| PathBuf::from(v));
        let chosen = match (path.map(Path::to_path_buf), env_path) {
            (Some(p), _) | (None, Some(p)) => Some(p),
            (None, None) => {
                let default = PathBuf::from(DEFAULT_CONFIG_PATH);
                default.exists().then_some(default)
            }
        };
        let (text, source) = match &chosen {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "built-in defaults".to_string()),
        };
        Config::from_toml_with_env(&text, &source, env)
    }

    /// Parses `text` (named `source` in errors), applies the overrides found in `env` and validates.
    pub fn from_toml_with_env(
        text: &str,
        source: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: source.to_string(),
                    message: e.to_string(),
                })?;
        let mut overridden = Vec::new();
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if var == CONFIG_PATH_ENV {
                continue;
            }
            let mut parts = rest.split("__");
            let (Some(section), Some(key), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(ConfigError::EnvName { var });
            };
            if section.is_empty() || key.is_empty() {
                return Err(ConfigError::EnvName { var });
            }
            let value = parse_env_value(&raw);
            let section_table = table
                .entry(section.to_ascii_lowercase())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let toml::Value::Table(section_table) = section_table else {
                return Err(ConfigError::EnvName { var });
            };
            section_table.insert(key.to_ascii_lowercase(), value);
            overridden.push(var);
        }
        // Parsed from text so that a bad value's error shows its line, key included: the file's
        // own text, or the file with the overrides merged in.
        let merged = if overridden.is_empty() {
            text.to_string()
        } else {
            toml::to_string(&table).map_err(|e| ConfigError::Parse {
                path: source.to_string(),
                message: e.to_string(),
            })?
        };
        let config: Config =
            toml::from_str(&merged).map_err(|e: toml::de::Error| ConfigError::Parse {
                path: if overridden.is_empty() {
                    source.to_string()
                } else {
                    format!("{source} with overrides {}", overridden.join(", "))
                },
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value against its range; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        /// A Kafka topic name: 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'.
        fn topic_name(key: &'static str, name: &str) -> Result<(), ConfigError> {
            if name.is_empty()
                || name.len() > 249
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!(
                        "is `{name}`: a topic name is 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-'"
                    ),
                });
            }
            Ok(())
        }

        fn range<T: PartialOrd + std::fmt::Display>(
            key: &'static str,
            value: T,
            low: T,
            high: T,
        ) -> Result<(), ConfigError> {
            if value < low || value > high {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!("is {value}, must be between {low} and {high}"),
                });
            }
            Ok(())
        }
        match (&self.api.tls_cert_path, &self.api.tls_key_path) {
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "api.tls_key_path",
                    problem: "must be set when api.tls_cert_path is".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "api.tls_cert_path",
                    problem: "must be set when api.tls_key_path is".into(),
                });
            }
            _ => {}
        }
        let s = &self.storage;
        if s.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "storage.data_dir",
                problem: "must not be empty".into(),
            });
        }
        range(
            "storage.snapshot_every_records",
            s.snapshot_every_records,
            1_000,
            100_000_000,
        )?;
        range(
            "storage.cache_capacity_mib",
            s.cache_capacity_mib,
            8,
            1 << 20,
        )?;
        let e = &self.engine;
        range("engine.call_timeout_ms", e.call_timeout_ms, 10, 600_000)?;
        range(
            "engine.max_in_flight_per_event",
            e.max_in_flight_per_event,
            1,
            10_000_000,
        )?;
        range("engine.max_events", e.max_events, 1, 10_000_000)?;
        range(
            "engine.max_holds_per_expiry_record",
            e.max_holds_per_expiry_record,
            1,
            1_000_000,
        )?;
        range("engine.max_state_mib", e.max_state_mib, 16, 1 << 24)?;
        range(
            "engine.recovery_parallelism",
            e.recovery_parallelism,
            1,
            256,
        )?;
        let l = &self.limits;
        range(
            "limits.max_items_per_request",
            l.max_items_per_request,
            1,
            1_024,
        )?;
        range(
            "limits.max_tickets_per_request",
            l.max_tickets_per_request,
            1,
            100_000,
        )?;
        range(
            "limits.max_open_holds_per_event",
            l.max_open_holds_per_event,
            1,
            100_000_000,
        )?;
        range(
            "limits.max_open_holds_per_customer",
            l.max_open_holds_per_customer,
            1,
            1_000_000,
        )?;
        range(
            "limits.max_tiers_per_event",
            l.max_tiers_per_event,
            1,
            4_096,
        )?;
        range(
            "limits.max_seats_per_event",
            l.max_seats_per_event,
            1,
            10_000_000,
        )?;
        range(
            "limits.max_capacity_per_tier",
            l.max_capacity_per_tier,
            1,
            1_000_000_000,
        )?;
        range(
            "limits.max_sale_windows_per_tier",
            l.max_sale_windows_per_tier,
            1,
            1_024,
        )?;
        range("limits.max_string_bytes", l.max_string_bytes, 16, 4_096)?;
        let h = &self.holds;
        range("holds.min_hold_ttl_ms", h.min_hold_ttl_ms, 1, 86_400_000)?;
        range(
            "holds.max_hold_ttl_ms",
            h.max_hold_ttl_ms,
            h.min_hold_ttl_ms,
            7 * 86_400_000,
        )?;
        range(
            "holds.ended_hold_retention_ms",
            h.ended_hold_retention_ms,
            1_000,
            7 * 86_400_000,
        )?;
        range(
            "holds.max_ended_hold_notes",
            h.max_ended_hold_notes,
            65_536,
            100_000_000,
        )?;
        let o = &self.orders;
        range(
            "orders.min_payment_ttl_ms",
            o.min_payment_ttl_ms,
            1,
            30 * 86_400_000,
        )?;
        range(
            "orders.max_payment_ttl_ms",
            o.max_payment_ttl_ms,
            o.min_payment_ttl_ms,
            30 * 86_400_000,
        )?;
        range(
            "orders.default_payment_ttl_ms",
            o.default_payment_ttl_ms,
            o.min_payment_ttl_ms,
            o.max_payment_ttl_ms,
        )?;
        range(
            "idempotency.retention_ms",
            self.idempotency.retention_ms,
            1_000,
            30 * 86_400_000,
        )?;
        range(
            "idempotency.max_keys_per_event",
            self.idempotency.max_keys_per_event,
            1_000,
            100_000_000,
        )?;
        let a = &self.api;
        range(
            "api.max_request_bytes",
            a.max_request_bytes,
            1_024,
            256 << 20,
        )?;
        range(
            "api.max_stream_in_flight",
            a.max_stream_in_flight,
            1,
            1_000_000,
        )?;
        range("api.max_stream_batch", a.max_stream_batch, 1, 65_536)?;
        range("api.watch_interval_ms", a.watch_interval_ms, 1, 60_000)?;
        range("api.max_watchers", a.max_watchers, 1, 1_000_000)?;
        range(
            "api.max_concurrent_streams_per_connection",
            a.max_concurrent_streams_per_connection,
            1,
            1_000_000,
        )?;
        range(
            "api.max_reserve_streams",
            a.max_reserve_streams,
            1,
            1_000_000,
        )?;
        range("api.max_connections", a.max_connections, 1, 1_000_000)?;
        range(
            "api.handshake_timeout_ms",
            a.handshake_timeout_ms,
            100,
            600_000,
        )?;
        range(
            "api.keepalive_interval_ms",
            a.keepalive_interval_ms,
            100,
            3_600_000,
        )?;
        range(
            "api.keepalive_timeout_ms",
            a.keepalive_timeout_ms,
            100,
            3_600_000,
        )?;
        range(
            "api.max_header_list_bytes",
            a.max_header_list_bytes,
            1_024,
            1 << 20,
        )?;
        range(
            "api.max_answer_buffer_mib",
            a.max_answer_buffer_mib,
            1,
            1 << 20,
        )?;
        range(
            "api.stream_stall_timeout_ms",
            a.stream_stall_timeout_ms,
            100,
            3_600_000,
        )?;
        range("api.shutdown_grace_ms", a.shutdown_grace_ms, 0, 600_000)?;
        range(
            "metrics.refresh_interval_ms",
            self.metrics.refresh_interval_ms,
            10,
            3_600_000,
        )?;
        if self.metrics.enabled
            && self.metrics.listen.port() != 0
            && self.metrics.listen == self.api.listen
        {
            return Err(ConfigError::Invalid {
                key: "metrics.listen",
                problem: format!("is {}, the same address as api.listen", self.metrics.listen),
            });
        }
        if let Err(e) = self.log.filter.parse::<tracing_subscriber::EnvFilter>() {
            return Err(ConfigError::Invalid {
                key: "log.filter",
                problem: format!("is not a tracing filter: {e}"),
            });
        }
        let mut names = std::collections::HashSet::new();
        for key in &self.auth.keys {
            if key.name.is_empty() || !names.insert(key.name.as_str()) {
                return Err(ConfigError::Invalid {
                    key: "auth.keys",
                    problem: format!("has an empty or repeated name `{}`", key.name),
                });
            }
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ConfigError::Invalid {
                    key: "auth.keys",
                    problem: format!(
                        "key `{}` has sha256 `{}`, not 64 hex digits",
                        key.name, key.sha256
                    ),
                });
            }
            if key.roles.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "auth.keys",
                    problem: format!("key `{}` has no roles", key.name),
                });
            }
        }
        let k = &self.kafka;
        topic_name("kafka.orders_topic", &k.orders_topic)?;
        topic_name("kafka.payments_topic", &k.payments_topic)?;
        if k.payments_topic == k.orders_topic {
            return Err(ConfigError::Invalid {
                key: "kafka.payments_topic",
                problem: "must differ from kafka.orders_topic".to_string(),
            });
        }
        if k.payments_group.is_empty() || k.payments_group.len() > 255 {
            return Err(ConfigError::Invalid {
                key: "kafka.payments_group",
                problem: "must be 1 to 255 bytes".to_string(),
            });
        }
        range("kafka.batch_entries", k.batch_entries, 1, 100_000)?;
        range("kafka.max_in_flight", k.max_in_flight, 1, 5)?;
        range(
            "kafka.orders_topic_partitions",
            k.orders_topic_partitions,
            1,
            10_000,
        )?;
        range(
            "kafka.orders_topic_replication",
            k.orders_topic_replication,
            1,
            100,
        )?;
        range(
            "kafka.outbox_warn_entries",
            k.outbox_warn_entries,
            1,
            u64::MAX,
        )?;
        for owned in RELAY_OWNED_PROPERTIES {
            if k.properties.contains_key(*owned) {
                return Err(ConfigError::Invalid {
                    key: "kafka.properties",
                    problem: format!("sets `{owned}`, which the relay sets itself"),
                });
            }
        }
        Ok(())
    }
}

/// An override's value is read as a TOML value when it parses as one (`42`, `true`, `"x"`), and as
/// a plain string otherwise (`./data`).
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shipped_file_equals_the_defaults() {
        let text = include_str!("../boxoffice.toml");
        let parsed = Config::from_toml_with_env(text, "boxoffice.toml", env(&[])).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let parsed = Config::from_toml_with_env("", "empty", env(&[])).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let parsed = Config::from_toml_with_env(
            "[limits]\nmax_items_per_request = 4\n",
            "f",
            env(&[
                ("BOXOFFICE_LIMITS__MAX_ITEMS_PER_REQUEST", "9"),
                ("BOXOFFICE_STORAGE__DATA_DIR", "/tmp/x y"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(parsed.limits.max_items_per_request, 9);
        assert_eq!(parsed.storage.data_dir, PathBuf::from("/tmp/x y"));
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key_together() {
        let both = Config::from_toml_with_env(
            "[api]\ntls_cert_path = \"/etc/b/server.pem\"\n",
            "f",
            env(&[("BOXOFFICE_API__TLS_KEY_PATH", "/etc/b/server.key")]),
        )
        .unwrap();
        assert_eq!(
            both.api.tls_key_path,
            Some(PathBuf::from("/etc/b/server.key"))
        );
        for (text, missing) in [
            ("[api]\ntls_cert_path = \"a.pem\"\n", "api.tls_key_path"),
            ("[api]\ntls_key_path = \"a.key\"\n", "api.tls_cert_path"),
        ] {
            let err = Config::from_toml_with_env(text, "f", env(&[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(missing), "{err}");
        }
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let err = Config::from_toml_with_env("[limits]\nmax_itemz = 4\n", "f", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_itemz"), "{err}");
    }

    #[test]
    fn unknown_key_in_env_is_named() {
        let err = Config::from_toml_with_env("", "f", env(&[("BOXOFFICE_HOLDS__TTL", "5")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ttl") && err.contains("BOXOFFICE_HOLDS__TTL"),
            "{err}"
        );
        let err = Config::from_toml_with_env("", "f", env(&[("BOXOFFICE_HOLDS", "5")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("BOXOFFICE_HOLDS"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err =
            Config::from_toml_with_env("[limits]\nmax_items_per_request = 0\n", "f", env(&[]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("limits.max_items_per_request"), "{err}");
        let err = Config::from_toml_with_env(
            "",
            "f",
            env(&[("BOXOFFICE_ENGINE__CALL_TIMEOUT_MS", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("call_timeout_ms") || err.contains("invalid type"),
            "{err}"
        );
        let err = Config::from_toml_with_env(
            "[holds]\nmin_hold_ttl_ms = 5000\nmax_hold_ttl_ms = 4000\n",
            "f",
            env(&[]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds.max_hold_ttl_ms"), "{err}");
        // The idempotent producer takes at most 5 requests in flight.
        for bad in ["0", "6"] {
            let err = Config::from_toml_with_env(
                "",
                "f",
                env(&[("BOXOFFICE_KAFKA__MAX_IN_FLIGHT", bad)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("kafka.max_in_flight"), "{err}");
        }
    }
}
