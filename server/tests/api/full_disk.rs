//! A full disk for real: the data directory on a small tmpfs, filled by a ballast file until the
//! engine's writes fail, then freed as an operator would, and the server restarted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::*;

/// A tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "boxoffice-test",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test fills a small tmpfs of its own, and mounting one needs root \
             (CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Writes `path` until the filesystem has no room left, then gives `leave` bytes back.
fn fill_leaving(path: &Path, leave: u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOSPC.raw_os_error()) => break,
            Err(e) => panic!("ballast: {e}"),
        }
    }
    file.set_len(written.saturating_sub(leave)).unwrap();
    file.sync_all().unwrap();
}

fn assert_storage(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(reason(status), "STORAGE", "{status:?}");
    assert!(
        status.message().contains("No space left on device"),
        "{status:?}"
    );
    assert!(!status.message().contains("sled:"), "{status:?}");
}

/// Reserves one ticket at a time from 16 callers until the engine refuses; the holds it
/// acknowledged.
async fn reserve_until_refused(server: &Server, event: &str) -> Vec<String> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut callers = tokio::task::JoinSet::new();
    for caller in 0..16 {
        let mut c = server.clients().await;
        let (event, acked) = (event.to_string(), acked.clone());
        callers.spawn(async move {
            for n in 0.. {
                match c
                    .reserve(ga(&event, &format!("c{caller}-{n}"), 1, ""))
                    .await
                {
                    Ok(hold) => acked.lock().unwrap().push(hold.hold_id),
                    Err(e) => return e,
                }
            }
            unreachable!()
        });
    }
    while let Some(refused) = callers.join_next().await {
        assert_storage(&refused.unwrap());
    }
    Arc::try_unwrap(acked).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_changes_with_storage_keeps_reads_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), 64);
    let data = disk.dir.join("data");
    let mut server = Server::start(&data, &[]);
    let mut c = server.clients().await;
    // A quiet event with a few holds, and a busy one that fills the disk.
    let quiet = c.create(event_request(1_000, 10)).await.event_id;
    let mut quiet_holds = Vec::new();
    for n in 0..10 {
        quiet_holds.push(
            c.reserve(ga(&quiet, &format!("q{n}"), 2, ""))
                .await
                .unwrap()
                .hold_id,
        );
    }
    let busy = c.create(event_request(5_000_000, 10)).await.event_id;
    assert_eq!(server.metric("boxoffice_storage_failed").await, 0.0);

    // Room for a few thousand holds, then none.
    let ballast = disk.dir.join("ballast");
    fill_leaving(&ballast, 1 << 20);
    let acked = reserve_until_refused(&server, &busy).await;
    assert!(
        acked.len() > 100,
        "only {} holds before the disk filled",
        acked.len()
    );

    // Every change is refused, on both events.
    assert_storage(&c.reserve(ga(&busy, "late", 1, "")).await.unwrap_err());
    assert_storage(&c.reserve(ga(&quiet, "late", 1, "")).await.unwrap_err());
    // Reads are answered: the quiet event as it was.
    let (_, held, _) = counts(&c.tiers(&quiet).await, "GA");
    assert_eq!(held, 20);
    for hold in &quiet_holds {
        c.get_hold(&quiet, hold).await.unwrap();
    }
    // The busy one answers reads too: every acknowledged hold is there; the holds of the failed
    // write, answered STORAGE, may show in its counts until the restart settles them.
    let (_, held, _) = counts(&c.tiers(&busy).await, "GA");
    assert!(
        held as usize >= acked.len(),
        "{held} held, {} acknowledged",
        acked.len()
    );
    for hold in acked.iter().step_by(acked.len() / 20) {
        c.get_hold(&busy, hold).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("boxoffice_storage_failed").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "boxoffice_storage_failed never said so"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.health_of("").await, ServingStatus::NotServing);
    assert_eq!(
        server.health_of("boxoffice.v1.Reservations").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        server.health_of("boxoffice.v1.Availability").await,
        ServingStatus::Serving
    );

    // Room again: changes wait for the restart the README tells operators to do.
    std::fs::remove_file(&ballast).unwrap();
    assert_storage(&c.reserve(ga(&busy, "still", 1, "")).await.unwrap_err());
    server.stop(Duration::from_secs(10)).await;
    server.restart();
    let mut c = server.clients().await;
    assert_eq!(server.health().await, ServingStatus::Serving);
    assert_eq!(server.metric("boxoffice_storage_failed").await, 0.0);
    // Every acknowledged hold is there. The failed write's holds were refused and may be there
    // too: the disk may have taken part of it.
    let (_, held, _) = counts(&c.tiers(&busy).await, "GA");
    assert!(
        held as usize >= acked.len(),
        "{held} held, {} acknowledged",
        acked.len()
    );
    for hold in &acked {
        c.get_hold(&busy, hold).await.unwrap();
    }
    for hold in &quiet_holds {
        c.get_hold(&quiet, hold).await.unwrap();
    }
    c.reserve(ga(&busy, "after", 1, "")).await.unwrap();
    c.reserve(ga(&quiet, "after", 1, "")).await.unwrap();
}
