//! A real `boxoffice serve` process on loopback, real clients, and the helpers every test shares.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::v1;
use proto::v1::availability_client::AvailabilityClient;
use proto::v1::event_admin_client::EventAdminClient;
use proto::v1::reservations_client::ReservationsClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

pub const DEV_KEY: &str = "boxoffice-dev-key";

/// One server process. Dropping it kills the process.
pub struct Server {
    child: Option<Child>,
    /// Its stdout, past the lines read so far.
    stdout: Option<BufReader<std::process::ChildStdout>>,
    pub grpc: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts a server on `data_dir` with any free ports and the given config overrides, and
    /// waits until it takes calls.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut server = Server::listening(data_dir, env);
        server.wait_serving();
        server
    }

    /// Starts a server and returns once its ports are bound, before it has recovered its
    /// events: health answers, calls get RECOVERING.
    pub fn listening(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server::start_with(data_dir.to_path_buf(), env)
    }

    /// Reads the server's stdout until it says it takes calls.
    pub fn wait_serving(&mut self) {
        let stdout = self.stdout.as_mut().expect("stdout");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read the serving line");
        assert!(
            line.starts_with("boxoffice serving "),
            "the server did not become ready; it printed {line:?}"
        );
    }

    fn start_with(data_dir: PathBuf, env: Vec<(String, String)>) -> Server {
        let empty_config = data_dir.with_extension("toml");
        std::fs::write(&empty_config, "").expect("write the config file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
            .arg("serve")
            .env("BOXOFFICE_CONFIG", &empty_config)
            .env("BOXOFFICE_STORAGE__DATA_DIR", &data_dir)
            .env("BOXOFFICE_API__LISTEN", "127.0.0.1:0")
            .env("BOXOFFICE_METRICS__LISTEN", "127.0.0.1:0")
            .env("BOXOFFICE_METRICS__REFRESH_INTERVAL_MS", "50")
            .env("BOXOFFICE_LOG__FILTER", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn boxoffice");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        assert!(
            line.starts_with("boxoffice listening "),
            "the server did not start; it printed {line:?}"
        );
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(str::to_string)
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        };
        let grpc = field("grpc").parse().expect("grpc address");
        let metrics = field("metrics")
            .strip_prefix("http://")
            .and_then(|m| m.strip_suffix("/metrics"))
            .map(|m| m.parse().expect("metrics address"));
        Server {
            child: Some(child),
            stdout: Some(stdout),
            grpc,
            metrics,
            data_dir,
            env,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the server")
    }

    pub async fn clients(&self) -> Clients {
        Clients::new(self.channel().await, DEV_KEY)
    }

    /// SIGTERM; the process must exit 0 within `within`. Async, so that this test's client
    /// connections keep answering the server's GOAWAY while it drains.
    pub async fn stop(&mut self, within: Duration) {
        let mut child = self.child.take().expect("running");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "graceful shutdown exited with {status}");
                return;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("the server did not stop within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// A new process on the same data directory and config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the server first");
        *self = Server::start_with(self.data_dir.clone(), std::mem::take(&mut self.env));
        self.wait_serving();
    }

    /// The process's resident memory now, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse().expect("VmRSS"))
            .expect("VmRSS in /proc status");
        kib << 10
    }

    /// The health service's answer for the whole server.
    pub async fn health(&self) -> tonic_health::pb::health_check_response::ServingStatus {
        self.health_of("").await
    }

    /// The health service's answer for `service` ("" for the whole server).
    pub async fn health_of(
        &self,
        service: &str,
    ) -> tonic_health::pb::health_check_response::ServingStatus {
        use tonic_health::pb::health_check_response::ServingStatus;
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health answers")
            .into_inner();
        ServingStatus::try_from(answer.status).expect("a known serving status")
    }

    /// One sample of a gauge or counter without labels from `GET /metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
            .trim()
            .parse()
            .expect("a number")
    }

    /// `GET /metrics`, as text.
    pub async fn metrics_text(&self) -> String {
        metrics_text_at(self.metrics.expect("metrics enabled")).await
    }
}

