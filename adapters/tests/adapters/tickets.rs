//! The whole life of a ticket with real processes: a real tansu broker, boxoffice serving in this
//! process (relay and payment-result consumer), `boxoffice-payments`, `boxoffice-tickets` and
//! `boxoffice-email` as processes, and a real SMTP server (aiosmtpd) whose maildir is read back;
//! the files in a directory, or in a real S3-compatible server (s3s-fs) read back with
//! object_store.
//! The PDF attached to the email received is read with poppler (`pdftotext`, `pdftoppm`) and its
//! QR codes decoded with zbar (`zbarimg`); the tokens decoded are what the gate is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::v1;
use proto::v1::check_in_client::CheckInClient;
use proto::v1::event_admin_client::EventAdminClient;
use proto::v1::mail_client::MailClient;
use proto::v1::reservations_client::ReservationsClient;
use proto::v1::ticket_files_client::TicketFilesClient;
use testkit::{Broker, S3, Smtp};

use super::support::{KEY, boxoffice, keyed, stop_boxoffice};
use tonic::transport::Channel;

/// The adapters' keys in these tests.
const STOREFRONT: &str = "storefront-key";
const OPERATOR: &str = "mail-operator-key";

/// An adapter process; killed when dropped.
struct Process {
    binary: &'static str,
    args: Vec<String>,
    /// Environment variables it is given besides the test's.
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// `key=value` fields of its first line.
    fields: BTreeMap<String, String>,
}

impl Process {
    fn start(binary: &'static str, args: Vec<String>, env: Vec<(String, String)>) -> Process {
        let mut child = Command::new(binary)
            .arg("run")
            .args(&args)
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {binary}: {e}"));
        // The first line says it runs; read on a thread so a process that never says it fails
        // the test instead of hanging it.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{binary} did not say it runs within 60 s"));
        assert!(
            line.contains(" running "),
            "{binary} did not start: {line:?}"
        );
        let fields = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Process {
            binary,
            args,
            env,
            child: Some(child),
            fields,
        }
    }

