//! `boxoffice-bench` as a load-testing team runs it: the real binary, against real targets (the
//! engine on real sled files, the server over loopback gRPC, the no-op server, PostgreSQL and
//! Redis started by `scripts/baselines.sh`), its JSON report read back, and its HTML report opened
//! in headless Chromium. Runs are short: these check that the harness measures and audits
//! correctly, not how fast anything is.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_boxoffice-bench"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// Runs the bench in `dir`; panics with its output unless it exits 0.
fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let output = bench()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("start boxoffice-bench");
    assert_exited_ok(&output, &format!("boxoffice-bench {args:?}"));
    output
}

/// Panics with the run's output unless it exited 0.
fn assert_exited_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `scenario` against `targets` in `dir` and reads back its JSON report.
fn run_report(dir: &Path, scenario: &str, targets: &[&str], extra: &[&str]) -> Value {
    let mut args = vec!["run", "--scenario", scenario];
    for target in targets {
        args.extend(["--target", target]);
    }
    args.extend(extra);
    args.extend(["--json", "report.json"]);
    run_ok(dir, &args);
    read_report(&dir.join("report.json"))
}

fn read_report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read report")).expect("json")
}

fn runs(report: &Value) -> &Vec<Value> {
    report["runs"].as_array().expect("runs")
}

fn count(run: &Value, op: &str, outcome: &str) -> u64 {
    run["ops"][op]["outcomes"][outcome].as_u64().unwrap_or(0)
}

/// Every stateful run's audit passed with its checks; returns the runs by target.
fn assert_audited(report: &Value) {
    for run in runs(report) {
        let audit = &run["audit"];
        if audit["applicable"] == Value::Bool(false) {
            assert!(run["target"].as_str().unwrap().starts_with("noop"), "{run}");
            continue;
        }
        assert_eq!(audit["passed"], Value::Bool(true), "audit failed: {audit}");
        let checks = audit["checks"].as_array().expect("checks");
        assert!(checks.len() >= 3, "{audit}");
        assert!(checks.iter().all(|c| c["passed"] == Value::Bool(true)));
    }
}

const SMALL_DROP: &str = r#"
name = "small-drop"
duration_seconds = 2
warmup_seconds = 0.5
load = { kind = "closed", concurrency = 100 }
[events]
hold_ttl_seconds = 1
[[events.tiers]]
code = "GA"
capacity = 3000
[shoppers]
quantity = [[1, 50], [2, 50]]
abandon_share = 0.3
think_time_ms = 10
"#;

