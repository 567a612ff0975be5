//! `boxoffice-bench email`: emails sent per second by the email adapter, end to end. A real SMTP
//! server on loopback (aiosmtpd, started by `scripts/smtp.sh`, writing each message it accepts
//! into a maildir), the real `boxoffice-email` as a process on `--kafka` (`--smtp-security
//! none`), and `--emails` `TicketsRendered` announcements produced at once, each for an order of
//! its own with a contact address and a real ticket PDF (one render, its bytes written under a
//! path per order). Timed from the first announcement produced until the maildir holds every
//! email; the adapter's own count of emails sent must agree.
//!
//! Then, for comparison, the same SMTP server's ceiling with the same client (lettre, as many
//! sends at once as the adapter's `--max-parallel-sends`, the message the adapter built), with and
//! without the NOOP check the adapter makes before each send, and the adapter's ledger flush
//! alone (sled, write and fsync, twice per email): where the adapter's time goes.
//!
//! Fails unless the maildir holds exactly one email per order, each with its order's PDF
//! attached byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::mail::compose::{self, Templates};
use adapters::mail::ledger::{Ledger, Send, Source, State};
use adapters::tickets::render::{Paper, render};
use anyhow::{Context, Result, anyhow, ensure};
use kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use prost::Message as _;
use proto::v1;

use crate::in_process::machine;
use crate::payments::{Adapter, adapter_binary, cpu_seconds};

/// The sender of every email; the adapter's `Message-ID`s end in its domain.
const FROM: &str = "Box office <tickets@bench.example>";

