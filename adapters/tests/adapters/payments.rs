//! The payment adapter end to end: a real tansu broker (scripts/broker.sh), boxoffice serving in
//! this process with its relay and payment-result consumer, and `boxoffice-payments` as a real
//! process, killed with SIGKILL mid-stream. Orders are confirmed over gRPC and their outcome read
//! back over gRPC and from the adapter's ledger.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::v1;
use proto::v1::event_admin_client::EventAdminClient;
use proto::v1::reservations_client::ReservationsClient;
use testkit::{Broker, output_within, wait_within};

use super::support::{KEY, boxoffice, keyed, stop_boxoffice};
use tonic::Request;
use tonic::transport::Channel;

const OPERATOR: &str = "wallet-operator-key";
const READER: &str = "wallet-reader-key";

/// How long boxoffice or the adapter may take to start (the adapter waits for the broker's
/// topics first).
const START_WITHIN: Duration = Duration::from_secs(60);
/// How long a process may take to exit once told (SIGTERM, SIGKILL), boxoffice to stop, and
/// the test's runtime to shut down.
const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// How long one call may take: gRPC to boxoffice, HTTP to the adapter's metrics, `charges`.
const CALL_WITHIN: Duration = Duration::from_secs(30);

/// The adapter process; killed when dropped.
struct PaymentAdapter {
    child: Option<Child>,
    data_dir: PathBuf,
    brokers: String,
    metrics: String,
    /// The Wallet service's address.
    grpc: String,
    /// The webhook endpoint's URL, or "off".
    webhooks: String,
    extra: Vec<String>,
}

impl PaymentAdapter {
    fn start(data_dir: &Path, brokers: &str) -> PaymentAdapter {
        PaymentAdapter::start_with(data_dir, brokers, &[])
    }

    fn start_with(data_dir: &Path, brokers: &str, extra: &[String]) -> PaymentAdapter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice-payments"))
            .args([
                "run",
                "--brokers",
                brokers,
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env(
                "BOXOFFICE_PAYMENTS_API_KEYS",
                format!(
                    "{}:wallet-operator,wallet-reader {}:wallet-reader",
                    server::auth::hash_key(OPERATOR),
                    server::auth::hash_key(READER)
                ),
            )
            .args(extra)
            .env("BOXOFFICE_PAYMENTS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn boxoffice-payments");
        // Its first line says it runs; read on a thread of its own, so that an adapter that never
        // says so (it waits for a broker that is not there) fails the test instead of hanging it.
        let stdout = child.stdout.take().unwrap();
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = line_tx.send(read.map(|_| line));
        });
        let line = match line_rx.recv_timeout(START_WITHIN) {
            Ok(Ok(line)) if line.starts_with("boxoffice-payments running ") => line,
            read => {
                let _ = child.kill();
                let exit = wait_within(&mut child, EXIT_WITHIN);
                panic!(
                    "the adapter did not say it runs within {START_WITHIN:?} (its log is above; \
                     brokers {brokers}): read {read:?}, exit {exit:?}"
                );
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap()
                .to_string()
        };
        let (metrics, grpc, webhooks) = (field("metrics="), field("grpc="), field("webhooks="));
        PaymentAdapter {
            grpc,
            webhooks,
            extra: extra.to_vec(),
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            brokers: brokers.to_string(),
            metrics,
        }
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        assert!(
            wait_within(&mut child, EXIT_WITHIN).is_some(),
            "the adapter still runs {EXIT_WITHIN:?} after SIGKILL"
        );
    }

    fn restart(&mut self) {
        *self = PaymentAdapter::start_with(
            &self.data_dir.clone(),
            &self.brokers.clone(),
            &self.extra.clone(),
        );
    }