#[test]
fn a_drop_is_measured_audited_and_reported_on_every_boxoffice_target() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(dir.path(), "drop", SMALL_DROP);
    let report = run_report(
        dir.path(),
        file.to_str().unwrap(),
        &["engine", "embedded", "embedded-stream", "noop"],
        &["--html", "report.html"],
    );
    assert_eq!(runs(&report).len(), 4);
    assert_audited(&report);
    for run in runs(&report) {
        let target = run["target"].as_str().unwrap();
        assert!(count(run, "reserve", "HELD") > 0, "{target} held nothing");
        assert!(run["ops"]["reserve"]["latency_us"]["p99"].as_u64().unwrap() > 0);
        assert!(!run["timeline"].as_array().unwrap().is_empty());
        if target.starts_with("noop") {
            continue;
        }
        // 3,000 tickets against 100 shoppers with 10 ms think times: the drop sells out, and
        // abandoned holds (1 s TTL) come back on sale during the run.
        assert!(
            count(run, "reserve", "SOLD_OUT") > 0,
            "{target} never sold out"
        );
        assert!(run["sold_out_after_seconds"].as_f64().is_some());
        assert!(count(run, "confirm", "CONFIRMED") > 0);
        assert!(
            run["audit"]["holds_recycled_by_expiry"].as_u64().unwrap() > 0,
            "{target}: {}",
            run["audit"]
        );
    }

    // The HTML report opens offline and draws its three charts, one line per run.
    let dom = headless_dom(&dir.path().join("report.html"), dir.path());
    assert!(
        dom.contains(r#"data-charts-drawn="3""#),
        "charts not drawn:\n{dom}"
    );
    assert_eq!(dom.matches(r#"data-series="4""#).count(), 3, "{dom}");
    for target in ["boxoffice engine", "boxoffice gRPC (stream)", "noop gRPC"] {
        assert!(dom.contains(target), "{target} missing from the page");
    }

    // `report` puts saved runs side by side.
    run_ok(
        dir.path(),
        &[
            "report",
            "report.json",
            "report.json",
            "--html",
            "both.html",
        ],
    );
    let dom = headless_dom(&dir.path().join("both.html"), dir.path());
    assert_eq!(dom.matches(r#"data-series="8""#).count(), 3, "{dom}");
}

/// The page after its scripts ran, as Chromium renders it headless.
fn headless_dom(page: &Path, dir: &Path) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("start chromium (scripts/setup.sh installs it)");
    assert!(
        output.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 page")
}

#[test]
fn named_seats_collide_and_no_seat_is_sold_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(
        dir.path(),
        "seats",
        r#"
name = "small-seat-map"
duration_seconds = 2
warmup_seconds = 0.2
load = { kind = "closed", concurrency = 64 }
[events]
hold_ttl_seconds = 1
[[events.tiers]]
code = "STALLS"
seat_map = { sections = 2, rows = 10, seats_per_row = 20 }
[shoppers]
quantity = [[1, 30], [2, 40], [4, 30]]
abandon_share = 0.3
named_seat_share = 0.5
hot_rows = 2
"#,
    );
    let report = run_report(
        dir.path(),
        file.to_str().unwrap(),
        &["embedded", "engine"],
        &[],
    );
    assert_audited(&report);
    for run in runs(&report) {
        let names: Vec<&str> = run["audit"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"no seat sold twice"), "{names:?}");
        assert!(names.contains(&"sold seats == seats confirmed to clients"));
        assert!(
            count(run, "reserve", "SEAT_TAKEN") > 0,
            "no contention: {run}"
        );
        assert!(count(run, "confirm", "CONFIRMED") > 0);
    }
}

#[test]
fn an_open_loop_sends_exactly_its_schedule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run_report(
        dir.path(),
        "throughput",
        &["engine"],
        &[
            "--rate",
            "2000",
            "--duration-seconds",
            "2",
            "--warmup-seconds",
            "0.5",
        ],
    );
    assert_audited(&report);
    let run = &runs(&report)[0];
    assert_eq!(run["scenario"]["load"]["kind"], "open");
    // Visits are scheduled every 0.5 ms from the start: 4,000 fall in the 2 s measured window,
    // however fast or slow the machine answers.
    let reserves = run["ops"]["reserve"]["count"].as_u64().unwrap();
    assert!(
        (3_999..=4_001).contains(&reserves),
        "{reserves} reservations"
    );
}

#[test]
fn readers_poll_and_watch_while_shoppers_buy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = scenario(
        dir.path(),
        "readers",
        r#"
name = "readers"
duration_seconds = 2
warmup_seconds = 0.2
load = { kind = "closed", concurrency = 8 }
[events]
count = 2
[[events.tiers]]
code = "GA"
capacity = 100000
[shoppers]
think_time_ms = 5
[pollers]
concurrency = 8
interval_ms = 5
watchers = 6
"#,
    );
    let report = run_report(dir.path(), file.to_str().unwrap(), &["embedded"], &[]);
    assert_audited(&report);
    let run = &runs(&report)[0];
    assert!(count(run, "availability", "OK") > 0, "{run}");
    assert!(
        run["watch_updates"].as_u64().unwrap() > 0,
        "no watch update"
    );
}