#[derive(clap::Args)]
pub struct EmailArgs {
    /// Kafka bootstrap brokers (`scripts/broker.sh start DIR` prints one).
    #[arg(long, value_name = "HOST:PORT")]
    kafka: String,
    /// Emails to send, one paid order each.
    #[arg(long, default_value_t = 2_000)]
    emails: u32,
    /// Emails handed to the SMTP server at once: the adapter's `--max-parallel-sends` (its
    /// default is 4), and the ceiling's sends in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// Messages the adapter takes per batch (`--max-batch`; its offsets are committed per batch).
    #[arg(long, default_value_t = 64)]
    max_batch: u32,
    /// Tickets per order: pages of the PDF attached.
    #[arg(long, default_value_t = 4)]
    tickets_per_order: u32,
    /// `fetch.wait.max.ms` of the adapter's consumer; tansu 0.6.0 answers a fetch only once the
    /// wait has passed.
    #[arg(long, default_value_t = 100)]
    fetch_wait_ms: u32,
    /// Ledger flushes timed alone, at most (two per email, as the adapter makes them).
    #[arg(long, default_value_t = 500)]
    flush_samples: u32,
    /// The email adapter's binary; default: `boxoffice-email` beside this one.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The script that starts and stops the SMTP server; default: this source tree's
    /// `scripts/smtp.sh`.
    #[arg(long)]
    smtp_script: Option<PathBuf>,
    /// How long to wait for the last email, from the first announcement.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// Where the ticket files, the adapter's ledger and the maildir go (default: a temporary
    /// directory on the working disk).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The SMTP server `scripts/smtp.sh` started, delivering into `dir/maildir/new`; stopped when
/// dropped.
struct SmtpServer {
    script: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl SmtpServer {
    fn start(script: &Path, dir: &Path) -> Result<SmtpServer> {
        let out = Command::new(script)
            .arg("start")
            .arg(dir)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        ensure!(
            out.status.success(),
            "the SMTP server did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let port = text
            .lines()
            .find_map(|l| l.strip_prefix("smtp=127.0.0.1:"))
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("no smtp=127.0.0.1:PORT in {text:?}"))?;
        Ok(SmtpServer {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
            port,
        })
    }

    fn maildir(&self) -> PathBuf {
        self.dir.join("maildir/new")
    }

    /// Messages delivered so far.
    fn delivered(&self) -> Result<usize> {
        Ok(std::fs::read_dir(self.maildir())
            .context("the maildir")?
            .count())
    }

    /// CPU seconds the server used so far.
    fn cpu_seconds(&self) -> f64 {
        std::fs::read_to_string(self.dir.join("smtp.pid")).map_or(0.0, |pid| {
            cpu_seconds(&format!("/proc/{}/stat", pid.trim()))
        })
    }

    /// Waits until the maildir holds `count` messages; when it first did.
    async fn wait_for(&self, count: usize, deadline: Instant, what: &str) -> Result<Instant> {
        loop {
            let delivered = self.delivered()?;
            if delivered >= count {
                return Ok(Instant::now());
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: {delivered} of {count} emails delivered before the deadline"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// The event every order is for, as a `TicketsRendered` carries it.
fn event() -> v1::Event {
    v1::Event {
        event_id: uuid::Uuid::new_v4().to_string(),
        name: "Noite de Fado — São Jorge".into(),
        venue: "Coliseu dos Recreios, Lisboa".into(),
        starts_at: Some(adapters::timestamp(1_797_105_600_000)),
        currency: "EUR".into(),
        tiers: vec![v1::Tier {
            code: "PL".into(),
            name: "Plateia".into(),
            ..Default::default()
        }],
        time_zone: "Europe/Lisbon".into(),
        ..Default::default()
    }
}

/// Paid order `n` of `event`, with a contact address of its own.
fn order(n: u32, event: &v1::Event, tickets: u32) -> v1::Order {
    let holder = format!("Joana Gonçalves {n}");
    v1::Order {
        order_id: uuid::Uuid::new_v4().to_string(),
        event_id: event.event_id.clone(),
        customer_id: format!("buyer-{n}"),
        currency: "EUR".into(),
        total_minor: 4_250 * u64::from(tickets),
        status: v1::OrderStatus::Paid as i32,
        tickets: (0..tickets)
            .map(|t| v1::Ticket {
                ticket_id: uuid::Uuid::new_v4().to_string(),
                tier_code: "PL".into(),
                seat: (t % 2 == 0).then(|| v1::Seat {
                    section: "A".into(),
                    row: "F".into(),
                    number: (t + 1).to_string(),
                }),
                holder: holder.clone(),
                token: String::new(),
            })
            .collect(),
        contact: Some(v1::Contact {
            email: format!("buyer-{n}@bench.example"),
            name: holder,
            language: "pt-BR".into(),
        }),
        ..Default::default()
    }
}

/// The announcement of `order`'s file, the PDF `pdf` written under `files` (an absolute path).
fn announce(order: v1::Order, event: &v1::Event, files: &Path, pdf: &[u8]) -> Result<Vec<u8>> {
    let path = files.join(format!("{}.pdf", order.order_id));
    std::fs::write(&path, pdf).with_context(|| format!("writing {}", path.display()))?;
    let sha256 = adapters::tickets::store::hex(&<sha2::Sha256 as sha2::Digest>::digest(pdf));
    Ok(v1::TicketsRendered {
        order: Some(order),
        event: Some(event.clone()),
        location: format!("file://{}", path.display()),
        file_sha256: sha256,
        file_bytes: pdf.len() as u64,
        rendered_at: Some(adapters::timestamp(adapters::unix_ms())),
    }
    .encode_to_vec())
}

/// Produces every payload to `topic`, keyed by `key`, and waits for every acknowledgement.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payloads: &[Vec<u8>],
) -> Result<()> {
    let mut deliveries = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow!("cannot queue an announcement: {e}"))?,
        );
    }
    for delivery in deliveries {
        delivery
            .await
            .context("the producer went away")?
            .map_err(|(e, _)| anyhow!("an announcement was not produced: {e}"))?;
    }
    Ok(())
}

/// The adapter's `/metrics` page (HTTP/1.0: the body as it is, closed at its end).
fn scrape(addr: &str) -> Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)
        .with_context(|| format!("the adapter's metrics at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut page = String::new();
    stream.read_to_string(&mut page)?;
    Ok(page)
}

/// The sum of the samples of `name` whose labels contain `label`.
fn sample_sum(page: &str, name: &str, label: &str) -> f64 {
    page.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            (rest.starts_with([' ', '{']) && rest.contains(label)).then_some(rest)
        })
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every message in the maildir: exactly one per order of `orders`, each with its order's PDF
/// attached byte for byte.
fn audit(maildir: &Path, orders: &[String], pdf: &[u8]) -> Result<()> {
    let mut seen: HashMap<String, u32> = orders.iter().map(|o| (o.clone(), 0)).collect();
    let mut files = 0;
    for entry in std::fs::read_dir(maildir).context("the maildir")? {
        let raw = std::fs::read(entry?.path())?;
        files += 1;
        let message = mail_parser::MessageParser::default()
            .parse(&raw)
            .context("a message in the maildir does not parse")?;
        let id = message.message_id().unwrap_or_default();
        let order = id
            .strip_prefix("tickets.")
            .and_then(|rest| rest.strip_suffix("@bench.example"))
            .with_context(|| format!("a message with Message-ID `{id}`"))?;
        let count = seen
            .get_mut(order)
            .with_context(|| format!("an email for order {order}, which was not announced"))?;
        *count += 1;
        use mail_parser::MimeHeaders;
        let attached: Vec<_> = message.attachments().collect();
        ensure!(
            attached.len() == 1
                && attached[0].attachment_name() == Some(&format!("tickets-{order}.pdf"))
                && attached[0].contents() == pdf,
            "the email of order {order} does not carry its PDF ({} attachments)",
            attached.len()
        );
    }
    let twice = seen.values().filter(|&&c| c > 1).count();
    let missing = seen.values().filter(|&&c| c == 0).count();
    ensure!(
        twice == 0 && missing == 0 && files == orders.len(),
        "audit failed: {files} messages for {} orders, {twice} orders emailed more than once, {missing} not at all",
        orders.len()
    );
    Ok(())
}

/// How the ceiling's client talks to the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Client {
    /// lettre's transport as the adapter sets it up (a pool, no TLS).
    AsAdapter,
    /// The same, with a NOOP check before each send, as the adapter makes.
    AsAdapterWithNoop,
    /// lettre's SMTP connection on a socket with Nagle's algorithm off (`TCP_NODELAY`), one
    /// per sender, kept open: lettre writes a message's end (`CRLF.CRLF`) apart from the message,
    /// and with Nagle on that last small write waits for the server's delayed ACK.
    NoDelay,
}

