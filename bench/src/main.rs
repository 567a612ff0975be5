//! `boxoffice-bench`: measures boxoffice under ticket-drop load and prints the figures with the
//! machine and the command, so a result can be reproduced and compared.
//!
//! `run` drives a scenario (hot drop, many events, seat map, availability, or a team's TOML file)
//! against one or more targets side by side, audits every run and writes JSON and HTML reports;
//! `report` puts saved runs side by side. `engine` and `expiry` drive the engine in process (no
//! network): sustained durable reservations, and how late holds come back on sale. `grpc` is the
//! quick unary-versus-stream check of the server over loopback against the no-op service. `relay`
//! times the order-event relay draining a backlog to a broker. `payments`, `render`, `email` and
//! `check-in` measure the adapters and the ticket path.

mod baseline;
mod check_in;
mod email;
mod grpc;
mod in_process;
mod load;
mod order_events;
mod payments;
mod relay_drain;
mod render;
mod report;
mod results;
mod run;
mod target;

use anyhow::Result;
use bench::scenario;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxoffice-bench",
    version,
    about = "Ticket-drop load tests for boxoffice"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A scenario against one or more targets, with an audit and JSON/HTML reports.
    Run(Box<run::RunArgs>),
    /// One HTML page from several JSON reports, their runs side by side.
    Report(report::ReportArgs),
    /// Durable reservations against one hot event, engine in process.
    Engine(in_process::EngineArgs),
    /// Lateness of hold expiry (1 s TTL) while the event is under load, engine in process.
    Expiry(in_process::ExpiryArgs),
    /// Unary and streaming Reserve over gRPC against the real server and a no-op server.
    Grpc(grpc::GrpcArgs),
    /// How fast the order-event relay drains a backlog of outbox entries to a Kafka broker.
    Relay(relay_drain::RelayArgs),
    /// Confirm to paid end to end: boxoffice, the payment adapter (test provider) and a broker.
    Payments(Box<payments::PaymentsArgs>),
    /// Durable check-ins over gRPC: tickets issued in process, then scanned once each.
    CheckIn(check_in::CheckInArgs),
    /// Ticket PDFs rendered per second by the ticket-file adapter's renderer.
    Render(render::RenderArgs),
    /// Emails sent per second by the email adapter to a real SMTP server, beside that server's
    /// ceiling.
    Email(Box<email::EmailArgs>),
    /// The no-op Reservations and Availability server alone, for external load tools (h2load,
    /// ghz): the transport's ceiling beside boxoffice. Serves until SIGTERM or Ctrl-C.
    NoopServer {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:50052")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        // Builds its own runtimes: one for the servers, one for the load generator.
        Command::Run(args) => run::run(*args),
        Command::Report(args) => report::report(args),
        Command::Engine(args) => runtime()?.block_on(in_process::engine(args)),
        Command::Expiry(args) => runtime()?.block_on(in_process::expiry(args)),
        // Builds its own runtimes: one for the servers, one for the load generator.
        Command::Grpc(args) => grpc::run(args),
        Command::Relay(args) => runtime()?.block_on(relay_drain::relay(args)),
        // Builds its own runtimes: one for the server, one for the load generator.
        Command::Payments(args) => payments::payments(*args),
        // Builds its own runtimes: one for the server, one for the load generator.
        Command::CheckIn(args) => check_in::check_in(args),
        Command::Render(args) => render::render_bench(args),
        Command::Email(args) => runtime()?.block_on(email::email(*args)),
        Command::NoopServer { listen } => runtime()?.block_on(noop_server(listen)),
    }
}

async fn noop_server(listen: std::net::SocketAddr) -> Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{SignalKind, signal};
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::noop::serve(listener, stopped));
    println!("noop server listening on {addr} (boxoffice.v1.Reservations, Availability)");
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = stop.send(true);
    server.await??;
    Ok(())
}

// mimalloc instead of glibc malloc: with glibc, malloc/free and malloc_consolidate took about a
// quarter of the event actor's CPU in `boxoffice-bench engine` (perf, 2-core machine).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