#[test]
fn the_baselines_reserve_the_old_way_and_pass_the_same_audit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let servers = dir.path().join("servers");
    let script = repo().join("scripts/baselines.sh");
    let started = Command::new(&script)
        .arg("start")
        .arg(&servers)
        .output()
        .expect("run scripts/baselines.sh");
    let stop = || {
        let _ = Command::new(&script).arg("stop").arg(&servers).output();
    };
    if !started.status.success() {
        stop();
        panic!(
            "baselines did not start: {}",
            String::from_utf8_lossy(&started.stderr)
        );
    }
    let urls = String::from_utf8(started.stdout).expect("utf-8");
    let targets: Vec<&str> = urls
        .lines()
        .filter(|l| l.starts_with("postgres=") || l.starts_with("redis="))
        .collect();
    assert_eq!(targets.len(), 2, "{urls}");
    let file = scenario(dir.path(), "drop", SMALL_DROP);
    let mut args = vec!["run", "--scenario", file.to_str().unwrap()];
    for target in &targets {
        args.extend(["--target", target]);
    }
    args.extend(["--json", "baselines.json"]);
    let output = bench().current_dir(dir.path()).args(&args).output();
    // Redis again with every shopper's script sharing its connections.
    let redis = *targets
        .iter()
        .find(|t| t.starts_with("redis="))
        .expect("a redis target");
    let pipelined = bench()
        .current_dir(dir.path())
        .args(["run", "--scenario", file.to_str().unwrap()])
        .args(["--target", redis, "--redis-pipelined"])
        .args(["--redis-connections", "2", "--json", "pipelined.json"])
        .output();

    // A seat map is refused up front: the baselines model general admission only.
    let seats = bench()
        .current_dir(dir.path())
        .args(["run", "--scenario", "seat-map", "--target", targets[0]])
        .output()
        .expect("start boxoffice-bench");
    stop();

    let output = output.expect("start boxoffice-bench");
    assert_exited_ok(&output, "baselines run");
    let report = read_report(&dir.path().join("baselines.json"));
    assert_audited(&report);
    let notes: Vec<String> = runs(&report)
        .iter()
        .flat_map(|r| r["notes"].as_array().unwrap().clone())
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    for setting in [
        "synchronous_commit = on",
        "fsync = on",
        "appendfsync = always",
    ] {
        assert!(
            notes.iter().any(|n| n == setting),
            "{setting} not in {notes:?}"
        );
    }
    assert!(
        notes
            .iter()
            .any(|n| n.contains("one script at a time on each")),
        "{notes:?}"
    );
    for run in runs(&report) {
        assert!(count(run, "reserve", "HELD") > 0);
        assert!(count(run, "confirm", "CONFIRMED") > 0);
    }

    let pipelined = pipelined.expect("start boxoffice-bench");
    assert_exited_ok(&pipelined, "pipelined Redis run");
    let report = read_report(&dir.path().join("pipelined.json"));
    assert_audited(&report);
    let run = &runs(&report)[0];
    assert!(count(run, "reserve", "HELD") > 0);
    let notes = run["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .contains("2 connections shared by every shopper")),
        "{notes:?}"
    );
    assert!(!seats.status.success());
    let stderr = String::from_utf8_lossy(&seats.stderr);
    assert!(stderr.contains("general admission only"), "{stderr}");
}

#[test]
fn bad_invocations_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let check = |args: &[&str], expected: &str| {
        let output = bench()
            .current_dir(dir.path())
            .args(args)
            .output()
            .expect("start boxoffice-bench");
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    check(&["run", "--target", "mysql"], "unknown target `mysql`");
    check(&["run", "--target", "postgres"], "needs an address");
    check(
        &["run", "--scenario", "black-friday"],
        "no built-in scenario",
    );
    let bad = scenario(
        dir.path(),
        "bad",
        "name = \"x\"\nload = { kind = \"closed\", concurrency = 5 }\nthreads = 4\n[events]\n[[events.tiers]]\ncode = \"GA\"\ncapacity = 10\n",
    );
    check(&["run", "--scenario", bad.to_str().unwrap()], "threads");
    check(
        &["run", "--scenario", "hot-drop", "--duration-seconds", "0"],
        "duration_seconds",
    );
    check(
        &["report", "--html", "x.html", "missing.json"],
        "missing.json",
    );
    check(
        &["run", "--target", "embedded+relay"],
        "give --kafka HOST:PORT",
    );
    check(
        &["relay", "--kafka", "127.0.0.1:9092", "--batch-entries", "0"],
        "kafka.batch_entries",
    );
    check(
        &["check-in", "--tickets", "6"],
        "--tickets must be a positive multiple of 4",
    );
    check(&["check-in", "--gates", "1001"], "--gates must be 1..=1000");
    check(
        &["render", "--threads", "0"],
        "--orders, --tickets-per-order and --threads must be at least 1",
    );
    check(
        &["render", "--paper", "a3"],
        "--paper `a3` is not a4 or letter",
    );
    check(
        &["payments", "--kafka", "127.0.0.1:9092", "--orders", "0"],
        "--orders, --concurrency and --connections must be at least 1",
    );
    check(
        &[
            "payments",
            "--kafka",
            "127.0.0.1:9092",
            "--adapter",
            "/nonexistent/boxoffice-payments",
        ],
        "no payment adapter at /nonexistent/boxoffice-payments",
    );
    check(
        &["email", "--kafka", "127.0.0.1:9092", "--concurrency", "0"],
        "--concurrency 1..=256",
    );
    check(
        &[
            "email",
            "--kafka",
            "127.0.0.1:9092",
            "--adapter",
            "/nonexistent/boxoffice-email",
        ],
        "no email adapter at /nonexistent/boxoffice-email",
    );
}