/// Sends every message straight to the server on `port`, `concurrency` at once, with `client`.
/// How long it took.
async fn ceiling(
    port: u16,
    messages: Vec<lettre::Message>,
    concurrency: u32,
    client: Client,
) -> Result<Duration> {
    use lettre::transport::smtp::client::AsyncSmtpConnection;
    use lettre::transport::smtp::extension::ClientId;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(30)))
        .build();
    let queue = Arc::new(Mutex::new(messages));
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let (queue, transport) = (queue.clone(), transport.clone());
        senders.push(tokio::spawn(async move {
            let mut connection = None;
            loop {
                let Some(message) = queue.lock().expect("queue").pop() else {
                    return anyhow::Ok(());
                };
                match client {
                    Client::AsAdapter | Client::AsAdapterWithNoop => {
                        if client == Client::AsAdapterWithNoop {
                            ensure!(
                                transport.test_connection().await?,
                                "the SMTP server does not answer"
                            );
                        }
                        transport.send(message).await?;
                    }
                    Client::NoDelay => {
                        if connection.is_none() {
                            let socket =
                                tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                            socket.set_nodelay(true)?;
                            let hello = ClientId::Domain("bench.example".into());
                            connection = Some(
                                AsyncSmtpConnection::connect_with_transport(
                                    Box::new(socket),
                                    &hello,
                                )
                                .await?,
                            );
                        }
                        let connection = connection.as_mut().expect("connected");
                        connection
                            .send(message.envelope(), &message.formatted())
                            .await?;
                    }
                }
            }
        }));
    }
    for sender in senders {
        sender.await??;
    }
    Ok(started.elapsed())
}

/// The mean time of one flush of the adapter's ledger (sled, write and fsync) in `dir`, a send
/// recorded before each as the adapter records it (`Sending`, then `Sent`), over `samples` sends.
fn ledger_flush(dir: &Path, samples: u32, announcement: &[u8]) -> Result<Duration> {
    let ledger = Ledger::open(dir)?;
    let started = Instant::now();
    for n in 0..samples {
        let mut send = Send {
            order_id: uuid::Uuid::new_v4().to_string(),
            event_id: String::new(),
            kind: "tickets".into(),
            to: format!("buyer-{n}@bench.example"),
            language: "pt-BR".into(),
            source: Source::Tickets(announcement.to_vec()),
            state: State::Sending,
            attempts: 1,
            detail: String::new(),
            updated_at_ms: adapters::unix_ms(),
            seq: ledger.next_seq(),
            by_operator: false,
        };
        ledger.put_send(&send)?;
        ledger.flush()?;
        send.state = State::Sent;
        send.detail = "250 OK".into();
        ledger.put_send(&send)?;
        ledger.flush()?;
    }
    Ok(started.elapsed() / (2 * samples).max(1))
}

