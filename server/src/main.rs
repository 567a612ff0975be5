//! The `boxoffice` binary: `serve` runs the engine behind the gRPC API; the other subcommands help
//! operators check a config and make API keys.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{Config, LogFormat};

// mimalloc: measured 236k -> 317k holds/s in the engine bench (ARCHITECTURE.md, "Memory").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "boxoffice",
    version,
    about = "High-concurrency ticket reservation engine"
)]
struct Cli {
    /// Config file; default: $BOXOFFICE_CONFIG, else config/boxoffice.toml if present, else the
    /// built-in defaults. BOXOFFICE_<SECTION>__<KEY> variables override single keys.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine and serve the gRPC API (the default).
    Serve,
    /// Load and validate the config, print the result and exit.
    CheckConfig,
    /// Print the SHA-256 of an API key, for `auth.keys`.
    HashKey {
        /// The key clients will send as `authorization: Bearer <key>`.
        key: String,
    },
    /// Add a ticket signing key to `orders.ticket_keys_dir` and print its id. It signs new
    /// tickets once the server is restarted; older keys keep verifying the tickets they signed.
    RotateTicketKey,
    /// Print the version.
    Version,
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Config::load(path.map(PathBuf::as_path), std::env::vars()).context("invalid configuration")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = load(cli.config.as_ref())?;
            init_logs(&config);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the runtime")?
                .block_on(serve(config))
        }
        Command::CheckConfig => {
            let config = load(cli.config.as_ref())?;
            println!("config is valid:\n{config:#?}");
            Ok(())
        }
        Command::HashKey { key } => {
            println!("{}", server::auth::hash_key(&key));
            Ok(())
        }
        Command::RotateTicketKey => {
            let config = load(cli.config.as_ref())?;
            let dir = config.ticket_keys_dir();
            let id = engine::tickets::TicketKeys::rotate(&dir)?;
            println!(
                "ticket key {id} written to {}; restart the server to sign new tickets with it",
                dir.display()
            );
            Ok(())
        }
        Command::Version => {
            println!("boxoffice {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    }
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.filter);
    // Colour only on a terminal: logs written to a file or a pipe stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut running = server::launch(&config).await?;
    let metrics = running
        .metrics_addr
        .map_or("off".to_string(), |a| format!("http://{a}/metrics"));
    let ports = format!(
        "grpc={} metrics={metrics} data_dir={}",
        running.grpc_addr,
        config.storage.data_dir.display()
    );
    // Lines on stdout that scripts (and the tests) read: the ports are bound and health answers
    // (NOT_SERVING while recovering), then the server takes calls.
    println!("boxoffice listening {ports}");
    tracing::info!(grpc = %running.grpc_addr, %metrics, "listening; recovering events");
    if server::auth::Authenticator::is_development(&config.auth) {
        tracing::warn!(
            api_key = config::DEV_API_KEY,
            "no auth.keys configured: only the development key is accepted, with every role"
        );
    }
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        ready = running.ready() => ready?,
        signalled = &mut signal => {
            signalled?;
            tracing::info!("shutting down during recovery");
            running.stop().await?;
            return Ok(());
        }
    }
    println!("boxoffice serving {ports}");
    tracing::info!(
        events = running.engine().recovery().events,
        elapsed_ms = running.engine().recovery().elapsed.as_millis() as u64,
        "serving"
    );
    signal.await?;
    tracing::info!("shutting down: finishing in-flight calls, flushing the log");
    running.stop().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