    fn field(&self, name: &str) -> &str {
        &self.fields[name]
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn restart(&mut self) {
        *self = Process::start(self.binary, self.args.clone(), self.env.clone());
    }

    /// SIGTERM; it must exit 0 within 60 s.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{} exited {status}", self.binary);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 60 s of SIGTERM",
                self.binary
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn metric(&self, line_start: &str) -> Option<f64> {
        let body = reqwest::get(self.field("metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn common(dir: &Path, brokers: &str) -> Vec<String> {
    vec![
        "--brokers".into(),
        brokers.into(),
        "--data-dir".into(),
        dir.display().to_string(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]
}

fn payments(dir: &Path, brokers: &str) -> Process {
    Process::start(
        env!("CARGO_BIN_EXE_boxoffice-payments"),
        common(dir, brokers),
        Vec::new(),
    )
}

fn tickets(dir: &Path, brokers: &str) -> Process {
    tickets_with(dir, brokers, &[], Vec::new())
}

/// `tickets` with more flags and environment variables.
fn tickets_with(
    dir: &Path,
    brokers: &str,
    extra: &[String],
    env: Vec<(String, String)>,
) -> Process {
    let mut args = common(dir, brokers);
    args.extend([
        "--api-key".into(),
        format!("{}:storefront", server::auth::hash_key(STOREFRONT)),
    ]);
    args.extend_from_slice(extra);
    Process::start(env!("CARGO_BIN_EXE_boxoffice-tickets"), args, env)
}

fn email(dir: &Path, brokers: &str, smtp: &Smtp, extra: &[&str]) -> Process {
    email_with(dir, brokers, smtp, extra, Vec::new())
}

/// `email` with environment variables.
fn email_with(
    dir: &Path,
    brokers: &str,
    smtp: &Smtp,
    extra: &[&str],
    env: Vec<(String, String)>,
) -> Process {
    let mut args = common(dir, brokers);
    // Plain text unless `extra` says otherwise.
    if !extra.contains(&"--smtp-security") {
        args.extend(["--smtp-security".to_string(), "none".to_string()]);
    }
    args.extend(
        [
            "--smtp-host",
            "127.0.0.1",
            "--smtp-port",
            &smtp.port().to_string(),
            "--from",
            "Box office <tickets@boxoffice.example>",
            "--api-key",
            &format!("{}:mail-operator", server::auth::hash_key(OPERATOR)),
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start(env!("CARGO_BIN_EXE_boxoffice-email"), args, env)
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// 2026-12-12T20:00:00Z: 20:00 in Lisbon, in winter (WET).
const STARTS_AT_S: i64 = 1_797_105_600;

struct Shop {
    admin: EventAdminClient<Channel>,
    reservations: ReservationsClient<Channel>,
    check_in: CheckInClient<Channel>,
    event: String,
}

impl Shop {
    async fn open(addr: std::net::SocketAddr) -> Shop {
        let channel = channel(&addr.to_string()).await;
        let mut admin = EventAdminClient::new(channel.clone());
        let event = admin
            .create_event(keyed(
                v1::CreateEventRequest {
                    name: "Noite de Fado — São Jorge".into(),
                    venue: "Coliseu dos Recreios".into(),
                    starts_at: Some(prost_types::Timestamp {
                        seconds: STARTS_AT_S,
                        nanos: 0,
                    }),
                    status: v1::EventStatus::OnSale as i32,
                    currency: "EUR".into(),
                    default_hold_ttl_seconds: 600,
                    time_zone: "Europe/Lisbon".into(),
                    tiers: vec![
                        v1::Tier {
                            code: "GA".into(),
                            name: "Plateia em pé".into(),
                            price_minor: 4_000,
                            fee_minor: 250,
                            max_per_order: 4,
                            sale_windows: vec![],
                            stock: Some(v1::tier::Stock::GeneralAdmission(v1::GeneralAdmission {
                                capacity: 1_000,
                            })),
                        },
                        v1::Tier {
                            code: "BAL".into(),
                            name: "Balcão".into(),
                            price_minor: 6_000,
                            fee_minor: 300,
                            max_per_order: 4,
                            sale_windows: vec![],
                            stock: Some(v1::tier::Stock::SeatMap(v1::SeatMap {
                                sections: vec![v1::Section {
                                    name: "A".into(),
                                    rows: vec![v1::Row {
                                        name: "1".into(),
                                        seats: (1..=8).map(|n| n.to_string()).collect(),
                                    }],
                                }],
                            })),
                        },
                    ],
                    ..Default::default()
                },
                KEY,
            ))
            .await
            .unwrap()
            .into_inner()
            .event
            .unwrap()
            .event_id;
        Shop {
            admin,
            check_in: CheckInClient::new(channel.clone()),
            reservations: ReservationsClient::new(channel),
            event,
        }
    }

    /// Holds `quantity` tickets of `tier` (best available seats for a seated tier) for
    /// `customer` and confirms them with `reference`, for `contact`.
    async fn order(
        &mut self,
        customer: &str,
        tier: &str,
        quantity: u32,
        reference: &str,
        contact: Option<v1::Contact>,
    ) -> v1::Order {
        let selection = if tier == "GA" {
            v1::reserve_item::Selection::Quantity(quantity)
        } else {
            v1::reserve_item::Selection::BestAvailable(quantity)
        };
        let hold = self
            .reservations
            .reserve(keyed(
                v1::ReserveRequest {
                    event_id: self.event.clone(),
                    customer_id: customer.into(),
                    items: vec![v1::ReserveItem {
                        tier_code: tier.into(),
                        selection: Some(selection),
                    }],
                    hold_ttl_seconds: None,
                    idempotency_key: String::new(),
                },
                KEY,
            ))
            .await
            .unwrap()
            .into_inner()
            .hold
            .unwrap();
        self.reservations
            .confirm(keyed(
                v1::ConfirmRequest {
                    event_id: self.event.clone(),
                    hold_id: hold.hold_id,
                    payment: Some(v1::Payment {
                        reference: reference.into(),
                    }),
                    idempotency_key: String::new(),
                    contact,
                },
                KEY,
            ))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    /// Waits until no order of `orders` is pending payment; their states.
    async fn settled(&mut self, orders: &[v1::Order]) -> Vec<v1::Order> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut now = Vec::with_capacity(orders.len());
            for o in orders {
                let got = self
                    .reservations
                    .get_order(keyed(
                        v1::GetOrderRequest {
                            event_id: o.event_id.clone(),
                            order_id: o.order_id.clone(),
                        },
                        KEY,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .order
                    .unwrap();
                now.push(got);
            }
            let pending = now
                .iter()
                .filter(|o| o.status == v1::OrderStatus::PendingPayment as i32)
                .count();
            if pending == 0 {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "{pending} orders still pending payment"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Refunds `order`, for `reason`.
    async fn refund(&mut self, order: &v1::Order, reason: &str) {
        let request = v1::RefundOrderRequest {
            event_id: order.event_id.clone(),
            order_id: order.order_id.clone(),
            reason: reason.into(),
            idempotency_key: String::new(),
        };
        self.admin.refund_order(keyed(request, KEY)).await.unwrap();
    }

    async fn scan(
        &mut self,
        token: &str,
        gate: &str,
        scan: &str,
    ) -> Result<v1::Admission, tonic::Status> {
        self.check_in
            .check_in(keyed(
                v1::CheckInRequest {
                    event_id: self.event.clone(),
                    token: token.into(),
                    gate_id: gate.into(),
                    scan_id: scan.into(),
                },
                KEY,
            ))
            .await
            .map(|r| r.into_inner().admission.unwrap())
    }
}

fn contact(email: &str, name: &str, language: &str) -> Option<v1::Contact> {
    Some(v1::Contact {
        email: email.into(),
        name: name.into(),
        language: language.into(),
    })
}

/// A message received, parsed.
struct Received {
    to: String,
    subject: String,
    text: String,
    html: String,
    message_id: String,
    /// (file name, bytes) of each attachment.
    attachments: Vec<(String, Vec<u8>)>,
}

fn parse(raw: &[u8]) -> Received {
    use mail_parser::MimeHeaders;
    let m = mail_parser::MessageParser::default()
        .parse(raw)
        .expect("a message");
    Received {
        to: m
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_string(),
        subject: m.subject().unwrap_or_default().to_string(),
        text: m.body_text(0).unwrap_or_default().to_string(),
        html: m.body_html(0).unwrap_or_default().to_string(),
        message_id: m.message_id().unwrap_or_default().to_string(),
        attachments: m
            .attachments()
            .map(|a| {
                (
                    a.attachment_name().unwrap_or_default().to_string(),
                    a.contents().to_vec(),
                )
            })
            .collect(),
    }
}

/// Waits until the server has received `count` messages; all of them, parsed.
async fn received(smtp: &Smtp, count: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let messages = smtp.messages();
        if messages.len() >= count {
            return messages.iter().map(|m| parse(m)).collect();
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} messages received",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a reader of the PDF tools; its stdout. A missing tool fails with what to install.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program}: {e}; scripts/setup.sh installs poppler-utils and zbar-tools")
        });
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The text of a PDF, and the QR code of each page decoded, in page order.
fn read_pdf(dir: &Path, pdf: &[u8]) -> (String, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tickets.pdf");
    std::fs::write(&path, pdf).unwrap();
    let text = tool("pdftotext", &[path.to_str().unwrap(), "-"]);
    let prefix = dir.join("page");
    tool(
        "pdftoppm",
        &[
            "-r",
            "150",
            "-png",
            path.to_str().unwrap(),
            prefix.to_str().unwrap(),
        ],
    );
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pages.sort();
    let codes = pages
        .iter()
        .map(|p| {
            tool("zbarimg", &["--raw", "-q", p.to_str().unwrap()])
                .trim()
                .to_string()
        })
        .collect();
    (text, codes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_goes_from_confirm_to_the_inbox_to_the_gate_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let smtp = Smtp::start(&dir.path().join("smtp"));
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let _payments = payments(&dir.path().join("payments"), &broker.addr);
    let tickets_adapter = tickets(&dir.path().join("tickets"), &broker.addr);
    let mut email_adapter = email(&dir.path().join("email"), &broker.addr, &smtp, &[]);

    let joana = shop
        .order(
            "c-joana",
            "GA",
            2,
            "test:approve",
            contact("joana@example.pt", "Joana Gonçalves Ñúñez", "pt-BR"),
        )
        .await;
    let ana = shop
        .order(
            "c-ana",
            "BAL",
            2,
            "test:approve",
            contact("ana@example.com", "Ana", "en"),
        )
        .await;
    let declined = shop
        .order(
            "c-bruno",
            "GA",
            1,
            "test:decline",
            contact("bruno@example.com", "", ""),
        )
        .await;
    let no_address = shop.order("c-desk", "GA", 1, "test:approve", None).await;
    let settled = shop
        .settled(&[joana.clone(), ana.clone(), declined.clone(), no_address])
        .await;
    let (joana, ana) = (settled[0].clone(), settled[1].clone());
    assert_eq!(joana.status, v1::OrderStatus::Paid as i32);
    assert_eq!(settled[2].status, v1::OrderStatus::Cancelled as i32);

    // Tickets for the two paid orders with an address, a notice for the declined one; nothing
    // for the order without an address.
    let mail = received(&smtp, 3).await;
    let by_to = |to: &str| {
        mail.iter()
            .find(|m| m.to == to)
            .unwrap_or_else(|| panic!("nothing to {to}"))
    };
    let to_joana = by_to("joana@example.pt");
    assert_eq!(
        to_joana.subject,
        "Os seus bilhetes para Noite de Fado — São Jorge"
    );
    for body in [&to_joana.text, &to_joana.html] {
        assert!(body.contains("Joana Gonçalves Ñúñez"), "{body}");
        assert!(
            body.contains("Saturday 12 December 2026, 20:00 WET (UTC+00:00)"),
            "{body}"
        );
        assert!(body.contains("EUR 85.00"), "{body}");
        assert!(body.contains("Plateia em pé"), "{body}");
    }
    assert_eq!(
        to_joana.message_id,
        format!("tickets.{}@boxoffice.example", joana.order_id)
    );
    assert_eq!(to_joana.attachments.len(), 1);
    let (name, pdf) = &to_joana.attachments[0];
    assert_eq!(name, &format!("tickets-{}.pdf", joana.order_id));
    let (text, codes) = read_pdf(&dir.path().join("read-joana"), pdf);
    for needle in [
        "Joana Gonçalves Ñúñez",
        "Noite de Fado — São Jorge",
        "Coliseu dos Recreios",
        "Plateia em pé",
        joana.order_id.as_str(),
    ] {
        assert!(
            text.contains(needle),
            "{needle} not in the PDF's text:\n{text}"
        );
    }
    let issued: Vec<String> = joana.tickets.iter().map(|t| t.token.clone()).collect();
    assert_eq!(codes, issued, "each page's QR code is its ticket's token");

    let to_ana = by_to("ana@example.com");
    assert_eq!(to_ana.subject, "Your tickets for Noite de Fado — São Jorge");
    let (text, codes) = read_pdf(&dir.path().join("read-ana"), &to_ana.attachments[0].1);
    assert!(text.contains("Balcão"), "{text}");
    assert_eq!(codes.len(), 2);
    let notice = by_to("bruno@example.com");
    assert!(
        notice.subject.contains("is cancelled"),
        "{}",
        notice.subject
    );
    assert!(notice.text.contains("card declined"), "{}", notice.text);
    assert!(notice.attachments.is_empty());

    // Storefronts fetch the same file over gRPC.
    let mut files = TicketFilesClient::new(channel(tickets_adapter.field("grpc")).await);
    let file = ticket_file(&mut files, &joana.order_id, STOREFRONT)
        .await
        .unwrap();
    assert_eq!(&file.pdf, pdf);
    let refused = ticket_file(&mut files, &joana.order_id, "wrong-key")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let missing = ticket_file(&mut files, &uuid::Uuid::now_v7().to_string(), STOREFRONT)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // At the gate: the decoded token lets its ticket in once.
    let first = shop
        .scan(&codes_of(&joana)[0], "gate-a", "scan-1")
        .await
        .unwrap();
    assert_eq!(first.gate_id, "gate-a");
    let again = shop
        .scan(&codes_of(&joana)[0], "gate-b", "scan-2")
        .await
        .unwrap_err();
    assert_eq!(reason(&again), "ALREADY_CHECKED_IN");

    // Offline: a scan uploaded later lets the other ticket in, and counts once however often
    // it is uploaded.
    for expected in [
        v1::scan_result::Outcome::Admitted,
        v1::scan_result::Outcome::Repeated,
    ] {
        let uploaded = shop
            .check_in
            .upload_scans(keyed(
                v1::UploadScansRequest {
                    event_id: shop.event.clone(),
                    scans: vec![v1::OfflineScan {
                        token: issued[1].clone(),
                        gate_id: "gate-c".into(),
                        scan_id: "offline-1".into(),
                        scanned_at: Some(prost_types::Timestamp {
                            seconds: std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_secs() as i64,
                            nanos: 0,
                        }),
                    }],
                },
                KEY,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(uploaded.results[0].outcome, expected as i32);
    }
    let stats = shop
        .check_in
        .get_check_in_stats(keyed(
            v1::GetCheckInStatsRequest {
                event_id: shop.event.clone(),
            },
            KEY,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.admitted, stats.conflicts), (2, 0));

    // A refunded order's tickets are refused at the gate, and its buyer is told.
    shop.refund(&ana, "the buyer cannot come").await;
    let void = shop
        .scan(&ana.tickets[0].token, "gate-a", "scan-3")
        .await
        .unwrap_err();
    assert_eq!(reason(&void), "TICKET_VOID");
    let mail = received(&smtp, 4).await;
    let refund = mail
        .iter()
        .find(|m| m.to == "ana@example.com" && m.subject.contains("refunded"))
        .expect("the refund notice");
    assert!(refund.text.contains("EUR 126.00"), "{}", refund.text);

    // An operator resends Joana's tickets to a corrected address: a send of its own, once.
    let mut operator = MailClient::new(channel(email_adapter.field("grpc")).await);
    for _ in 0..2 {
        let resent = operator
            .resend_tickets(keyed(
                v1::ResendTicketsRequest {
                    order_id: joana.order_id.clone(),
                    email: "joana.goncalves@example.pt".into(),
                    request_id: "fix-address-1".into(),
                },
                OPERATOR,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resent.state, v1::SendState::Sent as i32);
    }
    let mail = received(&smtp, 5).await;
    let resent = mail
        .iter()
        .find(|m| m.to == "joana.goncalves@example.pt")
        .expect("the resend");
    assert_eq!(resent.attachments[0].1, *pdf);
    assert_eq!(
        send_kinds(&mut operator, &joana.order_id).await,
        ["tickets", "resend:fix-address-1"]
    );
    let bad = operator
        .resend_tickets(keyed(
            v1::ResendTicketsRequest {
                order_id: joana.order_id.clone(),
                email: String::new(),
                request_id: "has spaces".into(),
            },
            OPERATOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // Every message delivered again (a new consumer group on the same ledger reads both
    // topics from the start): nothing is sent twice.
    email_adapter.stop();
    let replay = email(
        &dir.path().join("email"),
        &broker.addr,
        &smtp,
        &["--group", "boxoffice-email-replay"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let skipped = "boxoffice_email_skipped_total{why=\"sent_before\"}";
    while replay.metric(skipped).await.unwrap_or(0.0) < 4.0 {
        assert!(
            Instant::now() < deadline,
            "the replay never read the sends again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(smtp.messages().len(), 5, "nothing sent twice");
    stop_boxoffice(server).await;
}

/// `GetTicketFile(order_id)` with `key`.
async fn ticket_file(
    files: &mut TicketFilesClient<Channel>,
    order_id: &str,
    key: &str,
) -> Result<v1::GetTicketFileResponse, tonic::Status> {
    files
        .get_ticket_file(keyed(
            v1::GetTicketFileRequest {
                order_id: order_id.into(),
            },
            key,
        ))
        .await
        .map(|r| r.into_inner())
}

/// Waits until `adapter` counts `count` sends parked (`what`, in the failure); then what
/// `ListParked` lists.
async fn parked_sends(
    adapter: &Process,
    operator: &mut MailClient<Channel>,
    count: u32,
    what: &str,
) -> Vec<v1::Send> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while adapter.metric("boxoffice_email_parked").await != Some(f64::from(count)) {
        assert!(Instant::now() < deadline, "{what} never parked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator
        .list_parked(keyed(v1::ListParkedRequest { page_size: 0 }, OPERATOR))
        .await
        .unwrap()
        .into_inner()
        .sends
}

fn codes_of(order: &v1::Order) -> Vec<String> {
    order.tickets.iter().map(|t| t.token.clone()).collect()
}

/// The kinds of an order's sends, in order, as the email adapter lists them.
async fn send_kinds(operator: &mut MailClient<Channel>, order_id: &str) -> Vec<String> {
    let request = v1::ListSendsRequest {
        order_id: order_id.into(),
    };
    let sends = operator.list_sends(keyed(request, OPERATOR)).await;
    sends
        .unwrap()
        .into_inner()
        .sends
        .into_iter()
        .map(|s| s.kind)
        .collect()
}

fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_ticket_and_email_adapters_leave_one_file_and_one_email_per_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let smtp = Smtp::start(&dir.path().join("smtp"));
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let _payments = payments(&dir.path().join("payments"), &broker.addr);
    let tickets_dir = dir.path().join("tickets");
    let mut tickets_adapter = tickets(&tickets_dir, &broker.addr);
    let mut email_adapter = email(&dir.path().join("email"), &broker.addr, &smtp, &[]);

    let mut orders = Vec::new();
    for n in 0..30 {
        let buyer = format!("buyer{n}@example.com");
        orders.push(
            shop.order(
                &format!("c{n}"),
                "GA",
                2,
                "test:approve",
                contact(&buyer, "", ""),
            )
            .await,
        );
        // Both killed mid-stream, at different moments, and started again.
        if n == 8 {
            tickets_adapter.kill();
            tickets_adapter.restart();
        }
        if n == 14 {
            email_adapter.kill();
            email_adapter.restart();
        }
        if n == 20 {
            tickets_adapter.kill();
            email_adapter.kill();
            tickets_adapter.restart();
            email_adapter.restart();
        }
    }
    let orders = shop.settled(&orders).await;
    assert!(
        orders
            .iter()
            .all(|o| o.status == v1::OrderStatus::Paid as i32)
    );

    // Every order's email, once. A send the kill caught between "recorded" and "sent" is
    // UNKNOWN and not sent again by itself: the operator sees it and retries it if its buyer
    // got nothing.
    let mut operator = MailClient::new(channel(email_adapter.field("grpc")).await);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let unknown = operator
            .list_parked(keyed(v1::ListParkedRequest { page_size: 0 }, OPERATOR))
            .await
            .unwrap()
            .into_inner()
            .sends;
        let arrived: BTreeSet<String> = smtp.messages().iter().map(|m| parse(m).to).collect();
        let missing: Vec<&v1::Order> = orders
            .iter()
            .filter(|o| !arrived.contains(&o.contact.as_ref().unwrap().email))
            .collect();
        if missing.is_empty() {
            break;
        }
        for send in &unknown {
            assert_eq!(send.state, v1::SendState::Unknown as i32, "{send:?}");
            if missing.iter().any(|o| o.order_id == send.order_id) {
                operator
                    .retry_send(keyed(
                        v1::RetrySendRequest {
                            order_id: send.order_id.clone(),
                            kind: send.kind.clone(),
                        },
                        OPERATOR,
                    ))
                    .await
                    .unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} orders have no email: {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut per_address: BTreeMap<String, usize> = BTreeMap::new();
    for raw in smtp.messages() {
        *per_address.entry(parse(&raw).to).or_default() += 1;
    }
    assert_eq!(per_address.len(), orders.len());
    assert!(
        per_address.values().all(|&n| n == 1),
        "an order emailed twice: {per_address:?}"
    );

    // One file per order, each announced.
    tickets_adapter.stop();
    email_adapter.stop();
    let listed = Command::new(env!("CARGO_BIN_EXE_boxoffice-tickets"))
        .args(["files", "--data-dir", tickets_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert_eq!(listed.lines().count(), orders.len(), "{listed}");
    assert!(
        listed.lines().all(|l| l.contains("published=true")),
        "{listed}"
    );
    let files: usize = std::fs::read_dir(tickets_dir.join("files"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(files, orders.len(), "one file per order, no leftovers");
    stop_boxoffice(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_the_smtp_server_keeps_refusing_is_parked_and_sent_once_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let mut smtp = Smtp::start(&dir.path().join("smtp"));
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let _payments = payments(&dir.path().join("payments"), &broker.addr);
    let _tickets = tickets(&dir.path().join("tickets"), &broker.addr);
    smtp.stop();
    let email_adapter = email(
        &dir.path().join("email"),
        &broker.addr,
        &smtp,
        &["--max-attempts", "3", "--retry-base-ms", "100"],
    );
    let order = shop
        .order(
            "c-1",
            "GA",
            1,
            "test:approve",
            contact("carla@example.com", "Carla", "en"),
        )
        .await;
    shop.settled(std::slice::from_ref(&order)).await;

    // Three attempts against no server, then parked: counted and listed.
    let mut operator = MailClient::new(channel(email_adapter.field("grpc")).await);
    let parked = parked_sends(&email_adapter, &mut operator, 1, "the send").await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].state, parked[0].attempts, parked[0].kind.as_str()),
        (v1::SendState::Parked as i32, 3, "tickets")
    );
    assert!(
        parked[0].detail.contains("gave up after 3 attempts"),
        "{:?}",
        parked[0]
    );

    // The server back, the operator retries: sent once; a second retry is refused.
    smtp.restart();
    let retry = v1::RetrySendRequest {
        order_id: order.order_id.clone(),
        kind: "tickets".into(),
    };
    let sent = operator
        .retry_send(keyed(retry.clone(), OPERATOR))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.state, v1::SendState::Sent as i32);
    assert_eq!(received(&smtp, 1).await.len(), 1);
    let again = operator
        .retry_send(keyed(retry, OPERATOR))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        email_adapter.metric("boxoffice_email_parked").await,
        Some(0.0)
    );
    let unauthorised = operator
        .list_parked(keyed(v1::ListParkedRequest { page_size: 0 }, STOREFRONT))
        .await
        .unwrap_err();
    assert_eq!(unauthorised.code(), tonic::Code::Unauthenticated);

    // A recipient the server refuses for good (550) is parked at once; one it refuses for now
    // (451) is tried again, then parked. Neither is ever in the maildir.
    let refused = shop
        .order(
            "c-2",
            "GA",
            1,
            "test:approve",
            contact("refuse@example.com", "", ""),
        )
        .await;
    let busy = shop
        .order(
            "c-3",
            "GA",
            1,
            "test:approve",
            contact("busy@example.com", "", ""),
        )
        .await;
    shop.settled(&[refused.clone(), busy.clone()]).await;
    let parked = parked_sends(&email_adapter, &mut operator, 2, "the refusals").await;
    let of = |order: &v1::Order| {
        parked
            .iter()
            .find(|s| s.order_id == order.order_id)
            .unwrap_or_else(|| panic!("order {} not parked: {parked:?}", order.order_id))
            .clone()
    };
    let refused_order = refused.clone();
    let (refused, busy) = (of(&refused), of(&busy));
    assert_eq!(
        (refused.state, refused.attempts),
        (v1::SendState::Parked as i32, 1)
    );
    assert!(refused.detail.contains("550"), "{refused:?}");
    assert_eq!(
        (busy.state, busy.attempts),
        (v1::SendState::Parked as i32, 3)
    );
    assert!(busy.detail.contains("gave up after 3 attempts"), "{busy:?}");
    assert!(busy.detail.contains("451"), "{busy:?}");
    assert_eq!(smtp.messages().len(), 1, "only the retried email arrived");

    // The parked order is refunded: its tickets are void, and an operator's retry of them is
    // refused (the refund notice to the same refusing address is parked in its turn).
    shop.refund(&refused_order, "refused address").await;
    parked_sends(&email_adapter, &mut operator, 3, "the refund notice").await;
    let void = operator
        .retry_send(keyed(
            v1::RetrySendRequest {
                order_id: refused_order.order_id.clone(),
                kind: "tickets".into(),
            },
            OPERATOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (void.code(), reason(&void).as_str()),
        (tonic::Code::FailedPrecondition, "ORDER_REFUNDED")
    );
    assert_eq!(smtp.messages().len(), 1, "nothing more arrived");
    stop_boxoffice(server).await;
}

/// An order refunded right after it was paid: the refund is read before its tickets are rendered
/// (the ticket-file adapter is not running yet). The buyer gets the refund notice and never the
/// void tickets after it; an operator cannot resend them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_rendered_after_their_order_was_refunded_are_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let smtp = Smtp::start(&dir.path().join("smtp"));
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let _payments = payments(&dir.path().join("payments"), &broker.addr);
    let email_adapter = email(&dir.path().join("email"), &broker.addr, &smtp, &[]);
    let order = shop
        .order(
            "c-1",
            "GA",
            2,
            "test:approve",
            contact("dora@example.com", "Dora", "en"),
        )
        .await;
    let paid = shop.settled(std::slice::from_ref(&order)).await;
    assert_eq!(paid[0].status, v1::OrderStatus::Paid as i32);
    shop.refund(&order, "event moved").await;
    let mail = received(&smtp, 1).await;
    assert!(mail[0].subject.contains("refunded"), "{}", mail[0].subject);

    // Now the tickets are rendered and announced: read, and not sent.
    let _tickets = tickets(&dir.path().join("tickets"), &broker.addr);
    let skipped = "boxoffice_email_skipped_total{why=\"refunded\"}";
    let deadline = Instant::now() + Duration::from_secs(90);
    while email_adapter.metric(skipped).await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the void tickets were never read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut operator = MailClient::new(channel(email_adapter.field("grpc")).await);
    let resend = operator
        .resend_tickets(keyed(
            v1::ResendTicketsRequest {
                order_id: order.order_id.clone(),
                email: "dora@example.net".into(),
                request_id: "r-1".into(),
            },
            OPERATOR,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (resend.code(), reason(&resend).as_str()),
        (tonic::Code::FailedPrecondition, "ORDER_REFUNDED")
    );
    assert_eq!(
        send_kinds(&mut operator, &order.order_id).await,
        ["refunded"]
    );
    assert_eq!(smtp.messages().len(), 1, "the refund notice only");
    stop_boxoffice(server).await;
}

/// The flags of an adapter whose files are in `bucket` of `s3`.
fn s3_flags(s3: &S3, bucket: &str) -> Vec<String> {
    [
        "--files-s3-bucket",
        bucket,
        "--files-s3-endpoint",
        &s3.endpoint,
        "--files-s3-region",
        "eu-west-1",
    ]
    .map(String::from)
    .to_vec()
}

/// The standard AWS variables of a process using `s3` with `secret_key`.
fn s3_env(s3: &S3, secret_key: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), s3.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret_key.into()),
    ]
}

/// `email` reading `s3://` files from `bucket` of `s3`, with `extra` flags.
fn email_from_s3(
    dir: &Path,
    brokers: &str,
    smtp: &Smtp,
    (s3, bucket): (&S3, &str),
    extra: &[&str],
) -> Process {
    let flags = s3_flags(s3, bucket);
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    email_with(dir, brokers, smtp, &flags, s3_env(s3, &s3.secret_key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_file_kept_in_s3_is_served_and_attached_from_its_bucket() {
    use object_store::ObjectStoreExt;
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let smtp = Smtp::start(&dir.path().join("smtp"));
    let s3 = S3::start(&dir.path().join("s3"));
    s3.make_bucket("tickets");
    s3.make_bucket("other");
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let _payments = payments(&dir.path().join("payments"), &broker.addr);
    let tickets_dir = dir.path().join("tickets");
    let mut flags = s3_flags(&s3, "tickets");
    flags.extend(["--files-s3-prefix".into(), "boxoffice/".into()]);
    let tickets_adapter = tickets_with(
        &tickets_dir,
        &broker.addr,
        &flags,
        s3_env(&s3, &s3.secret_key),
    );
    let _email = email_from_s3(
        &dir.path().join("email"),
        &broker.addr,
        &smtp,
        (&s3, "tickets"),
        &[],
    );

    let order = shop
        .order(
            "c-rita",
            "GA",
            2,
            "test:approve",
            contact("rita@example.pt", "Rita", "pt"),
        )
        .await;
    let order = shop.settled(std::slice::from_ref(&order)).await.remove(0);
    assert_eq!(order.status, v1::OrderStatus::Paid as i32);

    // The email arrives with the PDF attached...
    let mail = received(&smtp, 1).await;
    assert_eq!(mail[0].to, "rita@example.pt");
    assert_eq!(mail[0].attachments.len(), 1);
    let pdf = &mail[0].attachments[0].1;
    let (text, codes) = read_pdf(&dir.path().join("read-rita"), pdf);
    assert!(text.contains(&order.order_id), "{text}");
    assert_eq!(codes, codes_of(&order));

    // ...read from the bucket, where it is at <prefix><event>/<order>.pdf (read back here with
    // object_store on its own), and nowhere on disk.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bucket = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region("eu-west-1")
        .with_bucket_name("tickets")
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key(&s3.secret_key)
        .build()
        .unwrap();
    let key = format!("boxoffice/{}/{}.pdf", order.event_id, order.order_id);
    let object = bucket
        .get(&object_store::path::Path::from(key.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&object[..], &pdf[..], "the attachment is the object");
    assert!(
        !tickets_dir.join("files").exists(),
        "no file written to the local directory"
    );

    // Storefronts get the same bytes over gRPC, with their SHA-256.
    let mut files = TicketFilesClient::new(channel(tickets_adapter.field("grpc")).await);
    let file = ticket_file(&mut files, &order.order_id, STOREFRONT)
        .await
        .unwrap();
    assert_eq!(&file.pdf, pdf);
    assert_eq!(
        file.file_sha256,
        adapters::tickets::store::hex(&sha2::Sha256::digest(pdf))
    );

    // An email adapter given another bucket parks the send, saying why, and sends nothing.
    let elsewhere = email_from_s3(
        &dir.path().join("email-other"),
        &broker.addr,
        &smtp,
        (&s3, "other"),
        &["--group", "boxoffice-email-other"],
    );
    let mut operator = MailClient::new(channel(elsewhere.field("grpc")).await);
    let parked = parked_sends(
        &elsewhere,
        &mut operator,
        1,
        "the send of a foreign bucket's file",
    )
    .await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (parked[0].state, parked[0].attempts),
        (v1::SendState::Parked as i32, 1)
    );
    assert!(
        parked[0]
            .detail
            .contains("is in S3 bucket `tickets`, not in `other`"),
        "{:?}",
        parked[0]
    );
    assert_eq!(
        smtp.messages().len(),
        1,
        "nothing sent from the other bucket"
    );
    stop_boxoffice(server).await;
}

#[test]
fn the_ticket_file_adapter_does_not_start_when_its_bucket_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(&dir.path().join("s3"));
    s3.make_bucket("tickets");
    // No broker: the bucket is checked before anything else, so a start that got past the check
    // would hang on Kafka and fail the test by its deadline.
    let start = |bucket: &str, secret_key: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_boxoffice-tickets"));
        command
            .arg("run")
            .args(common(&dir.path().join("tickets"), "127.0.0.1:1"))
            .args(s3_flags(&s3, bucket))
            .envs(s3_env(&s3, secret_key));
        let out =
            testkit::output_within(&mut command, Duration::from_secs(60), "boxoffice-tickets");
        assert!(!out.status.success(), "it started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let refused = start("tickets", "not-the-secret");
    let expected = format!(
        "S3 bucket `tickets` at {}: credentials refused (check AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY)",
        s3.endpoint
    );
    assert!(refused.contains(&expected), "{refused}");
    let missing = start("no-such-bucket", &s3.secret_key);
    assert!(
        missing.contains(&format!(
            "S3 bucket `no-such-bucket` at {}: no such bucket",
            s3.endpoint
        )),
        "{missing}"
    );
}

/// STARTTLS and SMTPS for real: aiosmtpd with a certificate for 127.0.0.1 from a CA of its own.
/// An adapter told to trust that CA delivers over either; one that does not trust it, or one
/// that would speak plain text to a server requiring STARTTLS, delivers nothing and parks the
/// send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_out_over_starttls_or_smtps_only_to_a_server_it_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let starttls = Smtp::start_tls(&dir.path().join("smtp-starttls"), "starttls");
    let smtps = Smtp::start_tls(&dir.path().join("smtp-smtps"), "smtps");
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let _payments = payments(&dir.path().join("payments"), &broker.addr);
    let _tickets = tickets(&dir.path().join("tickets"), &broker.addr);
    let ca = |smtp: &Smtp| smtp.ca.as_ref().unwrap().display().to_string();
    // Each adapter reads every message (a consumer group of its own) and gives up quickly.
    let adapter = |name: &str, smtp: &Smtp, security: &str, extra: &[&str]| {
        let mut args = vec![
            "--group",
            name,
            "--smtp-security",
            security,
            "--max-attempts",
            "2",
            "--retry-base-ms",
            "100",
        ];
        args.extend_from_slice(extra);
        email(&dir.path().join(name), &broker.addr, smtp, &args)
    };
    let starttls_ca = ca(&starttls);
    let smtps_ca = ca(&smtps);
    let _over_starttls = adapter(
        "trusting-starttls",
        &starttls,
        "starttls",
        &["--smtp-ca-file", &starttls_ca],
    );
    let _over_smtps = adapter(
        "trusting-smtps",
        &smtps,
        "tls",
        &["--smtp-ca-file", &smtps_ca],
    );
    let untrusting = adapter("untrusting", &starttls, "starttls", &[]);
    let plain = adapter("plain", &starttls, "none", &[]);

    let order = shop
        .order(
            "c-1",
            "GA",
            1,
            "test:approve",
            contact("eva@example.com", "Eva", "en"),
        )
        .await;
    shop.settled(std::slice::from_ref(&order)).await;
    let by_starttls = received(&starttls, 1).await;
    let by_smtps = received(&smtps, 1).await;
    for mail in [&by_starttls[0], &by_smtps[0]] {
        assert_eq!(mail.to, "eva@example.com");
        assert!(mail.text.contains("Eva"), "{}", mail.text);
        assert_eq!(mail.attachments.len(), 1);
    }
    // The one that does not trust the CA never gets past the handshake: parked after its two
    // attempts; the plain one is refused by the server (530, STARTTLS first): parked at once.
    let mut details = Vec::new();
    for (adapter, what) in [(&untrusting, "untrusting"), (&plain, "plain")] {
        let mut operator = MailClient::new(channel(adapter.field("grpc")).await);
        let parked = parked_sends(adapter, &mut operator, 1, what).await;
        assert_eq!(parked.len(), 1, "{parked:?}");
        details.push((parked[0].attempts, parked[0].detail.clone()));
    }
    assert_eq!(details[0].0, 2, "{details:?}");
    assert!(
        details[0].1.to_lowercase().contains("certificate"),
        "{details:?}"
    );
    assert!(details[1].1.contains("530"), "{details:?}");
    assert_eq!(
        starttls.messages().len(),
        1,
        "nothing but the trusting adapter's email"
    );
    stop_boxoffice(server).await;
}