pub async fn email(args: EmailArgs) -> Result<()> {
    ensure!(
        args.emails >= 1
            && args.tickets_per_order >= 1
            && (1..=256).contains(&args.concurrency)
            && args.max_batch >= 1,
        "--emails, --tickets-per-order and --max-batch must be at least 1, --concurrency 1..=256"
    );
    let binary = adapter_binary(args.adapter.as_deref(), "boxoffice-email", "email adapter")?;
    let script = args
        .smtp_script
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/smtp.sh"));
    ensure!(
        script.is_file(),
        "no SMTP server script at {}: pass --smtp-script",
        script.display()
    );
    let temp = tempfile::tempdir_in(".").context("temporary data directory")?;
    let dir = std::path::absolute(args.data_dir.as_deref().unwrap_or(temp.path()))?;
    let files = dir.join("files");
    std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (orders_topic, tickets_topic) = (
        format!("boxoffice.bench.orders.{run}"),
        format!("boxoffice.bench.tickets.{run}"),
    );

    println!("machine: {}", machine());
    println!(
        "command: boxoffice-bench email --kafka {} --emails {} --concurrency {} --max-batch {} --tickets-per-order {} --fetch-wait-ms {}",
        args.kafka,
        args.emails,
        args.concurrency,
        args.max_batch,
        args.tickets_per_order,
        args.fetch_wait_ms
    );
    // One render; every order's file holds its bytes (the adapter checks size and SHA-256, not
    // what the pages say).
    let pdf = render(&crate::render::document(
        0,
        args.tickets_per_order,
        Paper::A4,
    ))?;
    let event = event();
    let mut orders = Vec::new();
    let mut announcements = Vec::new();
    // The first is the warm-up order.
    for n in 0..=args.emails {
        let order = order(n, &event, args.tickets_per_order);
        orders.push(order.order_id.clone());
        announcements.push(announce(order, &event, &files, &pdf)?);
    }

    let smtp = SmtpServer::start(&script, &dir.join("smtp"))?;
    let mut command = Command::new(&binary);
    command
        .args(["run", "--brokers", &args.kafka])
        .args(["--orders-topic", &orders_topic])
        .args(["--tickets-topic", &tickets_topic])
        .args(["--group", &format!("bench-email-{run}")])
        .args([
            "--smtp-port",
            &smtp.port.to_string(),
            "--smtp-security",
            "none",
        ])
        .args(["--from", FROM])
        .args(["--max-parallel-sends", &args.concurrency.to_string()])
        .args(["--max-batch", &args.max_batch.to_string()])
        .arg("--kafka-property")
        .arg(format!("fetch.wait.max.ms={}", args.fetch_wait_ms))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("email"))
        .env("BOXOFFICE_EMAIL_LOG", "warn");
    let (adapter, ready) = Adapter::spawn(command, "boxoffice-email running ")?;
    let metrics = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics=http://")?.strip_suffix("/metrics"))
        .with_context(|| format!("no metrics address in {ready:?}"))?
        .to_string();
    let producer = kafka::producer(&args.kafka, &BTreeMap::new(), 5)?;

    // The warm-up email: the adapter has joined its group and found its partitions, and its
    // SMTP connection is open, before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(120);
    produce(
        &producer,
        &tickets_topic,
        &event.event_id,
        &announcements[..1],
    )
    .await?;
    smtp.wait_for(1, deadline, "the warm-up email").await?;

    let total = orders.len();
    let cpu_before = (adapter.cpu_seconds(), smtp.cpu_seconds());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_seconds);
    produce(
        &producer,
        &tickets_topic,
        &event.event_id,
        &announcements[1..],
    )
    .await?;
    let produced = started.elapsed();
    let last = smtp.wait_for(total, deadline, "the adapter").await?;
    let seconds = last.duration_since(started).as_secs_f64();
    let cpu = (
        adapter.cpu_seconds() - cpu_before.0,
        smtp.cpu_seconds() - cpu_before.1,
    );
    // The adapter counts a send once its SENT is flushed, just after the server's answer.
    let page = loop {
        let page = scrape(&metrics)?;
        let sent = sample_sum(&page, "boxoffice_email_sends_total", "outcome=\"sent\"");
        if sent >= total as f64 || Instant::now() >= deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    drop(adapter);
    let sent = sample_sum(&page, "boxoffice_email_sends_total", "outcome=\"sent\"");
    let others = sample_sum(&page, "boxoffice_email_sends_total", "") - sent;
    ensure!(
        sent == total as f64 && others == 0.0,
        "the adapter counts {sent} emails sent and {others} retried, parked or unknown, for {total}"
    );
    let smtp_mean_ms = sample_sum(&page, "boxoffice_email_smtp_seconds_sum", "") * 1_000.0
        / sample_sum(&page, "boxoffice_email_smtp_seconds_count", "").max(1.0);
    audit(&smtp.maildir(), &orders, &pdf)?;
    let emails = f64::from(args.emails);
    let rate = emails / seconds;
    let message_bytes = std::fs::read_dir(smtp.maildir())?
        .next()
        .context("an email")??
        .metadata()?
        .len();
    println!(
        "ticket file: {:.1} KB ({} pages); email: {:.1} KB",
        pdf.len() as f64 / 1_000.0,
        args.tickets_per_order,
        message_bytes as f64 / 1_000.0
    );
    println!(
        "adapter: {} emails in {seconds:.2} s from the first announcement produced (all produced in {:.2} s): {rate:.0} emails/s",
        args.emails,
        produced.as_secs_f64()
    );
    println!(
        "adapter's own figures: {sent} sent, none retried or parked; SMTP conversation (MAIL to the answer of DATA) mean {smtp_mean_ms:.2} ms"
    );
    println!(
        "CPU during the adapter run: adapter {:.2} s ({:.0} µs per email), SMTP server {:.2} s ({:.0} µs per email, {:.0}% of one core)",
        cpu.0,
        cpu.0 * 1e6 / emails,
        cpu.1,
        cpu.1 * 1e6 / emails,
        cpu.1 * 100.0 / seconds
    );
    println!(
        "audit: {total} emails ({} and the warm-up), one per order, each with its PDF attached byte for byte",
        args.emails
    );

    // The ceiling: the same messages, built as the adapter builds them, straight to the server.
    let templates = Templates::load(None, "en").map_err(anyhow::Error::msg)?;
    let from = FROM.parse().map_err(|e| anyhow!("{FROM}: {e}"))?;
    let build = |prefix: &str| -> Result<Vec<lettre::Message>> {
        (0..args.emails)
            .map(|n| {
                let order = order(n, &event, args.tickets_per_order);
                let fields = compose::fields(&order, &event);
                let composed = templates
                    .compose("tickets", "pt-BR", &fields)
                    .map_err(anyhow::Error::msg)?;
                compose::message(
                    &from,
                    &format!("buyer-{n}@bench.example"),
                    &format!("<{prefix}.{}@bench.example>", order.order_id),
                    &composed,
                    Some((format!("tickets-{}.pdf", order.order_id), pdf.clone())),
                )
                .map_err(anyhow::Error::msg)
            })
            .collect()
    };
    let mut ceilings = Vec::new();
    for (prefix, client) in [
        ("ceiling", Client::AsAdapter),
        ("noop-ceiling", Client::AsAdapterWithNoop),
        ("nodelay-ceiling", Client::NoDelay),
    ] {
        let messages = build(prefix)?;
        let before = smtp.delivered()?;
        let cpu_before = smtp.cpu_seconds();
        let took = ceiling(smtp.port, messages, args.concurrency, client).await?;
        let delivered = smtp.delivered()? - before;
        ensure!(
            delivered == args.emails as usize,
            "the ceiling's run delivered {delivered} of {} emails",
            args.emails
        );
        ceilings.push((
            emails / took.as_secs_f64(),
            (smtp.cpu_seconds() - cpu_before) * 1e6 / emails,
        ));
    }
    println!(
        "SMTP ceiling, lettre straight to the same server, {} at once: {:.0} emails/s (SMTP server {:.0} µs CPU per email); with a NOOP check before each, as the adapter makes: {:.0} emails/s ({:.0} µs)",
        args.concurrency, ceilings[0].0, ceilings[0].1, ceilings[1].0, ceilings[1].1
    );
    println!(
        "the adapter reaches {:.0}% of the ceiling ({:.0}% of the ceiling with NOOP checks)",
        rate * 100.0 / ceilings[0].0,
        rate * 100.0 / ceilings[1].0
    );
    println!(
        "the server's ceiling with Nagle off (lettre's connection on a TCP_NODELAY socket, kept open, {} at once): {:.0} emails/s ({:.0} µs); the adapter reaches {:.0}% of it",
        args.concurrency,
        ceilings[2].0,
        ceilings[2].1,
        rate * 100.0 / ceilings[2].0
    );
    let samples = args.flush_samples.min(args.emails).max(1);
    let flush = ledger_flush(&dir.join("ledger-alone"), samples, &announcements[0])?;
    println!(
        "ledger flush (sled, write and fsync) alone: mean {:.2} ms over {} flushes; at two per email, one after the other, they allow at most {:.0} emails/s",
        flush.as_secs_f64() * 1_000.0,
        2 * samples,
        1.0 / (2.0 * flush.as_secs_f64())
    );
    Ok(())
}
