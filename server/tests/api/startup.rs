//! Starting up: the ports are bound and health answers before the events are recovered, calls
//! get RECOVERING until then, and a start that cannot work says why in words an operator can act
//! on, at once. Logs to a pipe carry no colour codes.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use proto::v1;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

/// `boxoffice serve` with `env`, expected to exit; its output.
fn failed_start(dir: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let config = dir.join("empty.toml");
    std::fs::write(&config, "").unwrap();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .arg("serve")
        .env("BOXOFFICE_CONFIG", &config)
        .env("BOXOFFICE_API__LISTEN", "127.0.0.1:0")
        .env("BOXOFFICE_METRICS__LISTEN", "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run boxoffice");
    assert!(!output.status.success(), "it started: {output:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "it took {:?} to fail",
        started.elapsed()
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn health_answers_not_serving_while_events_recover_then_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &[]);
    // 2,000 events: recovered one at a time below, that takes seconds.
    let c = server.clients().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..125 {
                c.create(event_request(10, 1)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.kill();

    let listening = Instant::now();
    let mut server = Server::listening(
        &dir.path().join("data"),
        &[("BOXOFFICE_ENGINE__RECOVERY_PARALLELISM", "1")],
    );
    assert_eq!(server.health().await, ServingStatus::NotServing);
    let mut c = server.clients().await;
    let req = c.req(v1::ListEventsRequest::default());
    let status = c
        .admin
        .list_events(req)
        .await
        .expect_err("a call while recovering");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "RECOVERING", "{status:?}");
    assert!(info(&status, "retry_after_ms").parse::<u64>().unwrap() > 0);

    server.wait_serving();
    println!("recovered 2,000 events in {:?}", listening.elapsed());
    assert_eq!(server.health().await, ServingStatus::Serving);
    let mut listed = 0;
    let mut page_token = String::new();
    loop {
        let req = c.req(v1::ListEventsRequest {
            page_size: 500,
            page_token: page_token.clone(),
        });
        let page = c.admin.list_events(req).await.unwrap().into_inner();
        listed += page.events.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(listed, 2_000);
}

#[tokio::test]
async fn a_start_that_cannot_work_says_why_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);

    // A second instance on the same data directory.
    let output = failed_start(
        dir.path(),
        &[("BOXOFFICE_STORAGE__DATA_DIR", data.to_str().unwrap())],
    );
    let text = stderr(&output);
    assert!(
        text.contains("in use by another process") && text.contains(data.to_str().unwrap()),
        "{text}"
    );

    // A port in use, reported before anything is recovered.
    let other = dir.path().join("other");
    let grpc = server.grpc.to_string();
    let output = failed_start(
        dir.path(),
        &[
            ("BOXOFFICE_STORAGE__DATA_DIR", other.to_str().unwrap()),
            ("BOXOFFICE_API__LISTEN", &grpc),
        ],
    );
    let text = stderr(&output);
    assert!(
        text.contains(&format!("cannot listen on api.listen = {grpc}")),
        "{text}"
    );

    // A data directory that cannot be made names its path.
    let output = failed_start(
        dir.path(),
        &[("BOXOFFICE_STORAGE__DATA_DIR", "/proc/boxoffice-data")],
    );
    let text = stderr(&output);
    assert!(text.contains("/proc/boxoffice-data"), "{text}");

    // None of it, nor the logs of a running server, carries colour codes into a pipe.
    assert!(!text.contains('\u{1b}'), "{text:?}");
    let config = dir.path().join("logs.toml");
    std::fs::write(&config, "").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_boxoffice"))
        .arg("serve")
        .env("BOXOFFICE_CONFIG", &config)
        .env("BOXOFFICE_STORAGE__DATA_DIR", dir.path().join("logs"))
        .env("BOXOFFICE_API__LISTEN", "127.0.0.1:0")
        .env("BOXOFFICE_METRICS__LISTEN", "127.0.0.1:0")
        .env("BOXOFFICE_LOG__FILTER", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn boxoffice");
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    for _ in 0..2 {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert!(line.starts_with("boxoffice "), "{line:?}");
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = stderr(&output);
    assert!(text.contains("INFO"), "no log lines: {text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");
    drop(server);
}
