//! What the test suites of several crates share: a real tansu broker started by
//! `scripts/broker.sh` (SQLite storage, so a broker killed and restarted keeps what it
//! acknowledged), a real SMTP server started by `scripts/smtp.sh`, a real S3-compatible server
//! started by `scripts/s3.sh`, and waits for child processes
//! with a deadline (`wait_within`, `output_within`). Test code only; no crate depends on it
//! outside `[dev-dependencies]`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a script may take to start or stop its server (`scripts/broker.sh` waits about 30 s
/// for tansu; `smtp.sh` and `s3.sh` 30 s for theirs).
const SCRIPT_WITHIN: Duration = Duration::from_secs(90);

/// How long a SIGKILLed broker may keep its port.
const DEATH_WITHIN: Duration = Duration::from_secs(30);

/// Waits for `child` to exit, for at most `within`: its status, or `None` if it still runs.
pub fn wait_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` to its end, as `Command::output` does, for at most `within`; past that the
/// process is killed and this panics, naming `what`.
pub fn output_within(command: &mut Command, within: Duration, what: &str) -> Output {
    run_within(command, within, what).unwrap_or_else(|e| panic!("{e}"))
}

fn run_within(command: &mut Command, within: Duration, what: &str) -> Result<Output, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.stderr.take().expect("piped")));
    let Some(status) = wait_within(&mut child, within) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{what} did not finish within {within:?}; killed"));
    };
    Ok(Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    })
}

/// A tansu broker with its files in a directory; stopped when dropped.
pub struct Broker {
    dir: PathBuf,
    /// `host:port` it listens on (loopback).
    pub addr: String,
}

/// `scripts/<name>`.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// Runs `scripts/<name> start DIR ARGS...` (within `SCRIPT_WITHIN`); the value of the line
/// `<key>=VALUE` it prints once its server takes connections.
fn start_server(name: &str, dir: &Path, args: &[&str], key: &str) -> String {
    start_server_with(name, dir, args, &[], key)
        .remove(key)
        .expect("the key")
}

/// `start_server` with `envs` set for the script; every `name=value` line it printed.
fn start_server_with(
    name: &str,
    dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    key: &str,
) -> std::collections::BTreeMap<String, String> {
    let mut command = Command::new(script(name));
    command
        .arg("start")
        .arg(dir)
        .args(args)
        .envs(envs.iter().copied());
    let what = format!("scripts/{name} start");
    let out = output_within(&mut command, SCRIPT_WITHIN, &what);
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let fields: std::collections::BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(fields.contains_key(key), "no {key}= in {text:?}");
    fields
}

/// Runs `scripts/<name> stop DIR`, saying on stderr what went wrong: no panic, as it runs in
/// drops (a panic during one would abort the process and hide the first).
fn stop_server(name: &str, dir: &Path) {
    let mut command = Command::new(script(name));
    command.arg("stop").arg(dir);
    if let Err(e) = run_within(&mut command, SCRIPT_WITHIN, &format!("scripts/{name} stop")) {
        eprintln!("{e}");
    }
}

impl Broker {
    /// Starts a broker on a free port.
    pub fn start(dir: &Path) -> Broker {
        Broker::start_on(dir, None)
    }

    /// Starts a broker, on `port` if given.
    pub fn start_on(dir: &Path, port: Option<&str>) -> Broker {
        let addr = start_server("broker.sh", dir, port.as_slice(), "kafka");
        Broker {
            dir: dir.to_path_buf(),
            addr,
        }
    }

    fn pid(&self) -> i32 {
        std::fs::read_to_string(self.dir.join("broker.pid"))
            .expect("broker.pid")
            .trim()
            .parse()
            .expect("a pid")
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).expect("a positive pid");
        rustix::process::kill_process(pid, signal).expect("signal the broker");
    }

    /// SIGKILL, then a new broker on the same files and port.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.restart();
    }

    /// SIGKILL, and waits until its port refuses connections: a killed process keeps its
    /// listening socket until its last thread is gone (one in uninterruptible disk I/O, an
    /// fsync, goes last), and the kernel accepts connections for it until then. `restart` brings
    /// it back.
    pub fn kill(&self) {
        let pid = self.pid();
        self.signal(rustix::process::Signal::KILL);
        let addr: std::net::SocketAddr = self.addr.parse().expect("host:port");
        let deadline = Instant::now() + DEATH_WITHIN;
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "the broker (pid {pid}) still takes connections on {addr} {DEATH_WITHIN:?} after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A new broker on the same files and port, after `kill`.
    pub fn restart(&mut self) {
        let port = self.addr.rsplit(':').next().expect("host:port").to_string();
        // Not `*self = ...`: dropping the old value would stop the new broker.
        let restarted = Broker::start_on(&self.dir, Some(&port));
        assert_eq!(restarted.addr, self.addr);
        std::mem::forget(restarted);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        stop_server("broker.sh", &self.dir);
    }
}

/// An SMTP server (aiosmtpd, started by `scripts/smtp.sh`) that delivers every message it accepts
/// into a maildir; stopped when dropped.
pub struct Smtp {
    dir: PathBuf,
    /// `host:port` it listens on (loopback).
    pub addr: String,
    /// `starttls` or `smtps` (`scripts/smtp.sh`'s `SMTP_TLS`), if it speaks TLS.
    tls: Option<&'static str>,
    /// The PEM of the CA that issued its certificate, if it speaks TLS.
    pub ca: Option<PathBuf>,
}

impl Smtp {
    /// Starts a server on a free port.
    pub fn start(dir: &Path) -> Smtp {
        Smtp::start_on(dir, None)
    }

    /// Starts a server on a free port that speaks TLS: `starttls` (required before MAIL) or
    /// `smtps` (from the first byte), with a certificate for 127.0.0.1 from a CA of its own
    /// (`ca`).
    pub fn start_tls(dir: &Path, tls: &'static str) -> Smtp {
        Smtp::launch(dir, None, Some(tls))
    }

    /// Starts a server, on `port` if given; messages already in the maildir stay.
    pub fn start_on(dir: &Path, port: Option<&str>) -> Smtp {
        Smtp::launch(dir, port, None)
    }

    fn launch(dir: &Path, port: Option<&str>, tls: Option<&'static str>) -> Smtp {
        let envs: Vec<(&str, &str)> = tls.iter().map(|t| ("SMTP_TLS", *t)).collect();
        let mut fields = start_server_with("smtp.sh", dir, port.as_slice(), &envs, "smtp");
        Smtp {
            dir: dir.to_path_buf(),
            addr: fields.remove("smtp").expect("smtp="),
            tls,
            ca: fields.remove("ca").map(PathBuf::from),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("host:port")
    }

    /// Every message received so far, raw, in no particular order.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let new = self.dir.join("maildir/new");
        let mut all = Vec::new();
        for entry in std::fs::read_dir(&new).expect("the maildir") {
            all.push(std::fs::read(entry.expect("an entry").path()).expect("a message"));
        }
        all
    }

    /// Stops the server; `restart` brings it back on the same port and maildir.
    pub fn stop(&self) {
        stop_server("smtp.sh", &self.dir);
    }

    pub fn restart(&mut self) {
        let port = self.port().to_string();
        let restarted = Smtp::launch(&self.dir, Some(&port), self.tls);
        assert_eq!(restarted.addr, self.addr);
        std::mem::forget(restarted);
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An S3-compatible server (s3s-fs, started by `scripts/s3.sh`) on loopback that keeps each bucket
/// as a directory and checks every request's signature against `access_key` and `secret_key`;
/// stopped when dropped.
pub struct S3 {
    dir: PathBuf,
    /// `http://host:port` (loopback).
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3 {
    /// Starts a server on a free port, with fixed test keys.
    pub fn start(dir: &Path) -> S3 {
        let (access_key, secret_key) = ("boxoffice-test", "boxoffice-test-secret");
        let endpoint = start_server("s3.sh", dir, &[access_key, secret_key], "s3");
        S3 {
            dir: dir.to_path_buf(),
            endpoint,
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    /// Makes an empty bucket (a directory of the server's data).
    pub fn make_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.dir.join("data").join(name)).expect("make a bucket");
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        stop_server("s3.sh", &self.dir);
    }
}