    /// SIGTERM; it must exit 0, within `EXIT_WITHIN`.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let Some(exit) = wait_within(&mut child, EXIT_WITHIN) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the adapter did not exit within {EXIT_WITHIN:?} of SIGTERM; killed");
        };
        assert!(
            exit.success(),
            "the adapter exited with {exit} after SIGTERM"
        );
    }

    /// `boxoffice-payments charges`, as lines.
    fn ledger(&self) -> Vec<String> {
        let out = output_within(
            Command::new(env!("CARGO_BIN_EXE_boxoffice-payments"))
                .arg("charges")
                .arg("--data-dir")
                .arg(&self.data_dir),
            CALL_WITHIN,
            "boxoffice-payments charges",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for PaymentAdapter {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_within(&mut child, EXIT_WITHIN);
        }
    }
}

fn req<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    request
}

struct Shop {
    admin: EventAdminClient<Channel>,
    reservations: ReservationsClient<Channel>,
    event: String,
}

impl Shop {
    async fn open(addr: std::net::SocketAddr) -> Shop {
        Shop::open_with_payment_ttl(addr, 0).await
    }

    /// A shop whose event gives orders `payment_ttl_seconds` to be paid (0: the default).
    async fn open_with_payment_ttl(addr: std::net::SocketAddr, payment_ttl_seconds: u32) -> Shop {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(CALL_WITHIN)
            .timeout(CALL_WITHIN)
            .connect()
            .await
            .unwrap();
        let mut admin = EventAdminClient::new(channel.clone());
        let event = admin
            .create_event(req(v1::CreateEventRequest {
                name: "Adapter night".into(),
                venue: "Hall".into(),
                starts_at: Some(prost_types_timestamp(4_000_000_000)),
                status: v1::EventStatus::OnSale as i32,
                currency: "EUR".into(),
                default_hold_ttl_seconds: 600,
                payment_ttl_seconds,
                tiers: vec![v1::Tier {
                    code: "GA".into(),
                    name: "Standing".into(),
                    price_minor: 4_000,
                    fee_minor: 200,
                    max_per_order: 4,
                    sale_windows: vec![],
                    stock: Some(v1::tier::Stock::GeneralAdmission(v1::GeneralAdmission {
                        capacity: 1_000,
                    })),
                }],
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .event
            .unwrap()
            .event_id;
        Shop {
            admin,
            reservations: ReservationsClient::new(channel),
            event,
        }
    }

    /// Holds 2 tickets for a new customer and confirms them with `reference`.
    async fn order(&mut self, n: usize, reference: &str) -> v1::Order {
        self.order_for(&format!("buyer-{n}"), reference).await
    }

    /// Holds 2 tickets (2 x 4,200) for `customer` and confirms them with `reference`.
    async fn order_for(&mut self, customer: &str, reference: &str) -> v1::Order {
        let hold = self
            .reservations
            .reserve(req(v1::ReserveRequest {
                event_id: self.event.clone(),
                customer_id: customer.to_string(),
                items: vec![v1::ReserveItem {
                    tier_code: "GA".into(),
                    selection: Some(v1::reserve_item::Selection::Quantity(2)),
                }],
                hold_ttl_seconds: None,
                idempotency_key: String::new(),
            }))
            .await
            .unwrap()
            .into_inner()
            .hold
            .unwrap();
        self.reservations
            .confirm(req(v1::ConfirmRequest {
                event_id: self.event.clone(),
                hold_id: hold.hold_id,
                payment: Some(v1::Payment {
                    reference: reference.into(),
                }),
                idempotency_key: String::new(),
                contact: None,
            }))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    async fn get(&mut self, order: &v1::Order) -> v1::Order {
        self.reservations
            .get_order(req(v1::GetOrderRequest {
                event_id: order.event_id.clone(),
                order_id: order.order_id.clone(),
            }))
            .await
            .unwrap()
            .into_inner()
            .order
            .unwrap()
    }

    /// Waits until no order of `orders` is pending payment; their states.
    async fn settled(&mut self, orders: &[v1::Order], within: Duration) -> Vec<v1::Order> {
        let deadline = Instant::now() + within;
        loop {
            let mut now = Vec::with_capacity(orders.len());
            for o in orders {
                now.push(self.get(o).await);
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
}

/// Runs `test` on a runtime of its own (two workers, as `#[tokio::test(flavor =
/// "multi_thread", worker_threads = 2)]`) with a directory and a broker in it, and shuts the
/// runtime down before the broker stops. boxoffice's payment-result consumer, closing, waits
/// in rdkafka's `BaseConsumer::drop` for librdkafka to commit its last offsets, which needs the
/// group coordinator; after a broker restart the coordinator may not be back yet, and with the
/// broker stopped that commit never came: the runtime's shutdown, which waited for the task,
/// hung the test for good. The server now closes that consumer on a thread with a deadline and
/// `Running::stop` waits for it; stopping the broker last keeps the commit possible, and the
/// shutdown has a deadline too.
fn with_broker(test: impl AsyncFnOnce(&Path, &mut Broker)) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("broker"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(test(dir.path(), &mut broker))
    }));
    let (shut_down_tx, shut_down) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(runtime);
        let _ = shut_down_tx.send(());
    });
    let shut_down = shut_down.recv_timeout(EXIT_WITHIN);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(
        shut_down.is_ok(),
        "the test's runtime did not shut down within {EXIT_WITHIN:?}, the broker still up: a \
         task of boxoffice's still runs"
    );
}

/// Asserts that the ledger holds `order`'s charge, marked published.
fn assert_published(ledger: &[String], order: &str) {
    assert!(
        ledger
            .iter()
            .any(|l| l.starts_with(&format!("charge order={order} "))
                && l.contains("published=true")),
        "order {order} not published: {ledger:#?}"
    );
}

fn prost_types_timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// The adapter's `/metrics` page.
async fn metrics_text(adapter: &PaymentAdapter) -> String {
    let client = reqwest::Client::builder()
        .timeout(CALL_WITHIN)
        .build()
        .unwrap();
    client
        .get(&adapter.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn metric(adapter: &PaymentAdapter, line_start: &str) -> Option<f64> {
    let body = metrics_text(adapter).await;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_order_is_charged_once_and_paid_or_cancelled_across_an_adapter_kill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let mut adapter = PaymentAdapter::start(&dir.path().join("payments"), &broker.addr);

    // Every outcome the test provider has.
    let mut orders = Vec::new();
    for (n, reference) in [
        "test:approve",
        "test:decline",
        "test:fail-then-approve",
        "test:slow",
        "card-without-scheme",
    ]
    .into_iter()
    .enumerate()
    {
        orders.push(shop.order(n, reference).await);
    }
    let settled = shop.settled(&orders, Duration::from_secs(60)).await;
    let statuses: Vec<(i32, usize)> = settled
        .iter()
        .map(|o| (o.status, o.tickets.len()))
        .collect();
    let paid = (v1::OrderStatus::Paid as i32, 2);
    assert_eq!(
        statuses,
        vec![
            paid,
            (v1::OrderStatus::Cancelled as i32, 0),
            paid,
            paid,
            paid // the default provider, test, approves a reference without a scheme
        ]
    );
    assert_eq!(
        settled[1].cancel_cause,
        v1::CancelCause::PaymentDeclined as i32
    );
    assert_eq!(settled[1].cancel_reason, "card declined");
    for o in &settled {
        if let Some(p) = &o.payment {
            assert_eq!(
                (p.provider.as_str(), p.amount_minor),
                ("test", o.total_minor)
            );
        }
    }
    assert_eq!(
        metric(
            &adapter,
            "boxoffice_payments_charges_total{provider=\"test\",outcome=\"failed\"}"
        )
        .await,
        Some(1.0),
        "fail-then-approve failed once"
    );

    // Forty more, and the adapter killed while they are being charged, then started again.
    let mut more = Vec::new();
    for n in 0..40 {
        more.push(shop.order(100 + n, "test:approve").await);
        if n == 10 {
            adapter.kill();
        }
    }
    adapter.restart();
    let settled_more = shop.settled(&more, Duration::from_secs(90)).await;
    assert!(
        settled_more
            .iter()
            .all(|o| o.status == v1::OrderStatus::Paid as i32 && o.tickets.len() == 2),
        "{settled_more:#?}"
    );

    // A refund: the adapter gives the money back, once.
    let paid_order = &settled[0];
    shop.admin
        .refund_order(req(v1::RefundOrderRequest {
            event_id: paid_order.event_id.clone(),
            order_id: paid_order.order_id.clone(),
            reason: "changed plans".into(),
            idempotency_key: String::new(),
        }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&adapter, "boxoffice_payments_refunds_total").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the refund never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    adapter.stop();

    // The ledger: one charge per order at the provider, whatever the kill repeated.
    let ledger = adapter.ledger();
    let mut provider_charges: HashMap<String, u32> = HashMap::new();
    for line in &ledger {
        if let Some(order) = line.strip_prefix("test-provider charge:") {
            *provider_charges.entry(order.to_string()).or_default() += 1;
        }
    }
    let all: Vec<&v1::Order> = orders.iter().chain(&more).collect();
    assert_eq!(provider_charges.len(), all.len(), "{ledger:#?}");
    for o in &all {
        assert_eq!(
            provider_charges.get(&o.order_id),
            Some(&1),
            "order {}",
            o.order_id
        );
        assert_published(&ledger, &o.order_id);
    }
    let refunds: Vec<&String> = ledger.iter().filter(|l| l.starts_with("refund ")).collect();
    assert_eq!(refunds.len(), 1, "{ledger:#?}");
    assert!(refunds[0].contains(&paid_order.order_id) && refunds[0].contains("amount_minor=8400"));
    server.stop().await.unwrap();
}

/// Waits until `metric` of the adapter reads `wanted`.
async fn metric_until(adapter: &PaymentAdapter, line_start: &str, wanted: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !metric(adapter, line_start).await.is_some_and(&wanted) {
        assert!(Instant::now() < deadline, "{line_start} never as wanted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn charges_made_before_a_kill_between_charge_and_publish_are_published_once_after_a_broker_restart()
{
    with_broker(async |dir: &Path, broker: &mut Broker| {
        let server = boxoffice(dir, broker).await;
        let mut shop = Shop::open(server.grpc_addr).await;
        let mut adapter = PaymentAdapter::start(&dir.join("payments"), &broker.addr);
        let first = shop.order(0, "test:approve").await;
        shop.settled(std::slice::from_ref(&first), Duration::from_secs(60))
            .await;

        // Slow charges (2 s at the provider); the broker killed while the first of them are at
        // the provider, so their results are recorded in the ledger and cannot be published;
        // then the adapter killed: between charge and publish.
        let mut slow = Vec::new();
        for n in 1..=6 {
            slow.push(shop.order(n, "test:slow").await);
        }
        let in_flight = "boxoffice_payments_charges_in_flight{provider=\"test\"}";
        metric_until(&adapter, in_flight, |n| n >= 1.0).await;
        broker.kill();
        // The gauge counts a batch's results once they are recorded and flushed, after every
        // charge of the batch.
        let unpublished = "boxoffice_payments_results_unpublished";
        metric_until(&adapter, unpublished, |n| n >= 1.0).await;
        let approved = "boxoffice_payments_charges_total{provider=\"test\",outcome=\"approved\"}";
        let charged_before = metric(&adapter, approved).await.unwrap() as usize - 1;
        assert!(charged_before >= 1);
        assert_eq!(
            metric(&adapter, unpublished).await,
            Some(charged_before as f64),
            "each charge made is recorded, none published"
        );
        adapter.kill();
        let ledger = adapter.ledger();
        let unpublished: Vec<&String> = ledger
            .iter()
            .filter(|l| l.starts_with("charge order=") && l.contains("published=false"))
            .collect();
        assert_eq!(
            unpublished.len(),
            charged_before,
            "each charge made is recorded, none published: {ledger:#?}"
        );

        broker.restart();
        adapter.restart();
        let settled = shop.settled(&slow, Duration::from_secs(90)).await;
        for o in &settled {
            assert_eq!(
                (o.status, o.tickets.len()),
                (v1::OrderStatus::Paid as i32, 2),
                "{o:#?}"
            );
        }
        // The restarted adapter published what was recorded and charged only the rest.
        assert_eq!(
            metric(&adapter, approved).await.unwrap_or(0.0) as usize,
            slow.len() - charged_before
        );
        adapter.stop();
        let ledger = adapter.ledger();
        for o in std::iter::once(&first).chain(&slow) {
            let at_provider = ledger
                .iter()
                .filter(|l| *l == &format!("test-provider charge:{}", o.order_id))
                .count();
            assert_eq!(
                at_provider, 1,
                "order {} charged {at_provider} times",
                o.order_id
            );
            assert_published(&ledger, &o.order_id);
        }
        stop_boxoffice(server).await;
    });
}

async fn wallet_at(adapter: &PaymentAdapter) -> proto::v1::wallet_client::WalletClient<Channel> {
    proto::v1::wallet_client::WalletClient::new(
        Channel::from_shared(format!("http://{}", adapter.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

async fn balance_of(
    wallet: &mut proto::v1::wallet_client::WalletClient<Channel>,
    customer: &str,
) -> u64 {
    wallet
        .get_balance(keyed(
            v1::GetBalanceRequest {
                customer_id: customer.into(),
            },
            READER,
        ))
        .await
        .unwrap()
        .into_inner()
        .balance_minor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_pays_orders_from_its_balance_declines_past_it_and_takes_refunds_back_once() {
    use tonic::Code;
    use tonic_types::StatusExt;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let mut adapter = PaymentAdapter::start(&dir.path().join("payments"), &broker.addr);
    let mut wallet = wallet_at(&adapter).await;
    let top_up = |amount_minor: u64, currency: &str, key: &str| v1::TopUpRequest {
        customer_id: "wanda".into(),
        amount_minor,
        currency: currency.into(),
        idempotency_key: key.into(),
    };
    for _ in 0..2 {
        // The same key again: the first answer, nothing added.
        let balance = wallet
            .top_up(keyed(top_up(10_000, "EUR", "t-1"), OPERATOR))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (balance.balance_minor, balance.currency.as_str()),
            (10_000, "EUR")
        );
    }

    // Bad calls: each its code and reason; none changes the balance.
    let history = |size: u32, token: &str| v1::ListHistoryRequest {
        customer_id: "wanda".into(),
        page_size: size,
        page_token: token.into(),
    };
    let cases = [
        (
            "no key",
            wallet.top_up(keyed(top_up(1, "EUR", "b1"), "")).await.err(),
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        ),
        (
            "unknown key",
            wallet
                .top_up(keyed(top_up(1, "EUR", "b2"), "nope"))
                .await
                .err(),
            Code::Unauthenticated,
            "UNAUTHENTICATED",
        ),
        (
            "reader tops up",
            wallet
                .top_up(keyed(top_up(1, "EUR", "b3"), READER))
                .await
                .err(),
            Code::PermissionDenied,
            "PERMISSION_DENIED",
        ),
        (
            "zero amount",
            wallet
                .top_up(keyed(top_up(0, "EUR", "b4"), OPERATOR))
                .await
                .err(),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "bad currency",
            wallet
                .top_up(keyed(top_up(1, "euro", "b5"), OPERATOR))
                .await
                .err(),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "another currency",
            wallet
                .top_up(keyed(top_up(1, "USD", "b6"), OPERATOR))
                .await
                .err(),
            Code::FailedPrecondition,
            "WALLET_CURRENCY",
        ),
        (
            "no idempotency key",
            wallet
                .top_up(keyed(top_up(1, "EUR", ""), OPERATOR))
                .await
                .err(),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown customer",
            wallet
                .get_balance(keyed(
                    v1::GetBalanceRequest {
                        customer_id: "nobody".into(),
                    },
                    READER,
                ))
                .await
                .err(),
            Code::NotFound,
            "WALLET_NOT_FOUND",
        ),
        (
            "page too big",
            wallet
                .list_history(keyed(history(5_000, ""), READER))
                .await
                .err(),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "bad page token",
            wallet
                .list_history(keyed(history(0, "x"), READER))
                .await
                .err(),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ];
    for (name, status, code, why) in cases {
        let status = status.unwrap_or_else(|| panic!("{name} was accepted"));
        let reason = status
            .get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_default();
        assert_eq!(
            (status.code(), reason.as_str()),
            (code, why),
            "{name}: {status:?}"
        );
    }
    assert_eq!(balance_of(&mut wallet, "wanda").await, 10_000);

    // 8,400 paid from 10,000; the next 8,400 does not fit and is declined.
    let first = shop.order_for("wanda", "wallet:app").await;
    let paid = shop
        .settled(std::slice::from_ref(&first), Duration::from_secs(60))
        .await;
    assert_eq!(paid[0].status, v1::OrderStatus::Paid as i32);
    assert_eq!(paid[0].payment.as_ref().unwrap().provider, "wallet");
    assert_eq!(balance_of(&mut wallet, "wanda").await, 1_600);
    let second = shop.order_for("wanda", "wallet:app").await;
    let declined = shop
        .settled(std::slice::from_ref(&second), Duration::from_secs(60))
        .await;
    assert_eq!(declined[0].status, v1::OrderStatus::Cancelled as i32);
    assert_eq!(declined[0].cancel_reason, "insufficient funds");
    assert_eq!(balance_of(&mut wallet, "wanda").await, 1_600);

    // A refund credits the balance once, also across an adapter kill and restart.
    shop.admin
        .refund_order(req(v1::RefundOrderRequest {
            event_id: first.event_id.clone(),
            order_id: first.order_id.clone(),
            reason: "changed plans".into(),
            idempotency_key: String::new(),
        }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while balance_of(&mut wallet, "wanda").await != 10_000 {
        assert!(
            Instant::now() < deadline,
            "the refund never reached the wallet"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    adapter.kill();
    adapter.restart();
    let mut wallet = wallet_at(&adapter).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&adapter, "boxoffice_payments_consumer_lag_messages").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the restarted adapter never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(balance_of(&mut wallet, "wanda").await, 10_000);
    let page = wallet
        .list_history(keyed(history(2, ""), READER))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<i32> = page.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            v1::wallet_entry::Kind::Credit as i32,
            v1::wallet_entry::Kind::Debit as i32
        ]
    );
    assert_eq!(page.entries[1].order_id, first.order_id);
    let rest = wallet
        .list_history(keyed(history(10, &page.next_page_token), READER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.entries.len(), 1, "the top-up, once");
    assert_eq!(rest.entries[0].kind, v1::wallet_entry::Kind::TopUp as i32);
    adapter.stop();
    server.stop().await.unwrap();
}

/// A payment provider of the redirect-and-callback kind, on loopback in this test: payments are
/// made pending, found again under their idempotency key, settled when the test says so.
#[derive(Clone, Default)]
struct FakeProvider {
    state: std::sync::Arc<std::sync::Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    /// By payment id: the payment object.
    payments: HashMap<String, serde_json::Value>,
    /// Idempotency key -> payment id, and how many creations each key asked for.
    keys: HashMap<String, String>,
    creations: HashMap<String, u32>,
    refunds: HashMap<String, u32>,
}

impl FakeProvider {
    async fn serve(&self) -> String {
        use axum::Json;
        use axum::extract::{Path as UrlPath, State};
        use axum::http::HeaderMap;
        async fn create(
            State(p): State<FakeProvider>,
            headers: HeaderMap,
            Json(body): Json<serde_json::Value>,
        ) -> Json<serde_json::Value> {
            let key = headers["idempotency-key"].to_str().unwrap().to_string();
            let mut s = p.state.lock().unwrap();
            *s.creations.entry(key.clone()).or_default() += 1;
            if let Some(id) = s.keys.get(&key) {
                return Json(s.payments[id].clone());
            }
            let id = format!("pay_{}", s.keys.len() + 1);
            let payment = serde_json::json!({
                "id": id, "status": "pending",
                "amount_minor": body["amount_minor"], "currency": body["currency"],
                "order_id": body["order_id"],
            });
            s.keys.insert(key, id.clone());
            s.payments.insert(id, payment.clone());
            Json(payment)
        }
        async fn get(
            State(p): State<FakeProvider>,
            UrlPath(id): UrlPath<String>,
        ) -> Json<serde_json::Value> {
            Json(p.state.lock().unwrap().payments[&id].clone())
        }
        async fn refund(
            State(p): State<FakeProvider>,
            headers: HeaderMap,
        ) -> Json<serde_json::Value> {
            let key = headers["idempotency-key"].to_str().unwrap().to_string();
            *p.state.lock().unwrap().refunds.entry(key).or_default() += 1;
            Json(serde_json::json!({"status": "succeeded"}))
        }
        let app = axum::Router::new()
            .route("/v1/payments", axum::routing::post(create))
            .route("/v1/payments/{id}", axum::routing::get(get))
            .route("/v1/refunds", axum::routing::post(refund))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// The payment made for `order`, once it exists.
    async fn payment_of(&self, order: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = {
                let state = self.state.lock().unwrap();
                state.keys.get(order).map(|id| state.payments[id].clone())
            };
            if let Some(payment) = found {
                return payment;
            }
            assert!(Instant::now() < deadline, "no payment was made for {order}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn settle(&self, id: &str) -> serde_json::Value {
        let mut s = self.state.lock().unwrap();
        let payment = s.payments.get_mut(id).unwrap();
        payment["status"] = "succeeded".into();
        payment.clone()
    }
}

/// Posts `body` to the adapter's webhook endpoint with `signature` (if any); the status code.
async fn post_webhook(url: &str, body: &str, signature: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_verified_applied_once_and_a_lost_one_is_reconciled() {
    use adapters::payments::webhook::sign;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&dir.path().join("broker"));
    let server = boxoffice(dir.path(), &broker).await;
    let mut shop = Shop::open(server.grpc_addr).await;
    let provider = FakeProvider::default();
    let api = provider.serve().await;
    let extra: Vec<String> = [
        "--webhook-api",
        &api,
        "--webhook-api-key",
        "sk_test",
        "--webhook-secret",
        "whsec_old_0123456789",
        "--webhook-secret",
        "whsec_new_0123456789",
        "--webhook-listen",
        "127.0.0.1:0",
        "--reconcile-after-ms",
        "1500",
        "--reconcile-every-ms",
        "300",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let adapter = PaymentAdapter::start_with(&dir.path().join("payments"), &broker.addr, &extra);
    let url = adapter.webhooks.clone();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };

    let order = shop.order_for("wes", "webhook:card").await;
    let payment = provider.payment_of(&order.order_id).await;
    let id = payment["id"].as_str().unwrap().to_string();
    let settled = provider.settle(&id);
    let body = serde_json::json!({"type": "payment.updated", "data": settled}).to_string();
    // Each refused with 401, and the order stays pending.
    let tampered = body.replace("succeeded", "failed");
    for (name, body, signature) in [
        (
            "wrong secret",
            body.clone(),
            Some(sign("whsec_other", now(), body.as_bytes())),
        ),
        (
            "tampered body",
            tampered,
            Some(sign("whsec_new_0123456789", now(), body.as_bytes())),
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(sign("whsec_new_0123456789", now() - 3_600, body.as_bytes())),
        ),
        ("missing header", body.clone(), None),
    ] {
        assert_eq!(
            post_webhook(&url, &body, signature.as_deref()).await,
            401,
            "{name}"
        );
    }
    assert_eq!(
        shop.get(&order).await.status,
        v1::OrderStatus::PendingPayment as i32
    );
    // The valid webhook, five times (signed with the old secret, as during a rotation): paid once.
    for _ in 0..5 {
        let signature = sign("whsec_old_0123456789", now(), body.as_bytes());
        assert_eq!(post_webhook(&url, &body, Some(&signature)).await, 200);
    }
    let paid = shop
        .settled(std::slice::from_ref(&order), Duration::from_secs(30))
        .await;
    assert_eq!(paid[0].status, v1::OrderStatus::Paid as i32);
    let payment_seen = paid[0].payment.clone().unwrap();
    assert_eq!(
        (
            payment_seen.provider.as_str(),
            payment_seen.provider_reference.as_str()
        ),
        ("webhook", id.as_str())
    );
    let text = metrics_text(&adapter).await;
    for line in [
        "boxoffice_payments_webhooks_total{outcome=\"bad_signature\"} 4",
        "boxoffice_payments_webhooks_total{outcome=\"applied\"} 1",
        "boxoffice_payments_webhooks_total{outcome=\"repeat\"} 4",
    ] {
        assert!(text.contains(line), "no {line} in {text}");
    }

    // No webhook at all for the second: reconciliation looks it up once it is 1.5 s pending.
    let second = shop.order_for("vic", "webhook:card").await;
    let payment = provider.payment_of(&second.order_id).await;
    provider.settle(payment["id"].as_str().unwrap());
    let paid = shop
        .settled(std::slice::from_ref(&second), Duration::from_secs(30))
        .await;
    assert_eq!(paid[0].status, v1::OrderStatus::Paid as i32);

    // Each payment was created once at the provider; a refund goes to it once.
    shop.admin
        .refund_order(req(v1::RefundOrderRequest {
            event_id: order.event_id.clone(),
            order_id: order.order_id.clone(),
            reason: "changed plans".into(),
            idempotency_key: String::new(),
        }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while provider.state.lock().unwrap().refunds.len() != 1 {
        assert!(
            Instant::now() < deadline,
            "the refund never reached the provider"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A success that comes after the payment deadline cancelled the order: the order stays
    // cancelled and the money goes back, once.
    let mut late_shop = Shop::open_with_payment_ttl(server.grpc_addr, 2).await;
    let late = late_shop.order_for("lou", "webhook:card").await;
    let payment = provider.payment_of(&late.order_id).await;
    let late_id = payment["id"].as_str().unwrap().to_string();
    let cancelled = late_shop
        .settled(std::slice::from_ref(&late), Duration::from_secs(30))
        .await;
    assert_eq!(
        (cancelled[0].status, cancelled[0].cancel_cause),
        (
            v1::OrderStatus::Cancelled as i32,
            v1::CancelCause::PaymentTimeout as i32
        )
    );
    let body = serde_json::json!({"type": "payment.updated", "data": provider.settle(&late_id)})
        .to_string();
    let signature = sign("whsec_new_0123456789", now(), body.as_bytes());
    assert_eq!(post_webhook(&url, &body, Some(&signature)).await, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while provider.state.lock().unwrap().refunds.len() != 2 {
        assert!(
            Instant::now() < deadline,
            "the late payment was never refunded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        late_shop.get(&late).await.status,
        v1::OrderStatus::Cancelled as i32,
        "money never resurrects an order"
    );
    {
        let state = provider.state.lock().unwrap();
        for o in [&order, &second, &late] {
            assert_eq!(state.creations.get(&o.order_id), Some(&1));
        }
        assert!(state.refunds.values().all(|n| *n == 1));
    }
    drop(adapter);
    server.stop().await.unwrap();
}