/// `GET /metrics` of the metrics endpoint at `addr`, as text.
pub async fn metrics_text_at(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: boxoffice\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The three API clients over one connection, sending one API key.
#[derive(Clone)]
pub struct Clients {
    pub admin: EventAdminClient<Channel>,
    pub reservations: ReservationsClient<Channel>,
    pub availability: AvailabilityClient<Channel>,
    key: Option<String>,
}

impl Clients {
    pub fn new(channel: Channel, key: &str) -> Clients {
        Clients {
            admin: EventAdminClient::new(channel.clone()),
            reservations: ReservationsClient::new(channel.clone()),
            availability: AvailabilityClient::new(channel),
            key: Some(key.to_string()),
        }
    }

    pub fn without_key(mut self) -> Clients {
        self.key = None;
        self
    }

    /// `message` with this client's `authorization` metadata.
    pub fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(key) = &self.key {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {key}").parse().expect("ascii key"),
            );
        }
        request
    }

    pub async fn create(&mut self, request: v1::CreateEventRequest) -> v1::Event {
        let req = self.req(request);
        self.admin
            .create_event(req)
            .await
            .expect("create event")
            .into_inner()
            .event
            .expect("event")
    }

    /// Confirms `hold_id` of `event` with the payment reference `reference`; the order.
    pub async fn confirm(
        &mut self,
        event: &str,
        hold_id: String,
        reference: String,
    ) -> Result<v1::Order, tonic::Status> {
        let req = self.req(v1::ConfirmRequest {
            event_id: event.to_string(),
            hold_id,
            payment: Some(v1::Payment { reference }),
            idempotency_key: String::new(),
            contact: None,
        });
        let order = self.reservations.confirm(req).await?.into_inner();
        Ok(order.order.expect("an order"))
    }

    pub async fn tiers(&mut self, event_id: &str) -> Vec<v1::TierAvailability> {
        let req = self.req(v1::GetAvailabilityRequest {
            event_id: event_id.to_string(),
            ..Default::default()
        });
        self.availability
            .get_availability(req)
            .await
            .expect("availability")
            .into_inner()
            .tiers
    }

    pub async fn get_hold(&mut self, event: &str, hold_id: &str) -> Result<v1::Hold, Status> {
        let req = self.req(v1::GetHoldRequest {
            event_id: event.into(),
            hold_id: hold_id.into(),
        });
        Ok(self
            .reservations
            .get_hold(req)
            .await?
            .into_inner()
            .hold
            .expect("hold"))
    }

    pub async fn reserve(&mut self, request: v1::ReserveRequest) -> Result<v1::Hold, Status> {
        let req = self.req(request);
        Ok(self
            .reservations
            .reserve(req)
            .await?
            .into_inner()
            .hold
            .expect("hold"))
    }
}

/// The `ErrorInfo` reason of a status; every refusal must carry one.
pub fn reason(status: &Status) -> String {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "boxoffice");
    info.reason.clone()
}

/// The `ErrorInfo` metadata value `key` of a status.
pub fn info(status: &Status, key: &str) -> String {
    let details = status.get_error_details();
    let info = details
        .error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    info.metadata
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {info:?}"))
        .clone()
}

/// A row of a table-driven test: `name`'s request was refused with `code` and reason `why`.
#[track_caller]
pub fn assert_case(
    name: &str,
    result: Result<impl std::fmt::Debug, Status>,
    code: Code,
    why: &str,
) {
    let status = result.expect_err(name);
    assert_eq!(status.code(), code, "{name}: {status:?}");
    assert_eq!(reason(&status), why, "{name}: {status:?}");
}

#[track_caller]
pub fn assert_refused(result: Result<impl std::fmt::Debug, Status>, code: Code, why: &str) {
    let status = result.expect_err("the request should have been refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason(&status), why, "{status:?}");
    assert!(!status.message().is_empty());
}

pub fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// An on-sale event: tier "GA" with `ga` tickets (max 10 per order) and tier "SEAT" with a seat
/// map of rows A and B, `seats_per_row` seats each.
pub fn event_request(ga: u32, seats_per_row: u32) -> v1::CreateEventRequest {
    let row = |name: &str| v1::Row {
        name: name.to_string(),
        seats: (1..=seats_per_row).map(|n| n.to_string()).collect(),
    };
    v1::CreateEventRequest {
        event_id: uuid::Uuid::now_v7().to_string(),
        name: "Night Concert".into(),
        venue: "Arena".into(),
        starts_at: ts(4_000_000_000),
        status: v1::EventStatus::OnSale as i32,
        currency: "EUR".into(),
        customer_limit: None,
        default_hold_ttl_seconds: 600,
        payment_ttl_seconds: 0,
        time_zone: "Europe/Lisbon".into(),
        allow_reentry: false,
        tiers: vec![
            v1::Tier {
                code: "GA".into(),
                name: "General admission".into(),
                price_minor: 5_000,
                fee_minor: 250,
                max_per_order: 10,
                sale_windows: vec![],
                stock: Some(v1::tier::Stock::GeneralAdmission(v1::GeneralAdmission {
                    capacity: ga,
                })),
            },
            v1::Tier {
                code: "SEAT".into(),
                name: "Seated".into(),
                price_minor: 9_000,
                fee_minor: 400,
                max_per_order: 6,
                sale_windows: vec![],
                stock: Some(v1::tier::Stock::SeatMap(v1::SeatMap {
                    sections: vec![v1::Section {
                        name: "Stalls".into(),
                        rows: vec![row("A"), row("B")],
                    }],
                })),
            },
        ],
    }
}

pub fn ga(event_id: &str, customer: &str, quantity: u32, key: &str) -> v1::ReserveRequest {
    v1::ReserveRequest {
        event_id: event_id.to_string(),
        customer_id: customer.to_string(),
        items: vec![v1::ReserveItem {
            tier_code: "GA".into(),
            selection: Some(v1::reserve_item::Selection::Quantity(quantity)),
        }],
        hold_ttl_seconds: None,
        idempotency_key: key.to_string(),
    }
}

pub fn seat(row: &str, number: &str) -> v1::Seat {
    v1::Seat {
        section: "Stalls".into(),
        row: row.into(),
        number: number.into(),
    }
}

/// Counts of one tier as (available, held, sold).
pub fn counts(tiers: &[v1::TierAvailability], code: &str) -> (u32, u32, u32) {
    let t = tiers
        .iter()
        .find(|t| t.tier_code == code)
        .unwrap_or_else(|| panic!("no tier {code}"));
    assert_eq!(t.available + t.held + t.sold, t.capacity, "{t:?}");
    (t.available, t.held, t.sold)
}