use testkit::Broker;

#[test]
fn with_the_relay_on_every_confirmed_order_reaches_the_consumer_and_is_timed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::start(&dir.path().join("broker"));
    let file = scenario(dir.path(), "drop", SMALL_DROP);
    let report = run_report(
        dir.path(),
        file.to_str().unwrap(),
        &["embedded", "embedded+relay"],
        &["--kafka", &broker.addr],
    );
    assert_audited(&report);
    let runs = runs(&report);
    assert_eq!(runs[1]["target"], "boxoffice gRPC (unary, relay on)");
    // Off: no order-event figures. On: one per confirm answered in the measured window, and the
    // audit's check that every confirmed order's event was read.
    assert!(
        runs[0]["ops"]["order_event"].is_null(),
        "{}",
        runs[0]["ops"]
    );
    let confirmed = count(&runs[1], "confirm", "CONFIRMED");
    assert!(confirmed > 0);
    assert_eq!(count(&runs[1], "order_event", "READ"), confirmed);
    assert!(
        runs[1]["ops"]["order_event"]["latency_us"]["p99"]
            .as_u64()
            .unwrap()
            > 0
    );
    let checks = runs[1]["audit"]["checks"].as_array().unwrap();
    let check = checks
        .iter()
        .find(|c| c["name"] == "every confirmed order's event reached the consumer")
        .unwrap_or_else(|| panic!("no order-event check in {checks:?}"));
    assert!(
        check["detail"].as_str().unwrap().contains(" 0 not read"),
        "{check}"
    );

    // The drain: every entry made with the relay off reaches the topic.
    let out = run_ok(
        dir.path(),
        &[
            "relay",
            "--kafka",
            &broker.addr,
            "--orders",
            "2000",
            "--events",
            "3",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("drained 2003 entries in"), "{stdout}");
    assert!(stdout.contains(": 2003 messages"), "{stdout}");

    // Confirm to paid through the real payment adapter (built beside the bench): every order
    // paid once and timed.
    let out = run_ok(
        dir.path(),
        &[
            "payments",
            "--kafka",
            &broker.addr,
            "--orders",
            "200",
            "--concurrency",
            "16",
            "--fetch-wait-ms",
            "20",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("paid 200 of 200 in"), "{stdout}");
    assert!(stdout.contains("confirm-to-paid latency: p50"), "{stdout}");
    assert!(
        stdout.contains("audit: every order paid once, none cancelled"),
        "{stdout}"
    );
}

/// A CA and a certificate for `localhost` signed by it, made with the openssl command.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl (scripts/setup.sh installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bench test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").expect("write");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_behind_tls_is_measured_when_its_ca_is_trusted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = certificates(dir.path());
    let mut config = config::Config::default();
    config.storage.data_dir = dir.path().join("data");
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics.enabled = false;
    config.api.tls_cert_path = Some(cert);
    config.api.tls_key_path = Some(key);
    let running = server::start(&config).await.expect("start a TLS server");
    let port = running.grpc_addr.port();

    let path = dir.path().to_path_buf();
    let ca_arg = ca.to_str().unwrap().to_string();
    let drop = scenario(dir.path(), "drop", SMALL_DROP);
    let attempts = tokio::task::spawn_blocking(move || {
        let tls = format!("grpc=https://127.0.0.1:{port}");
        let plain = format!("grpc=http://127.0.0.1:{port}");
        let common = [
            "run",
            "--scenario",
            drop.to_str().unwrap(),
            "--concurrency",
            "20",
            "--requests",
            "500",
            "--warmup-seconds",
            "0",
        ];
        let attempt = |extra: &[&str]| {
            bench()
                .current_dir(&path)
                .args(common)
                .args(extra)
                .output()
                .expect("start boxoffice-bench")
        };
        let trusted = attempt(&[
            "--target",
            &tls,
            "--tls-ca",
            &ca_arg,
            "--tls-domain",
            "localhost",
            "--json",
            "tls.json",
        ]);
        let untrusted = attempt(&["--target", &tls, "--tls-domain", "localhost"]);
        let plaintext = attempt(&["--target", &plain]);
        (trusted, untrusted, plaintext)
    })
    .await
    .expect("bench runs");
    running.stop().await.expect("stop");

    let (trusted, untrusted, plaintext) = attempts;
    assert_exited_ok(&trusted, "run trusting the CA");
    let report = read_report(&dir.path().join("tls.json"));
    assert_audited(&report);
    assert!(count(&runs(&report)[0], "reserve", "HELD") >= 500);
    // The certificate is checked: without the CA, and in plaintext, nothing is measured.
    for (name, output) in [("untrusted", &untrusted), ("plaintext", &plaintext)] {
        assert!(!output.status.success(), "{name} run succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("boxoffice gRPC at"), "{name}: {stderr}");
    }
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
}

#[test]
fn the_check_in_bench_lets_every_ticket_in_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_ok(
        dir.path(),
        &[
            "check-in",
            "--tickets",
            "400",
            "--concurrency",
            "32",
            "--gates",
            "3",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("issued 400 tickets in"), "{stdout}");
    assert!(stdout.contains("scanned 400 tickets in"), "{stdout}");
    assert!(
        stdout.contains("audit: every ticket let in once; 400 admitted over 3 gates"),
        "{stdout}"
    );
}

#[test]
fn the_noop_server_runs_alone_answers_a_reserve_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = bench()
        .args(["noop-server", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start boxoffice-bench noop-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its first line");
    let addr = line
        .strip_prefix("noop server listening on ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hold = runtime.block_on(async {
        let mut client =
            proto::v1::reservations_client::ReservationsClient::connect(format!("http://{addr}"))
                .await
                .expect("connect");
        client
            .reserve(proto::v1::ReserveRequest {
                event_id: uuid::Uuid::new_v4().to_string(),
                customer_id: "c".into(),
                items: vec![],
                hold_ttl_seconds: None,
                idempotency_key: String::new(),
            })
            .await
            .expect("the no-op server answers")
            .into_inner()
            .hold
    });
    assert!(hold.is_some());
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    assert!(child.wait().expect("exit").success());
}

#[test]
fn the_render_bench_renders_every_order_once_with_a_page_per_ticket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = run_ok(
        dir.path(),
        &[
            "render",
            "--orders",
            "12",
            "--tickets-per-order",
            "3",
            "--threads",
            "2",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rendered 12 orders x 3 tickets on 2 threads"),
        "{stdout}"
    );
}

#[test]
fn the_email_bench_sends_one_email_per_order_with_its_pdf() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = Broker::start(&dir.path().join("broker"));
    let out = run_ok(
        dir.path(),
        &["email", "--kafka", &broker.addr, "--emails", "50"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "adapter: 50 emails in",
        "adapter's own figures: 51 sent, none retried or parked",
        "audit: 51 emails (50 and the warm-up), one per order, each with its PDF attached byte for byte",
        "SMTP ceiling, lettre straight to the same server, 4 at once:",
        "the server's ceiling with Nagle off",
        "ledger flush (sled, write and fsync) alone: mean",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in\n{stdout}");
    }
}
